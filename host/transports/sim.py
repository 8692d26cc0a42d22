"""The ``"sim"`` transport: the Verilated RTL of the whole core in this process, run by the compiled harness.

``wirespeed.open("sim")`` ─▶ :class:`SimTransport` ─▶ :class:`~wirespeed.sim.harness.Harness` (C++ per-cycle loop)
─▶ ``WirespeedCore`` (``s_axil`` for registers; ``s_axis`` → ``m_verdict``/``m_axis`` for batches)

Every register access is a real AXI4-Lite transaction (5 cycles, as the model counts them); nothing falls back to the
model. :meth:`SimTransport.classify_stream` sends a whole batch of packets through ``s_axis`` back to back, like the
AXI DMA path on a board, and reads one record per packet from ``m_verdict``. The Verilog is elaborated once per
source tree and parameter set (``build/verilog/``) and compiled once per Verilog text (``build/harness/``), so a
cached open takes about a second in a fresh process, imports included.
"""

from __future__ import annotations

import numpy as np

from ...hdl.id.id_block import CoreParams
from ...sim.elaborate import cached_verilog
from ...sim.harness import OPT, Batch, Harness, HarnessStall, check_opt, pack_bytes_beats
from ...sim.runner import waves_enabled
from ..errors import BusError, TransportError
from ..models.pipeline import stream_batch_cycles
from ...hdl.bus.regmap import OKAY, RESP_NAMES
from .base import Transport, check_access, check_submit
from ..models.pipeline import RECORD_WORDS, VerdictRecord

__all__ = ["SimTransport", "HarnessAxiLite", "TOP_NAME", "core_verilog"]

TOP_NAME = "wirespeed_core"


def core_verilog(params: CoreParams) -> str:
    """The core's Verilog for ``params``, elaborated only when the ``hdl/`` sources or the parameters changed."""
    def make():
        from ...hdl.core.top import WirespeedCore
        return WirespeedCore(params)
    return cached_verilog(TOP_NAME, make, params)


class HarnessAxiLite(Transport):
    """Register access over the AXI4-Lite port of any design run by a :class:`~wirespeed.sim.harness.Harness`.

    Parameters
    ----------
    harness : Harness
        The design, with an ``s_axil`` AXI4-Lite target.
    timeout_cycles : int
        An access with no handshake for this long raises :class:`TransportError` (naming the phase) instead of
        hanging.

    Attributes
    ----------
    cycles : int
        Clock cycles simulated since the harness was created (reset included).
    """

    scheme = "sim"

    def __init__(self, harness: Harness, timeout_cycles: int = 1000):
        self.harness = harness
        self.timeout_cycles = timeout_cycles
        self._closed = False
        self._size = 1 << harness.addr_bits

    @property
    def cycles(self) -> int:
        return self.harness.cycle

    def _access(self, write: bool, address: int, value: int = 0) -> int:
        if self._closed:
            raise TransportError(f"{self.scheme} transport is closed")
        check_access(address, self._size, value if write else None)
        try:
            data, resp = self.harness.access(write, address, value, stall_cycles=self.timeout_cycles)
        except HarnessStall as exc:
            raise TransportError(f"AXI4-Lite {'write' if write else 'read'} at 0x{address:08x}: {exc}") from None
        if resp != OKAY:
            raise BusError("write" if write else "read", address, RESP_NAMES[resp])
        return data

    def tick(self, cycles: int = 1) -> None:
        """Let ``cycles`` clock cycles pass with the bus and every stream idle."""
        if self._closed:
            raise TransportError(f"{self.scheme} transport is closed")
        self.harness.run(Batch(min_cycles=cycles))

    def read32(self, address: int) -> int:
        return self._access(False, address)

    def write32(self, address: int, value: int) -> None:
        self._access(True, address, value)

    def _block(self, write: bool, address: int, values: list) -> list[int]:
        """Consecutive accesses in one harness batch (the same bus transactions as one at a time); the read data."""
        if self._closed:
            raise TransportError(f"{self.scheme} transport is closed")
        for i, v in enumerate(values):
            check_access(address + 4 * i, self._size, v if write else None)
        if not values:
            return []
        result = self.harness.run(Batch(ops=[(write, address + 4 * i, v) for i, v in enumerate(values)],
                                        stall_cycles=self.timeout_cycles))
        for i, resp in enumerate(result.resps):
            if resp != OKAY:
                raise BusError("write" if write else "read", address + 4 * i, RESP_NAMES[resp])
        return result.reads

    def write_block(self, address: int, values) -> None:
        self._block(True, address, list(values))

    def read_block(self, address: int, count: int) -> list[int]:
        return self._block(False, address, [0] * count)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.harness.close()


class SimTransport(HarnessAxiLite):
    """The whole wirespeed core, Verilated, behind its AXI4-Lite port and its packet streams.

    Parameters
    ----------
    params : CoreParams
        Elaboration parameters of the simulated core.
    waves : bool or None
        Write ``dump.fst`` in the harness's build directory; defaults to the ``WAVES`` environment variable.
    submit : str
        ``"stream"`` (default): ``classify*`` batches go through ``s_axis`` (:meth:`classify_stream`); ``"mmio"``:
        through the MMIO submit window, as on a board without DMA.
    opt : str
        The C++ optimisation of the Verilated build, a build of its own (``wirespeed.sim.harness.OPT_LEVELS``):
        ``"-O2"`` by default; ``"-O0"`` compiles a core in a fraction of the time and runs it several times slower,
        for a session of a few register accesses on a core that is not built yet.
    """

    def __init__(self, params: CoreParams = CoreParams(), waves: bool | None = None, timeout_cycles: int = 1000,
                 submit: str = "stream", opt: str = OPT):
        self.params = params
        if check_submit(submit) == "mmio":
            self.classify_stream = None
        check_opt(opt)                      # before the core is elaborated
        harness = Harness(core_verilog(params), TOP_NAME, waves=waves_enabled() if waves is None else waves, opt=opt)
        super().__init__(harness, timeout_cycles=timeout_cycles)
        self.width = params.width_bytes

    def axis_beats(self, packets) -> np.ndarray:
        """``packets`` as ``s_axis`` beats (tdata, tkeep, tlast words) for :meth:`Harness.run`."""
        w = self.width
        data, (n_valid, last, _) = pack_bytes_beats(packets, w)
        s = self.harness.by_name["s_axis"]
        beats = np.zeros((len(data), s.words), np.uint32)
        d_off, _ = s.field("tdata")
        k_off, _ = s.field("tkeep")
        l_off, _ = s.field("tlast")
        beats[:, d_off:d_off + w // 4] = data
        beats[:, k_off] = ((np.uint64(1) << n_valid.astype(np.uint64)) - np.uint64(1)).astype(np.uint32)
        beats[:, l_off] = last
        return beats

    def classify_stream(self, packets: list[bytes], inline: bool = False) -> list[VerdictRecord]:
        """Verdict records for ``packets``, sent back to back through ``s_axis`` (``ctrl.axis_inline`` must already
        say whether they are frames) with every ready high, as the AXI DMA path does on a board. An empty packet is
        one beat with no `tkeep` bit set, as the MMIO window sends it.

        The batch lasts exactly :func:`~wirespeed.host.models.pipeline.stream_batch_cycles` cycles, so the model can
        follow it cycle for cycle; a core that takes longer, or back-pressures ``s_axis``, raises
        :class:`TransportError`."""
        if self._closed:
            raise TransportError("sim transport is closed")
        if not packets:
            return []
        beats = self.axis_beats(packets)
        n = len(packets)
        cycles = stream_batch_cycles(len(beats))
        try:
            result = self.harness.run(Batch(beats={"s_axis": beats}, expect={"m_verdict": n, "m_axis": n},
                                            capacity={"m_verdict": n + 64, "m_axis": len(beats) + 64},
                                            min_cycles=cycles, stall_cycles=self.timeout_cycles))
        except HarnessStall as exc:
            raise TransportError(f"stream batch of {n} packets: {exc}") from None
        if result.cycles != cycles:
            raise TransportError(f"stream batch of {n} packets took {result.cycles} cycles, more than the "
                                 f"{cycles} the pipeline's latency allows")
        accepted = result.accepted["s_axis"]
        first = result.start_cycle
        if not np.array_equal(accepted, np.arange(first, first + len(beats), dtype=np.uint64)):
            gap = int(np.argmax(accepted != np.arange(first, first + len(beats), dtype=np.uint64)))
            raise TransportError(f"s_axis was back-pressured at beat {gap} of {len(beats)}: the stream batch "
                                 f"expects one beat per cycle")
        recs = result.beats["m_verdict"]
        if len(recs) != n:
            raise TransportError(f"{len(recs)} verdict records for {n} packets")
        return [VerdictRecord.from_words(row[:RECORD_WORDS].tolist()) for row in recs]
