"""One recording, fault-injecting :class:`~wirespeed.host.transports.base.Transport` for driver tests.

``Offload`` ─▶ :class:`RecordingTransport` (records; answers stuck or altered reads; fails writes; counts threads
inside it) ─▶ the real transport (usually ``ModelTransport``)

Tests get it through the ``record_bus`` fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from wirespeed.host.errors import TransportError
from wirespeed.hdl.bus.regmap import RegMap, core_regmap
from wirespeed.host.transports.base import Transport

__all__ = ["Access", "RecordingTransport"]


_NAMES: dict[int, tuple[RegMap, dict[int, str]]] = {}


def _register_names(regmap: RegMap) -> dict[int, str]:
    """Address → register name for every word of every register (built once per map)."""
    entry = _NAMES.get(id(regmap))
    if entry is None:
        names = {reg.address + 4 * w: reg.name for reg in regmap.registers for w in range(reg.words)}
        entry = _NAMES[id(regmap)] = (regmap, names)        # the map is kept, so its id stays unique
    return entry[1]


class Access(NamedTuple):
    """One recorded access: ``op`` is ``"r"`` or ``"w"``; ``value`` what was read (after any fault) or written;
    ``name`` the register holding ``address`` (any of its words), else the address in hex."""
    op: str
    address: int
    value: int
    name: str


class RecordingTransport(Transport):
    """Passes every access to ``inner`` and records it in :attr:`log`; optionally injects faults.

    Parameters
    ----------
    inner : Transport
        The device (closing this transport closes it).
    regmap : RegMap, optional
        Names the recorded addresses; default the core's map.
    stuck : dict[int, int], optional
        Address → value every read of it answers, without touching the device (a stuck status register, a lying
        ID block). Mutable: ``bus.stuck[address] = value`` changes it mid-test.
    clear_bits : dict[int, int], optional
        Address → bits cleared from every value read there (``pipeline.status`` with no result count: a stalled
        pipeline).
    fail_after_writes : int, optional
        Raise :class:`TransportError` ("link down (test)") on every write once this many were recorded.
    yield_inside : bool
        Sleep(0) inside every access, so that a second thread gets the chance to enter: :attr:`overlaps` counts
        accesses that began while another was in progress.
    """

    scheme = "recording"

    def __init__(self, inner: Transport, *, regmap: RegMap | None = None, stuck: dict | None = None,
                 clear_bits: dict | None = None, fail_after_writes: int | None = None, yield_inside: bool = False):
        self.inner = inner
        self.log: list[Access] = []
        self.stuck = dict(stuck or {})
        self.clear_bits = dict(clear_bits or {})
        self.fail_after_writes = fail_after_writes
        self.yield_inside = yield_inside
        self.overlaps = 0
        self._write_count = 0
        self._inside = 0
        self._lock = threading.Lock()
        self._set_after_write: dict[int, tuple[int, int, int]] = {}   # trigger address -> (read address, bits, n)
        self._set_left: dict[int, tuple[int, int]] = {}                # read address -> (bits, reads left)
        self._names = _register_names(regmap or core_regmap())

    def set_bits_after_write(self, write_address: int, read_address: int, bits: int, reads: int) -> None:
        """After each write to ``write_address``, the next ``reads`` reads of ``read_address`` also have ``bits``
        set (a busy flag that stays up for that many polls)."""
        self._set_after_write[write_address] = (read_address, bits, reads)

    # -- what was recorded --

    @property
    def writes(self) -> list[tuple[int, int]]:
        """``(address, value)`` of every write."""
        return [(a.address, a.value) for a in self.log if a.op == "w"]

    @property
    def reads(self) -> list[int]:
        """The address of every read."""
        return [a.address for a in self.log if a.op == "r"]

    @property
    def named_writes(self) -> list[tuple[str, int]]:
        """``(register name, value)`` of every write."""
        return [(a.name, a.value) for a in self.log if a.op == "w"]

    def named(self) -> list[tuple[str, str, int]]:
        """``(op, register name, value)`` of every access, in order."""
        return [(a.op, a.name, a.value) for a in self.log]

    def clear(self) -> None:
        """Forget what was recorded (faults stay; ``fail_after_writes`` keeps counting from where it was)."""
        self.log.clear()

    @staticmethod
    def innermost(transport: Transport) -> Transport:
        """``transport`` with every RecordingTransport around it removed."""
        while isinstance(transport, RecordingTransport):
            transport = transport.inner
        return transport

    # -- Transport --

    def _enter(self):
        with self._lock:
            self._inside += 1
            if self._inside > 1:
                self.overlaps += 1
        if self.yield_inside:
            time.sleep(0)

    def _leave(self):
        with self._lock:
            self._inside -= 1

    def read32(self, address: int) -> int:
        self._enter()
        try:
            value = self.stuck[address] if address in self.stuck else self.inner.read32(address)
            value &= ~self.clear_bits.get(address, 0)
            if address in self._set_left:
                bits, left = self._set_left[address]
                value |= bits
                if left > 1:
                    self._set_left[address] = (bits, left - 1)
                else:
                    del self._set_left[address]
            self.log.append(Access("r", address, value, self._names.get(address, hex(address))))
            return value
        finally:
            self._leave()

    def write32(self, address: int, value: int) -> None:
        self._enter()
        try:
            if self.fail_after_writes is not None and self._write_count >= self.fail_after_writes:
                raise TransportError("link down (test)")
            self._write_count += 1
            self.log.append(Access("w", address, value, self._names.get(address, hex(address))))
            if address in self._set_after_write:
                read_address, bits, reads = self._set_after_write[address]
                if reads:
                    self._set_left[read_address] = (bits, reads)
            self.inner.write32(address, value)
        finally:
            self._leave()

    def close(self) -> None:
        self.inner.close()
