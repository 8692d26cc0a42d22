"""Board tops for ECP5 boards with no CPU: the whole core behind a UART-to-AXI4-Lite bridge.

board UART ─▶ :class:`~.uart_bridge.UartAxiLiteBridge` ─▶ ``s_axil`` of :class:`~wirespeed.hdl.core.top.WirespeedCore`
board oscillator ─▶ EHXPLLL (when the core clock differs) ─▶ ``sync``

Also here: what each board's FPGA holds (:data:`BOARDS`), the PLL divider search, and the on-chip memory census that
lets ``wirespeed build`` refuse a configuration that cannot fit before it starts the tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from amaranth import ClockDomain, Fragment, Instance, Module, Shape, Signal
from amaranth.hdl._mem import MemoryInstance
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer

from ..id.id_block import CoreParams
from ..limiter.layouts import LimiterParams
from ..router.layouts import RouterParams
from ..core.top import WirespeedCore
from .uart_bridge import DEFAULT_BAUD, UartAxiLiteBridge

__all__ = ["Board", "BOARDS", "BoardTop", "PllConfig", "ecp5_pll", "board_clock_hz", "ebr_census", "EBR_BITS",
           "limiter_params", "router_params", "router_table_ebr", "board_lpf",
           "ECP5_85_COMPACT_LIMITER"]

#: An ECP5 EBR (DP16KD) holds 18 Kbit.
EBR_BITS = 18 * 1024

#: The limiter profile that fits 16 384 tenants in an ECP5-85 (``docs/limiter.md``, "Memory budget").
ECP5_85_COMPACT_LIMITER = dict(tick_log2=11, req_burst_bits=12, cost_burst_bits=22, counter_bits=0)


@dataclass(frozen=True)
class Board:
    """An ECP5 board the build flow knows.

    Attributes
    ----------
    name : str
        The ``--board`` name.
    platform : str
        ``module:Class`` of its amaranth-boards platform (which holds the pins and the oscillator's constraint).
    device : str
        The FPGA (for the report).
    ebr : int
        EBR blocks of 18 Kbit in the device.
    width : int
        The default W (bytes per beat): the widest whose core fits the device's LUTs (measured, ``docs/boards.md``).
    tenants, maglev : int
        The default configuration: the largest that fits (``ebr_census``), with its trade-off in ``tradeoff``.
    compact_limiter : bool
        Whether the default tenant table uses :data:`ECP5_85_COMPACT_LIMITER`.
    clock_hz : int
        The full core's default clock. It should be the highest measured to meet timing with the default
        configuration; no routed build of the full core exists yet, so it is set below nextpnr's post-placement
        estimate (``docs/boards.md``, "Measured").
    bringup_clock_hz : int
        The bring-up core's clock (``wirespeed build --bringup``), measured to meet timing.
    tradeoff : str
        What the default configuration gives up, for the report.
    """
    name: str
    platform: str
    device: str
    ebr: int
    width: int
    tenants: int
    maglev: int
    compact_limiter: bool
    clock_hz: int
    bringup_clock_hz: int
    tradeoff: str

    def platform_class(self):
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)


BOARDS = {
    "ecpix5": Board(
        name="ecpix5", platform="amaranth_boards.ecpix5:ECPIX585Platform", device="LFE5UM5G-85F-8BG554", ebr=208,
        width=4, tenants=16384, maglev=2048, compact_limiter=True,
        # Not a routed figure: below the 17.6 MHz nextpnr estimated after placing the W=4 core (docs/boards.md);
        # no place and route of the full core has converged here yet. The bring-up core met 100 MHz (120 MHz).
        clock_hz=15_000_000, bringup_clock_hz=100_000_000,
        tradeoff="16 384 tenants in the compact limiter profile (512 ns tick, bursts <= 65 535 requests / 16.7 M cost "
                 "units, no per-tenant counters) take 192 of the 208 EBR; the Maglev table is cut to 2 048 entries "
                 "per buffer (one pool of M <= 2 039, 8 EBR: the table is stored twice for its two read ports) and "
                 "the submit window takes the last 8. One pool of M = 65 537 would need 256 EBR on its own"),
    "versa-ecp5": Board(
        name="versa-ecp5", platform="amaranth_boards.versa_ecp5:VersaECP5Platform", device="LFE5UM-45F-8BG381",
        ebr=108, width=4, tenants=4096, maglev=4096, compact_limiter=False,
        # The full core does not fit the 45F's LUTs (DoesNotFit); the clock is the ECPIX-5's estimate.
        clock_hz=15_000_000, bringup_clock_hz=100_000_000,
        tradeoff="4 096 tenants in the default limiter profile (full ns resolution, per-tenant counters; 79 EBR) and "
                 "4 096 Maglev entries per buffer (16 EBR): the 45F has 108 EBR, about half the 85F's"),
}


# -- PLL -------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PllConfig:
    """EHXPLLL dividers: f_out = f_in · clkfb_div / clki_div, f_vco = f_out · clkop_div (feedback from CLKOP)."""
    f_in_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out_hz(self) -> Fraction:
        return Fraction(self.f_in_hz * self.clkfb_div, self.clki_div)

    @property
    def f_vco_hz(self) -> Fraction:
        return self.f_out_hz * self.clkop_div


def ecp5_pll(f_in_hz: int, f_out_hz: int) -> PllConfig:
    """The EHXPLLL dividers closest to ``f_out_hz`` (exact when possible), searched as ``ecppll`` does: PFD
    3.125..400 MHz, VCO 400..800 MHz, output 3.125..400 MHz (ECP5 family data sheet, sysCLOCK PLL)."""
    if not 3_125_000 <= f_out_hz <= 400_000_000:
        raise ValueError(f"clock {f_out_hz / 1e6:g} MHz: the ECP5 PLL makes 3.125..400 MHz")
    best = None
    for clki in range(1, 129):
        if not 3_125_000 <= f_in_hz / clki <= 400_000_000:
            continue
        for clkfb in range(1, 81):
            fout = Fraction(f_in_hz * clkfb, clki)
            if not 3_125_000 <= fout <= 400_000_000:
                continue
            clkop = max(1, -(-400_000_000 // fout))     # the smallest divider that puts the VCO in range
            if not (clkop <= 128 and fout * clkop <= 800_000_000):
                continue
            err = abs(fout - f_out_hz)
            if best is None or err < best[0]:
                best = (err, PllConfig(f_in_hz, clki, clkfb, int(clkop)))
    if best is None:
        raise ValueError(f"no EHXPLLL setting makes {f_out_hz / 1e6:g} MHz from {f_in_hz / 1e6:g} MHz")
    return best[1]


def _pll_instance(cfg: PllConfig, clk_in, clk_out, locked) -> Instance:
    # Parameters as `ecppll` writes them; the FREQUENCY_PIN attributes let nextpnr derive the output's constraint.
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{cfg.f_in_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{float(cfg.f_out_hz) / 1e6:.6g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
        p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=cfg.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=cfg.clkop_div,
        p_CLKOP_CPHASE=cfg.clkop_div - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=cfg.clkfb_div,
        i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
        o_LOCK=locked)


# -- board top -------------------------------------------------------------------------------------------------------

class BoardTop(wiring.Component):
    """The core on an ECP5 board, reached through the board's UART.

    Parameters
    ----------
    board : str
        A key of :data:`BOARDS`.
    params : CoreParams
        The core's parameters; ``params.clock_hz`` is the ``sync`` clock. When it differs from the board oscillator,
        an EHXPLLL makes it (:attr:`pll` holds the dividers; ``params.clock_hz`` must be a frequency it can make
        exactly, see :func:`board_clock_hz`).
    baud : int
        UART baud rate.
    bridge : callable, optional
        ``bridge(clk_hz, baud, addr_width)`` returns the UART-to-AXI4-Lite bridge; defaults to
        :class:`~.uart_bridge.UartAxiLiteBridge` (tests substitute a stand-in with the same ports).

    The AXI-Stream ports are tied off: ``s_axis`` idle, ``m_axis`` and ``m_verdict`` always ready. The datapath
    (front end, parser, limiter, router, telemetry) is still exercised through the MMIO submit window and read back
    through the result FIFO, so synthesis keeps it; only the AXI-S egress path's outputs go unused.

    A core with no pipelines (``CoreParams(features=frozenset())``: register bank and ID block only) is the
    *bring-up* build: it checks a board's clock, reset, UART and the driver's ``info()`` before the full core.
    """

    def __init__(self, board: str, params: CoreParams, baud: int = DEFAULT_BAUD, *, bridge=None):
        if board not in BOARDS:
            self._MustUse__silence = True
            raise ValueError(f"board {board!r}: known boards are {', '.join(BOARDS)}")
        if params.features and "submit" not in params.features:
            self._MustUse__silence = True
            raise ValueError("a board top needs the whole pipeline (features parser, limiter, router) or none of it "
                             "(the bring-up core)")
        self.board, self.params, self.baud = BOARDS[board], params, baud
        self.bridge = bridge or UartAxiLiteBridge
        osc = self.oscillator_hz()
        self.pll = None if params.clock_hz == osc else ecp5_pll(osc, params.clock_hz)
        if self.pll is not None and self.pll.f_out_hz != params.clock_hz:
            self._MustUse__silence = True           # never elaborated: it is refused
            raise ValueError(f"clock_hz {params.clock_hz}: the PLL makes {float(self.pll.f_out_hz):.0f} Hz from "
                             f"{osc / 1e6:g} MHz; use board_clock_hz() to pick a clock it can make")
        super().__init__({})

    def oscillator_hz(self) -> int:
        return _oscillator_hz(self.board.platform_class())

    def elaborate(self, platform):
        m = Module()
        core = WirespeedCore(self.params)
        m.submodules.core = core
        m.submodules.bridge = bridge = self.bridge(self.params.clock_hz, self.baud, core.addr_width)
        wiring.connect(m, bridge.axil, core.s_axil)
        if "submit" in self.params.features:
            # AXI-S tied off (see the class docstring): no packets in, every output taken at once.
            m.d.comb += [core.s_axis.tvalid.eq(0), core.m_axis.tready.eq(1), core.m_verdict.tready.eq(1)]

        m.domains.sync = cd_sync = ClockDomain("sync")
        if platform is None:            # elaboration without a board (tests): no pins, no PLL
            return m
        osc, rst_pin, uart = _request_pins(platform)
        if self.pll is None:
            m.d.comb += cd_sync.clk.eq(osc)
            not_ready = rst_pin
        else:
            locked = Signal()
            m.submodules.pll = _pll_instance(self.pll, osc, cd_sync.clk, locked)
            platform.add_clock_constraint(cd_sync.clk, self.params.clock_hz)
            not_ready = rst_pin | ~locked
        m.submodules.reset_sync = ResetSynchronizer(not_ready, domain="sync")

        m.d.comb += [bridge.rx.eq(uart.rx.i), uart.tx.o.eq(bridge.tx)]
        return m


def _request_pins(platform):
    """The board pins a board top uses: the oscillator and reset inputs, and UART 0."""
    return platform.request(platform.default_clk).i, platform.request(platform.default_rst).i, \
        platform.request("uart", 0)


class _PinsOnly(wiring.Component):
    """The board top's pins with nothing behind them (UART looped back): enough for Amaranth to write its LPF."""

    def __init__(self):
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        _, _, uart = _request_pins(platform)
        m.d.comb += uart.tx.o.eq(uart.rx.i)
        return m


def board_lpf(board: str) -> str:
    """The pin and oscillator constraints of a board top (``constraints/<board>.lpf``), as Amaranth writes them
    from the board's amaranth-boards platform. ``wirespeed build`` adds the core clock's ``FREQUENCY NET`` when an
    EHXPLLL makes it."""
    platform = BOARDS[board].platform_class()(toolchain="Trellis")
    lpf = platform.prepare(_PinsOnly(), name="top").files["top.lpf"]
    body = [ln for ln in lpf.splitlines() if ln.strip() and not ln.startswith("#")]
    return (f"# {board} ({BOARDS[board].device}): the pins and the oscillator of wirespeed's board top.\n"
            f"# Written by wirespeed.hdl.platform.boards.board_lpf from {BOARDS[board].platform}; a test checks it.\n"
            + "\n".join(body) + "\n")


def _oscillator_hz(platform_class) -> int:
    for res in platform_class.resources:
        if res.name == platform_class.default_clk and res.clock is not None:
            return int(res.clock.frequency)
    raise ValueError(f"{platform_class.__name__} has no constrained default clock")


def board_clock_hz(board: str, clock_hz: int) -> int:
    """The clock the board can make closest to ``clock_hz``: the oscillator itself or an EHXPLLL output (rounded to
    whole Hz; the report states it)."""
    osc = _oscillator_hz(BOARDS[board].platform_class())
    if clock_hz == osc:
        return osc
    return round(ecp5_pll(osc, clock_hz).f_out_hz)


# -- memory census ---------------------------------------------------------------------------------------------------

#: DP16KD/PDPW16KD aspect ratios (width, depth); 36 bits wide only with one write and one read port (PDPW16KD).
_EBR_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
#: Shallower memories go to LUT RAM (TRELLIS_DPR16X4) or flip-flops: Yosys 0.70's memory_libmap puts the core's
#: FIFOs of depth 4..33 there and the 64-deep plan table in EBR (measured on the ECPIX-5 build).
_EBR_MIN_DEPTH = 64


def _ebr_for(width: int, depth: int, copies: int) -> int:
    if depth < _EBR_MIN_DEPTH:
        return 0
    return copies * min(-(-width // w) * -(-depth // d) for w, d in _EBR_SHAPES)


def ebr_census(params: CoreParams) -> dict[str, dict]:
    """Every RAM of the core as elaborated with ``params``, with the EBR blocks it needs on ECP5.

    Returns ``{path: {"width", "depth", "bits", "ebr"}}``. An EBR gives one write and one read port, so a RAM with
    two synchronous read ports (the router table: lookup and host read-back) is stored twice; a RAM read
    asynchronously cannot be an EBR at all (Yosys puts it in LUT RAM). Width and depth pack per
    :data:`_EBR_SHAPES`; write-enable granules narrower than the word are separate columns.
    """
    core = WirespeedCore(params)
    frag = Fragment.get(core, None)
    out = {}

    def walk(frag, path):
        for sub, name, _ in frag.subfragments:
            sub_path = f"{path}.{name}" if path else str(name)
            if isinstance(sub, MemoryInstance):
                width, depth = Shape.cast(sub._data.shape).width, sub._data.depth
                sync_reads = [p for p in sub._read_ports if p._domain != "comb"]
                granule = min([p._granularity for p in sub._write_ports] or [width]) or width
                copies = max(1, len(sync_reads)) if len(sync_reads) == len(sub._read_ports) else 0
                ebr = 0
                if copies:
                    columns, rest = divmod(width, granule)
                    ebr = columns * _ebr_for(granule, depth, copies) + (_ebr_for(rest, depth, copies) if rest else 0)
                out[sub_path] = {"width": width, "depth": depth, "bits": width * depth, "ebr": ebr}
            else:
                walk(sub, sub_path)
    walk(frag, "")
    return out


def router_table_ebr(maglev: int) -> int:
    """EBR of the router's table for ``maglev`` entries per buffer (as :func:`ebr_census` counts it)."""
    p = router_params(maglev)
    return _ebr_for(32, 2 * p.words, 2)


def limiter_params(tenants: int, clock_hz: int, compact: bool) -> LimiterParams:
    """The tenant table for ``tenants`` slots: the compact ECP5-85 profile or the default one."""
    return LimiterParams(capacity=tenants, clock_hz=clock_hz, **(ECP5_85_COMPACT_LIMITER if compact else {}))


def router_params(maglev: int) -> RouterParams:
    """The router for one pool of up to ``maglev`` entries (RouterParams wants an even count: M = 65 537 → 65 538)."""
    return RouterParams(table_entries=maglev + (maglev & 1))
