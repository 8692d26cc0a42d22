"""Stream sources and sinks for cocotb testbenches: Amaranth ``valid``/``ready``/``payload`` streams and AXI4-Stream
(``tvalid``/``tready``/``tdata``/``tkeep``/``tlast``/``tuser``), with seeded pause generators and a cycle stamp on
every beat.

test ─▶ :class:`StreamSource` ─▶ DUT ``i_*`` / ``s_axis`` ... DUT ``o_*`` / ``m_axis`` ─▶ :class:`StreamSink` ─▶ test

Sources and sinks do not run coroutines of their own: the :class:`~support.testbench.TB` they belong to calls
``_drive`` just after each rising edge and ``_sample`` at each falling edge (after the combinational logic settled),
for every endpoint in one loop. Pins change only in ``_drive``: a change at the falling edge would reach the DUT
before the rising edge that completes the handshake. Handshakes are therefore judged exactly as the DUT sees them,
every endpoint of a cycle carries the same ``cycle`` number, and a test costs two triggers per cycle however many
streams it has.

Payloads go through :class:`~support.layouts.LayoutCodec`: a source takes mappings, ``LayoutRecord`` objects or
ints; a sink hands back ``LayoutRecord`` objects or :class:`~support.layouts.Fields`. Packet helpers
(:meth:`StreamSource.send_packet`, :meth:`StreamSink.recv_packet`) know the :func:`~wirespeed.hdl.bus.packet.ByteBeat`
convention (``data``/``n_valid``/``last``, found in the payload or one struct field down) and AXI4-Stream's
``tkeep``/``tlast``.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator, NamedTuple

from amaranth.lib import data

from .layouts import LayoutCodec, as_layout

__all__ = ["AxisBeat", "Beat", "Packet", "StreamSource", "StreamSink", "random_pauses", "phased_pauses"]


# -- pause generators -------------------------------------------------------------------------------------------------

def random_pauses(rng, p: float) -> Iterator[bool]:
    """Pause each cycle with probability ``p`` (``rng``: a seeded ``random.Random``). ``p = 1 − valid_p`` idles a
    source that offers with probability ``valid_p``; ``p = 1 − ready_p`` backpressures a sink."""
    if p <= 0:
        while True:
            yield False
    random = rng.random
    while True:
        yield random() < p


def phased_pauses(rng) -> Iterator[bool]:
    """Phases of free flow, light (25 %) or heavy (75 %) random pauses, and long solid stalls (5–25 cycles)."""
    while True:
        mode = rng.choice(["free", "light", "heavy", "stall"])
        if mode == "stall":
            yield from [True] * rng.randint(5, 25)
            continue
        p = {"free": 0.0, "light": 0.25, "heavy": 0.75}[mode]
        for _ in range(rng.randint(10, 80)):
            yield rng.random() < p


# -- beats ------------------------------------------------------------------------------------------------------------

class AxisBeat(NamedTuple):
    """One AXI4-Stream transfer. ``tkeep`` ``None``: every byte (or the port has no ``tkeep``)."""
    tdata: int
    tkeep: int | None = None
    tlast: bool = False
    tuser: int = 0


class Beat:
    """One handshake, as a source or sink saw it.

    Attributes
    ----------
    bits : int
        The payload bits (AXI4-Stream: ``tdata``).
    value :
        Source: the item as sent. Sink: the payload decoded through the layout (a ``LayoutRecord`` or
        :class:`~support.layouts.Fields`; decoded on first access), or an :class:`AxisBeat`.
    cycle : int
        The cycle of the handshake (``TB.cycle``; 0 is the first cycle after reset).
    offered : int
        The first cycle ``valid`` was high for this beat; ``cycle − offered`` is how long it waited. A sink counts
        from the start of the unbroken ``valid`` run that ended in the handshake.
    """

    __slots__ = ("bits", "cycle", "offered", "_value", "_decode")

    def __init__(self, bits, cycle, offered, value=None, decode=None):
        self.bits, self.cycle, self.offered, self._value, self._decode = bits, cycle, offered, value, decode

    @property
    def value(self):
        if self._decode is not None:
            self._value, self._decode = self._decode(self.bits), None
        return self._value

    def __repr__(self):
        return f"Beat(cycle={self.cycle}, offered={self.offered}, bits={self.bits:#x})"


class Packet(NamedTuple):
    """The beats of one packet and the bytes they carried."""
    data: bytes
    beats: list

    @property
    def first_cycle(self) -> int:
        return self.beats[0].cycle

    @property
    def last_cycle(self) -> int:
        return self.beats[-1].cycle


# -- endpoints --------------------------------------------------------------------------------------------------------

def _signal(dut, name):
    try:
        return getattr(dut, name)
    except AttributeError:
        return None


class _Endpoint:
    def __init__(self, tb, name: str, layout=None, *, record=None, axis: bool = False):
        dut = tb.dut
        self.tb, self.name, self.axis = tb, name, axis
        self.pause: Iterator[bool] | None = None
        self.handshake: Beat | None = None      # this cycle's beat, until the next falling edge
        self.count = 0                          # handshakes so far
        self.packets = 0                        # of them, last beats (packet streams)
        if axis:
            self._valid, self._ready = getattr(dut, f"{name}__tvalid"), getattr(dut, f"{name}__tready")
            self._data, self._last = getattr(dut, f"{name}__tdata"), _signal(dut, f"{name}__tlast")
            self._keep, self._user = _signal(dut, f"{name}__tkeep"), _signal(dut, f"{name}__tuser")
            self.width = len(self._data) // 8
            self.codec = None
        else:
            self._valid, self._ready = getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready")
            self._data = getattr(dut, f"{name}__payload")
            self.codec = LayoutCodec(layout, record)
            self._beat_path, self.width = self._find_byte_beat()
        tb._attach(self)

    def _find_byte_beat(self):
        """Where the ByteBeat (``data``/``n_valid``/``last``) sits: the payload itself, or one field down."""
        layout = self.codec.layout
        candidates = [("", layout)]
        if isinstance(layout, data.StructLayout):
            candidates += [(name, as_layout(f.shape)) for name, f in layout]
        for path, shape in candidates:
            if isinstance(shape, data.StructLayout) and {"data", "n_valid", "last"} <= {n for n, _ in shape}:
                prefix = f"{path}." if path else ""
                self._data_at = self.codec.offset(prefix + "data")
                self._n_valid_at = self.codec.offset(prefix + "n_valid")
                self._last_at = self.codec.offset(prefix + "last")[0]
                return path, as_layout(shape["data"].shape).length
        return None, None

    def set_pause_generator(self, generator: Iterable[bool] | None) -> None:
        """Pause in each cycle the generator yields true (one value per cycle); ``None``: never pause."""
        self.pause = None if generator is None else iter(generator)

    def status(self) -> str:
        """One line for an error message: handshakes so far, what waits, the pins now."""
        waiting = f"{self.pending} to send" if isinstance(self, StreamSource) else f"{len(self)} unread"
        return (f"{self.name}: {self.count} beats, {waiting}, valid={self._valid.value} "
                f"ready={self._ready.value}")

    def _is_last(self, bits: int, value) -> bool:
        if self.axis:
            return bool(value.tlast)
        return self._beat_path is not None and bool(bits >> self._last_at & 1)


class StreamSource(_Endpoint):
    """Drives a stream port of the DUT (an ``In`` stream): ``valid`` and the payload, reading ``ready``.

    Parameters
    ----------
    tb : support.testbench.TB
    name : str
        The port's prefix: ``"i_stream"`` (pins ``i_stream__valid`` …) or ``"s_axis"`` with ``axis=True``.
    layout, record :
        The payload's layout, for :class:`~support.layouts.LayoutCodec` (Amaranth streams only).
    hold_valid : bool
        Whether a beat once offered stays offered until taken (the AXI4-Stream rule; default for ``axis``). If
        false, a pause may also withdraw a beat already offered (valid low for a cycle), as the Amaranth-stream
        tests have always done to prove the DUTs do not depend on it.
    log : bool
        Keep every accepted :class:`Beat` in :attr:`accepted` (clear it between batches of a long run).

    Attributes
    ----------
    accepted : list[Beat]
        The beats the DUT took, in order, ``value`` being the item as sent.
    handshake : Beat or None
        The beat taken in the current cycle (set at the falling edge), for per-cycle monitors.
    """

    def __init__(self, tb, name, layout=None, *, record=None, axis=False, hold_valid=None, log=True):
        super().__init__(tb, name, layout, record=record, axis=axis)
        self.hold_valid = axis if hold_valid is None else hold_valid
        self.log = log
        self.accepted: list[Beat] = []
        self._queue: deque = deque()
        self._current = None                   # (item, bits) being offered or due next
        self._offered = None                   # the cycle the current item was first offered
        self._valid_now = 0
        self._payload_now = None
        self._valid.value = 0

    # -- the test's side ----------------------------------------------------------------------------------------------

    def send(self, item) -> None:
        """Queue one beat: for an Amaranth stream anything the codec packs; for AXI4-Stream an :class:`AxisBeat`."""
        if self.axis:
            if not isinstance(item, AxisBeat):
                raise TypeError(f"{self.name}: AXI4-Stream beats are AxisBeat, not {type(item).__name__}")
            self._queue.append((item, item.tdata))
        else:
            self._queue.append((item, self.codec.pack(item)))

    def send_many(self, items) -> None:
        for item in items:
            self.send(item)

    def packet_beats(self, packet: bytes, *, tuser: int = 0, **fields) -> list:
        """``packet`` as beats of this port: ByteBeat payloads (``fields`` fill the rest of the payload, e.g.
        ``inline``; an empty packet is one beat with ``n_valid`` 0) or :class:`AxisBeat` (``tuser`` on each)."""
        w = self.width
        if w is None:
            raise TypeError(f"{self.name}: the payload has no ByteBeat (data/n_valid/last)")
        chunks = [packet[i:i + w] for i in range(0, len(packet), w)]
        if self.axis:
            if not chunks:
                raise ValueError(f"{self.name}: an AXI4-Stream packet carries at least one byte")
            return [AxisBeat(int.from_bytes(c, "little"), (1 << len(c)) - 1, i == len(chunks) - 1, tuser)
                    for i, c in enumerate(chunks)]
        chunks = chunks or [b""]
        beats = [{"data": c, "n_valid": len(c), "last": i == len(chunks) - 1} for i, c in enumerate(chunks)]
        if self._beat_path:
            return [{self._beat_path: b, **fields} for b in beats]
        if fields:
            raise KeyError(f"{self.name}: the payload is only a ByteBeat, no field {sorted(fields)}")
        return beats

    def send_packet(self, packet: bytes, **fields) -> int:
        """Queue ``packet`` (see :meth:`packet_beats`); returns its number of beats."""
        beats = self.packet_beats(packet, **fields)
        self.send_many(beats)
        return len(beats)

    @property
    def pending(self) -> int:
        """Beats queued or being offered, not yet taken."""
        return len(self._queue) + (self._current is not None)

    @property
    def idle(self) -> bool:
        return not self._queue and self._current is None

    async def wait(self, **limits) -> None:
        """Until every queued beat was taken (``limits``: as :meth:`TB.wait_until`)."""
        await self.tb.wait_until(lambda: self.idle, what=f"{self.name} drained", **limits)

    def clear(self) -> None:
        """Drop every beat not yet taken and drive ``valid`` low now (a reset does this)."""
        self._queue.clear()
        self._current = self._offered = None
        self._valid_now = 0
        self._valid.value = 0

    # -- the TB's cycle loop ------------------------------------------------------------------------------------------

    def _drive(self):
        paused = self.pause is not None and next(self.pause)
        if self._current is None:
            if not self._queue or (paused and self.hold_valid):
                self._set_valid(0)
                return
            self._current = self._queue.popleft()
        elif self.hold_valid and self._valid_now:
            return                                  # offered, not taken yet: hold it
        if paused:
            self._set_valid(0)
            return
        item, bits = self._current
        if self._payload_now is not self._current:
            if self.axis:
                self._data.value = bits
                if self._keep is not None:
                    self._keep.value = (1 << self.width) - 1 if item.tkeep is None else item.tkeep
                if self._last is not None:
                    self._last.value = int(item.tlast)
                if self._user is not None:
                    self._user.value = item.tuser
            else:
                self._data.value = bits
            self._payload_now = self._current
        self._set_valid(1)

    def _set_valid(self, v):
        if v != self._valid_now:
            self._valid.value = v
            self._valid_now = v

    def _sample(self, cycle, in_reset):
        self.handshake = None
        if not self._valid_now:
            return False
        if self._offered is None:
            self._offered = cycle
        if in_reset or not self._ready.value:
            return False
        item, bits = self._current
        beat = Beat(bits, cycle, self._offered, item)
        self.handshake = beat
        if self.log:
            self.accepted.append(beat)
        self.count += 1
        self.packets += self._is_last(bits, item)
        self._current = self._offered = None      # valid drops at the next _drive if nothing follows
        return True

    def _on_reset(self):
        self.clear()


class StreamSink(_Endpoint):
    """Takes a stream port of the DUT (an ``Out`` stream): drives ``ready``, records every handshake.

    Parameters
    ----------
    tb, name, layout, record, axis :
        As :class:`StreamSource`; ``record`` decodes (a ``LayoutRecord`` class, or ``{field: class}``).
    queue : bool
        Keep received beats for :meth:`recv` / :meth:`recv_packet` (a per-cycle monitor that reads
        :attr:`handshake` instead turns this off, so a long run does not accumulate them).

    Attributes
    ----------
    handshake : Beat or None
        The beat taken in the current cycle (set at the falling edge).
    count, packets : int
        Beats and last beats taken so far.
    """

    def __init__(self, tb, name, layout=None, *, record=None, axis=False, queue=True):
        super().__init__(tb, name, layout, record=record, axis=axis)
        self.queue = queue
        self._beats: deque[Beat] = deque()
        self._offered = None
        self._ready_now = 0
        self._ready.value = 0
        self._decode = None if axis else self.codec.unpack

    # -- the test's side ----------------------------------------------------------------------------------------------

    def __len__(self):
        return len(self._beats)

    def empty(self) -> bool:
        return not self._beats

    def clear(self) -> None:
        self._beats.clear()

    def recv_nowait(self) -> Beat:
        return self._beats.popleft()

    async def recv(self, **limits) -> Beat:
        """The next beat (waiting for it; ``limits``: as :meth:`TB.wait_until`)."""
        if not self._beats:
            await self.tb.wait_until(lambda: self._beats, what=f"a beat on {self.name}", **limits)
        return self._beats.popleft()

    def drain(self) -> list[Beat]:
        """Every beat received and not yet taken by the test."""
        beats = list(self._beats)
        self._beats.clear()
        return beats

    def _packet_ready(self) -> bool:
        return any(self._is_last(b.bits, b.value if self.axis else None) for b in self._beats)

    async def recv_packet(self, **limits) -> Packet:
        """The next whole packet: its bytes (ByteBeat ``data[:n_valid]``; AXI4-Stream: the bytes with ``tkeep``
        set) and its beats. Raises ``AssertionError`` for a partial ByteBeat that is not the last."""
        if self.width is None:
            raise TypeError(f"{self.name}: the payload has no ByteBeat (data/n_valid/last)")
        if not self._packet_ready():
            await self.tb.wait_until(self._packet_ready, what=f"a packet on {self.name}", **limits)
        beats, data = [], bytearray()
        while True:
            beat = self._beats.popleft()
            beats.append(beat)
            last = self._is_last(beat.bits, beat.value if self.axis else None)
            data += self.beat_bytes(beat, last)
            if last:
                return Packet(bytes(data), beats)

    def beat_bytes(self, beat: Beat, last: bool = True) -> bytes:
        """The bytes one beat carries."""
        w = self.width
        if self.axis:
            raw = beat.bits.to_bytes(w, "little")
            keep = beat.value.tkeep
            return raw if keep is None else bytes(b for i, b in enumerate(raw) if keep >> i & 1)
        (data_at, data_width), (nv_at, nv_width) = self._data_at, self._n_valid_at
        n = beat.bits >> nv_at & ((1 << nv_width) - 1)
        assert last or n == w, (f"{self.name}: a partial beat that is not the last ({n} of {w} bytes, cycle "
                                f"{beat.cycle})")
        return (beat.bits >> data_at & ((1 << data_width) - 1)).to_bytes(w, "little")[:n]

    # -- the TB's cycle loop ------------------------------------------------------------------------------------------

    def _drive(self):
        ready = 0 if self.pause is not None and next(self.pause) else 1
        if ready != self._ready_now:
            self._ready.value = ready
            self._ready_now = ready

    def _sample(self, cycle, in_reset):
        self.handshake = None
        if not self._valid.value:
            self._offered = None
            return False
        if self._offered is None:
            self._offered = cycle
        if in_reset or not self._ready_now:
            return False
        if self.axis:
            value = AxisBeat(int(self._data.value), None if self._keep is None else int(self._keep.value),
                             bool(self._last.value) if self._last is not None else False,
                             0 if self._user is None else int(self._user.value))
            beat = Beat(value.tdata, cycle, self._offered, value)
        else:
            beat = Beat(int(self._data.value), cycle, self._offered, decode=self._decode)
        self._offered = None
        self.handshake = beat
        self.count += 1
        self.packets += self._is_last(beat.bits, beat.value if self.axis else None)
        if self.queue:
            self._beats.append(beat)
        return True

    def _on_reset(self):
        self._offered = None
