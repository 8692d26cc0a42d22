"""The ``"sim"`` transport: the Verilated RTL of the whole core in this process, driven over its AXI4-Lite port.

``wirespeed.open("sim")`` ─▶ :class:`SimTransport` ─▶ :class:`~wirespeed.sim.pyverilator_shim.VerilatedModel` ─▶
``WirespeedCore`` (``s_axil``)

Every access is a real AXI4-Lite transaction, clocked cycle by cycle; nothing falls back to the model. The first open
of a configuration compiles it (tens of seconds); later opens reuse ``build/sim/``.
"""

from __future__ import annotations

from ..hdl.id import CoreParams
from ..hdl.top import WirespeedCore
from ..sim.runner import to_verilog, waves_enabled
from .errors import BusError, TransportError
from .register_model import OKAY, RESP_NAMES
from .transport import Transport, check_access

__all__ = ["SimTransport", "VerilatedAxiLite", "TOP_NAME"]

TOP_NAME = "wirespeed_core"


class VerilatedAxiLite(Transport):
    """Register access over the AXI4-Lite pins of any Verilated design, clocked cycle by cycle from Python.

    Parameters
    ----------
    dut : wirespeed.sim.pyverilator_shim.VerilatedModel
        The design, with ``clk``, ``rst`` and AXI4-Lite target ports named ``<prefix><signal>``.
    prefix : str
        Port name prefix of the AXI4-Lite interface (Amaranth names ``s_axil`` members ``s_axil__awaddr`` ...).
    timeout_cycles : int
        An AXI handshake that takes longer raises :class:`TransportError` instead of hanging.

    Attributes
    ----------
    cycles : int
        Clock cycles simulated since the transport opened.
    """

    scheme = "sim"

    def __init__(self, dut, prefix: str = "s_axil__", timeout_cycles: int = 1000):
        self.dut = dut
        self.prefix = prefix
        self.timeout_cycles = timeout_cycles
        self.cycles = 0
        self._closed = False
        self.reset()

    # -- clocking -------------------------------------------------------------------------------------------------

    def _set(self, name: str, value: int) -> None:
        self.dut[self.prefix + name] = value

    def _get(self, name: str) -> int:
        return self.dut[self.prefix + name]

    def tick(self, n: int = 1) -> None:
        """Advance ``n`` clock cycles. Inputs set before a tick are sampled at its rising edge."""
        dut = self.dut
        for _ in range(n):
            dut["clk"] = 1
            dut.eval()
            dut["clk"] = 0
            dut.eval()
        self.cycles += n

    def reset(self, cycles: int = 2) -> None:
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
            self._set(name, 0)
        self.dut["clk"] = 0
        self.dut["rst"] = 1
        self.dut.eval()
        self.tick(cycles)
        self.dut["rst"] = 0
        self.dut.eval()

    # -- AXI4-Lite ------------------------------------------------------------------------------------------------

    def _check(self, address, value=None):
        if self._closed:
            raise TransportError("sim transport is closed")
        check_access(address, 1 << self.dut.widths[self.prefix + "awaddr"], value)

    def _wait(self, what: str, address: int, done) -> None:
        for _ in range(self.timeout_cycles):
            if done():
                return
            self.tick()
        raise TransportError(f"AXI4-Lite {what} at 0x{address:08x} got no handshake in {self.timeout_cycles} cycles")

    def read32(self, address: int) -> int:
        self._check(address)
        self._set("araddr", address)
        self._set("arvalid", 1)
        self._set("rready", 1)
        self.dut.eval()
        self._wait("AR", address, lambda: self._get("arready"))
        self.tick()
        self._set("arvalid", 0)
        self.dut.eval()
        self._wait("R", address, lambda: self._get("rvalid"))
        data, resp = self._get("rdata"), self._get("rresp")
        self.tick()
        self._set("rready", 0)
        self.dut.eval()
        if resp != OKAY:
            raise BusError("read", address, RESP_NAMES[resp])
        return data

    def write32(self, address: int, value: int) -> None:
        self._check(address, value)
        self._set("awaddr", address)
        self._set("wdata", value)
        self._set("wstrb", 0xF)
        self._set("awvalid", 1)
        self._set("wvalid", 1)
        self._set("bready", 1)
        self.dut.eval()
        pending = {"awvalid": "awready", "wvalid": "wready"}
        for _ in range(self.timeout_cycles):
            accepted = [v for v, r in pending.items() if self._get(r)]
            if len(accepted) == len(pending):
                break
            self.tick()
            for v in accepted:
                self._set(v, 0)
                del pending[v]
            self.dut.eval()
        else:
            raise TransportError(f"AXI4-Lite AW/W at 0x{address:08x} got no handshake in {self.timeout_cycles} cycles")
        self.tick()
        for v in pending:
            self._set(v, 0)
        self.dut.eval()
        self._wait("B", address, lambda: self._get("bvalid"))
        resp = self._get("bresp")
        self.tick()
        self._set("bready", 0)
        self.dut.eval()
        if resp != OKAY:
            raise BusError("write", address, RESP_NAMES[resp])

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.dut.close()


class SimTransport(VerilatedAxiLite):
    """The whole wirespeed core, Verilated, behind its AXI4-Lite port.

    Parameters
    ----------
    params : CoreParams
        Elaboration parameters of the simulated core.
    waves : bool or None
        Write ``dump.fst`` in the build directory; defaults to the ``WAVES`` environment variable.
    """

    def __init__(self, params: CoreParams = CoreParams(), waves: bool | None = None, timeout_cycles: int = 1000):
        from ..sim.pyverilator_shim import VerilatedModel
        self.params = params
        dut = VerilatedModel(to_verilog(WirespeedCore(params), TOP_NAME), TOP_NAME,
                             waves=waves_enabled() if waves is None else waves)
        super().__init__(dut, timeout_cycles=timeout_cycles)
