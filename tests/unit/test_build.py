"""``wirespeed build`` without the synthesis tools: argument checks, the EBR budget, nextpnr report parsing, the
timing check, and the board tops elaborated for both boards (``tests/synth/test_build_ecp5.py`` runs the tools)."""

import argparse
import gc
import json
import sys
import warnings
from pathlib import Path

import pytest
from amaranth import Fragment

from wirespeed.hdl.platform.boards import (BOARDS, BoardTop, board_clock_hz, ebr_census, ecp5_pll, limiter_params,
                                           router_params)
from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.host.tools import build as flow
DATA = Path(__file__).parent / "data"
#: A nextpnr-ecp5 ``--report`` in nextpnr 0.11's format, reduced to the keys the flow reads (written by hand: replace it
#: with a trimmed ``build/ecpix5/nextpnr-report.json`` once a full build has finished).
NEXTPNR_REPORT = DATA / "nextpnr_report_ecp5.json"


# -- arguments and budget ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(board="ice40"), "known boards are"),
    (dict(board="ecpix5", tenants=1000), "--tenants 1000: must be a power of two"),
    (dict(board="ecpix5", maglev=1), "--maglev 1"),
    (dict(board="ecpix5", width=32), "--width 32"),
    (dict(board="ecpix5", clock_hz=500_000_000), "--clock-mhz 500"),
])
def test_bad_arguments_are_named(kw, match):
    with pytest.raises(flow.BuildError, match=match):
        flow.board_config(**kw)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_default_configuration_fits_its_board(board):
    params, census, profile, tradeoff = flow.board_config(board)
    b = BOARDS[board]
    assert params.tenants == b.tenants and params.maglev_size == b.maglev + (b.maglev & 1)
    assert profile == ("compact" if b.compact_limiter else "default")
    assert sum(m["ebr"] for m in census.values()) <= b.ebr
    assert tradeoff


def test_16384_tenants_beside_a_full_maglev_table_fail_early_naming_the_parameters_and_the_ebr():
    with pytest.raises(flow.BudgetError) as exc:
        flow.board_config("ecpix5", tenants=16384, maglev=65537)
    msg = str(exc.value)
    assert "--tenants 16384" in msg and "--maglev 65537" in msg and "EBR" in msg and "208" in msg
    assert "--maglev" in msg.split("fits")[0].split(";")[-1]         # the hint names a Maglev size that fits


def test_the_versa_board_refuses_16384_tenants():
    with pytest.raises(flow.BudgetError, match=r"versa-ecp5 \(LFE5UM-45F.*has 108"):
        flow.board_config("versa-ecp5", tenants=16384)


def test_the_limiter_falls_back_to_the_compact_profile_only_when_the_default_does_not_fit():
    assert flow.board_config("versa-ecp5", tenants=1024, maglev=1024)[2] == "default"
    assert flow.board_config("ecpix5", tenants=16384, maglev=1024)[2] == "compact"


def test_the_census_sees_the_router_table_twice_for_its_two_read_ports():
    params = CoreParams(clock_hz=100_000_000, limiter=limiter_params(64, 100_000_000, False),
                        router=router_params(8192))
    table = ebr_census(params)["pipeline.router.table"]
    assert (table["width"], table["depth"]) == (32, 8192) and table["ebr"] == 2 * 16


# -- clocks ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mhz", [50, 80, 100, 125, 150, 200])
def test_the_pll_makes_round_clocks_exactly_within_its_limits(mhz):
    cfg = ecp5_pll(100_000_000, mhz * 1_000_000)
    assert cfg.f_out_hz == mhz * 1_000_000
    assert 400e6 <= cfg.f_vco_hz <= 800e6 and 3.125e6 <= 100e6 / cfg.clki_div <= 400e6


def test_a_clock_the_pll_cannot_make_is_rounded_to_one_it_can():
    hz = board_clock_hz("ecpix5", 123_456_789)
    assert abs(hz - 123_456_789) < 1e6
    with pytest.raises(ValueError, match="use board_clock_hz"):
        BoardTop("ecpix5", CoreParams(clock_hz=123_456_789, limiter=limiter_params(64, 123_456_789, False)))


# -- report parsing and the timing check ------------------------------------------------------------------------------

def test_the_nextpnr_report_gives_fmax_per_clock_and_utilisation():
    raw = json.loads(NEXTPNR_REPORT.read_text())
    t = flow.parse_nextpnr_report(raw, core_hz=100_000_000)
    assert t["fmax"] and set(t["utilization"]) == {"LUT4", "FF", "EBR", "DSP"}
    for f in t["fmax"].values():
        assert f["met"] == (f["achieved_mhz"] >= f["constraint_mhz"])
    assert t["utilization"]["EBR"]["available"] == 208
    assert t["core_fmax_mhz"] is not None


def test_a_clock_below_its_constraint_fails_the_timing_check():
    raw = json.loads(NEXTPNR_REPORT.read_text())
    for f in raw["fmax"].values():
        f["constraint"] = f["achieved"] + 1.0
    t = flow.parse_nextpnr_report(raw, core_hz=100_000_000)
    assert not t["timing_met"]
    report = {"board": "ecpix5", "clock": {"core_mhz": 100.0}, **t}
    with pytest.raises(flow.TimingNotMet, match="MHz <") as exc:
        flow.check_timing(report)
    assert exc.value.report is report


def test_a_report_with_no_constrained_clock_is_not_a_pass():
    assert not flow.parse_nextpnr_report({"fmax": {}, "utilization": {}}, 100_000_000)["timing_met"]


# -- the flow with stand-in tools -------------------------------------------------------------------------------------

FAKE_TOOL = """#!{python}
import json, pathlib, shutil, sys
args = sys.argv[1:]
if args[:1] in (["-V"], ["--version"]):
    print("fake 1.0"); sys.exit(0)
tool = pathlib.Path(sys.argv[0]).name
pathlib.Path(tool + ".argv").write_text(json.dumps(args))      # in the build folder, for the tests to read
if tool == "nextpnr-ecp5" and {overfull!r}:
    log = pathlib.Path({overfull!r}).read_text()
    pathlib.Path(args[args.index("--log") + 1]).write_text(log)
    print(log.splitlines()[-1]); sys.exit(125)
if tool == "nextpnr-ecp5" and "--pack-only" in args:
    log = pathlib.Path({packed!r}).read_text()
    pathlib.Path(args[args.index("--log") + 1]).write_text(log)
    assert "--report" not in args and "--textcfg" not in args
    print(log.splitlines()[-1]); sys.exit(0)
if tool == "nextpnr-ecp5":
    report = json.loads(pathlib.Path({report!r}).read_text())
    for f in report["fmax"].values():
        f["constraint"] = {constraint}
    pathlib.Path(args[args.index("--report") + 1]).write_text(json.dumps(report))
    pathlib.Path("top.config").write_text("")
elif tool == "ecppack":
    pathlib.Path(args[args.index("--bit") + 1]).write_bytes(b"bit")
print("Info: Program finished normally.")
"""


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """yosys, nextpnr-ecp5 and ecppack stand-ins; nextpnr reports the captured Fmax against a constraint."""
    def install(constraint_mhz, overfull=""):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        for name, env in (("yosys", "YOSYS"), ("nextpnr-ecp5", "NEXTPNR_ECP5"), ("ecppack", "ECPPACK")):
            tool = bin_dir / name
            tool.write_text(FAKE_TOOL.format(python=sys.executable, report=str(NEXTPNR_REPORT),
                                             constraint=constraint_mhz, overfull=str(overfull),
                                             packed=str(NEXTPNR_PACKED)))
            tool.chmod(0o755)
            monkeypatch.setenv(env, str(tool))
        # The elaboration itself is covered below; here it only has to leave the files the tools read.
        def emit(platform, top, out, synth_opts="", lut_mapper="abc"):
            top._MustUse__silence = True
            (out / "top.ys").write_text(flow.synth_script("top", synth_opts, lut_mapper))   # as _emit does
        monkeypatch.setattr(flow, "_emit", emit)
    return install


def test_the_flow_writes_a_report_and_a_bitstream_when_timing_is_met(fake_tools, tmp_path):
    fake_tools(constraint_mhz=1.0)
    phases = []
    report = flow.build("versa-ecp5", tenants=64, maglev=2, out_dir=tmp_path / "out",
                        progress=lambda phase, detail: phases.append(phase))
    assert report["timing_met"] and Path(report["files"]["bitstream"]).exists()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["timing_met"]
    assert {"elaborate", "place and route", "bitstream"} <= set(phases)
    assert report["config"]["tenants"] == 64 and report["config"]["limiter_profile"] == "default"
    assert report["config"]["width_bytes"] == BOARDS["versa-ecp5"].width == 4      # the board's default W
    assert report["line_rate_gbps"]["at_clock"] == round(4 * 8 * BOARDS["versa-ecp5"].clock_hz / 1e9, 2)
    assert set(report["wall_time_s"]) >= {"synthesis_s", "place_and_route_s", "total_s"}


def test_the_flow_raises_on_a_timing_failure_and_packs_no_bitstream(fake_tools, tmp_path):
    fake_tools(constraint_mhz=10_000.0)
    with pytest.raises(flow.TimingNotMet) as exc:
        flow.build("versa-ecp5", tenants=64, maglev=2, out_dir=tmp_path / "out")
    assert not exc.value.report["timing_met"] and exc.value.report["files"]["bitstream"] is None
    assert not (tmp_path / "out" / "top.bit").exists()
    assert not json.loads((tmp_path / "out" / "report.json").read_text())["timing_met"]


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(flow, "_which", lambda name: None)
    for env in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(flow.ToolMissing, match="yosys.*nextpnr-ecp5.*ecppack"):
        flow.find_tools()


def test_the_cli_options_parse_into_run_arguments():
    parser = argparse.ArgumentParser()
    flow.add_arguments(parser)
    args = parser.parse_args(["--board", "ecpix5", "--width", "8", "--tenants", "4096", "--maglev", "1024",
                              "--clock-mhz", "90"])
    assert (args.board, args.width, args.tenants, args.maglev, args.clock_mhz) == ("ecpix5", 8, 4096, 1024, 90.0)
    assert (args.lut_mapper, args.router, args.bringup, args.pack_only) == ("abc", "router1", False, False)
    assert args.synth_opts is None              # build() then uses DEFAULT_SYNTH_OPTS
    assert parser.parse_args(["--board", "ecpix5", "--synth-opts="]).synth_opts == ""
    args = parser.parse_args(["--board", "versa-ecp5", "--bringup", "--pack-only", "--lut-mapper", "abc9",
                              "--router", "router2"])
    assert (args.lut_mapper, args.router, args.bringup, args.pack_only) == ("abc9", "router2", True, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--board", "ecpix5", "--router", "router3"])


@pytest.mark.parametrize("router", ["router1", "router2"])
def test_the_router_reaches_nextpnr_and_the_report(fake_tools, tmp_path, router):
    fake_tools(constraint_mhz=1.0)
    out = tmp_path / "out"
    report = flow.build("versa-ecp5", tenants=64, maglev=2, out_dir=out, router=router)
    argv = json.loads((out / "nextpnr-ecp5.argv").read_text())
    assert argv[argv.index("--router") + 1] == router and report["router"] == router


@pytest.mark.parametrize("synth_opts, abc_line", [(None, "abc -dress -lut 4"), ("", "abc -dress -lut 4:7"),
                                                  ("-nowidelut", "abc -dress -lut 4")])
def test_builds_map_to_4_input_luts_unless_told_otherwise(fake_tools, tmp_path, synth_opts, abc_line):
    fake_tools(constraint_mhz=1.0)
    out = tmp_path / "out"
    kwargs = {} if synth_opts is None else {"synth_opts": synth_opts}
    report = flow.build("versa-ecp5", tenants=64, maglev=2, out_dir=out, **kwargs)
    assert abc_line in (out / "top.ys").read_text().splitlines()
    assert report["synth_opts"] == (flow.DEFAULT_SYNTH_OPTS if synth_opts is None else synth_opts)
    assert flow.DEFAULT_SYNTH_OPTS == "-nowidelut"


def test_an_unknown_router_is_named_before_any_tool_runs(fake_tools, tmp_path):
    fake_tools(constraint_mhz=1.0)
    with pytest.raises(flow.BuildError, match="router 'router3': one of router1, router2"):
        flow.build("versa-ecp5", tenants=64, maglev=2, out_dir=tmp_path / "out", router="router3")
    assert not (tmp_path / "out" / "yosys.argv").exists()


# -- board tops -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("board, mhz", [("ecpix5", 100), ("ecpix5", 150), ("versa-ecp5", 100), ("versa-ecp5", 80)])
def test_the_board_top_elaborates_with_the_uart_bridge_on_the_board_pins(board, mhz):
    hz = mhz * 1_000_000
    params = CoreParams(clock_hz=hz, limiter=limiter_params(64, hz, False), router=router_params(64))
    top = BoardTop(board, params)
    platform = BOARDS[board].platform_class()(toolchain="Trellis")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # pin buffers only a full platform.prepare() would consume
        Fragment.get(top, platform)
        requested = {name for name, _ in platform._requested}
        del platform
        gc.collect()
    assert requested == {"clk100", "rst", "uart"}
    assert (top.pll is None) == (mhz == 100)
    assert type(top.bridge).__name__ == "type" and top.bridge.__name__ == "UartAxiLiteBridge"


def test_the_classic_abc_script_runs_synth_ecp5_in_two_parts_around_abc():
    script = flow.synth_script("top", "-nowidelut", "abc").splitlines()
    assert script[0] == "read_rtlil top.il" and script[-1] == "write_json top.json"
    assert script[1] == "synth_ecp5 -nowidelut -top top -run :map_luts"
    # -nowidelut reaches the classic mapper too: 4-input LUTs only.
    assert "abc -dress -lut 4" in script and not any("abc9" in ln for ln in script)
    assert script[-2] == "synth_ecp5 -nowidelut -top top -run map_cells:"
    assert "abc -dress -lut 4:7" in flow.synth_script("top", "", "abc").splitlines()
    # abc-nodch: the same two parts around Yosys' default LUT script less dch (lutpack for a single LUT size only).
    nodch = flow.synth_script("top", "-nowidelut", "abc-nodch").splitlines()
    assert [ln for ln in nodch if ln not in script] == [
        "abc -dress -lut 4 -script +strash;&get,-n;&fraig,-x;&put;scorr;dc2;dretime;strash;if;mfs2;lutpack,-S,1"]
    assert "abc -dress -lut 4:7 -script +strash;&get,-n;&fraig,-x;&put;scorr;dc2;dretime;strash;if;mfs2" in \
        flow.synth_script("top", "", "abc-nodch").splitlines()
    # ABC9 is synth_ecp5 whole, as Amaranth writes it.
    assert flow.synth_script("top").splitlines()[1].split() == ["synth_ecp5", "-top", "top"]
    with pytest.raises(flow.BuildError, match="lut_mapper"):
        flow.synth_script("top", "", "vpr")


NEXTPNR_OVERFULL = Path(__file__).parent / "data" / "nextpnr-overfull.log"   # captured: W=8 core on the 85F
NEXTPNR_PACKED = Path(__file__).parent / "data" / "nextpnr-packed-w4.log"     # captured: W=4 core on the 85F


def test_pack_only_reports_the_utilisation_and_builds_nothing_more(fake_tools, tmp_path):
    fake_tools(constraint_mhz=1.0)
    phases = []
    report = flow.build("ecpix5", tenants=64, maglev=2, out_dir=tmp_path / "out", pack_only=True,
                        progress=lambda phase, detail: phases.append(phase))
    assert report["pack_only"] and report["timing_met"] is None and report["fmax"] == {}
    assert report["utilization"]["LUT4"] == {"used": 71941, "available": 83640, "percent": 86.0}
    assert report["utilization"]["EBR"]["used"] == 51 and report["utilization"]["DSP"]["used"] == 74
    assert report["files"]["bitstream"] is None and not (tmp_path / "out" / "top.bit").exists()
    assert "pack" in phases and "place and route" not in phases and "bitstream" not in phases
    assert report["router"] is None and "--router" not in json.loads((tmp_path / "out" / "nextpnr-ecp5.argv").read_text())
    assert json.loads((tmp_path / "out" / "report.json").read_text())["utilization"] == report["utilization"]


def test_pack_only_still_fails_a_netlist_larger_than_the_device(fake_tools, tmp_path):
    fake_tools(constraint_mhz=1.0, overfull=NEXTPNR_OVERFULL)
    with pytest.raises(flow.DoesNotFit, match="TRELLIS_COMB 109494 of 83640"):
        flow.build("ecpix5", tenants=64, maglev=2, out_dir=tmp_path / "out", pack_only=True)


def test_the_bringup_build_has_no_pipelines_and_its_own_clock(fake_tools, tmp_path):
    fake_tools(constraint_mhz=1.0)
    report = flow.build("ecpix5", bringup=True, out_dir=tmp_path / "out")
    assert report["config"]["features"] == [] and report["config"]["tenants"] == 0
    assert report["clock"]["core_mhz"] == BOARDS["ecpix5"].bringup_clock_hz / 1e6
    assert report["tradeoff"].startswith("bring-up core") and report["timing_met"]
    assert report["line_rate_gbps"] == {"at_fmax": None, "at_clock": None}


def test_a_netlist_larger_than_the_device_is_named_with_its_figures(fake_tools, tmp_path):
    assert flow.parse_utilisation(NEXTPNR_OVERFULL.read_text())["TRELLIS_COMB"] == (109494, 83640)
    fake_tools(constraint_mhz=1.0, overfull=NEXTPNR_OVERFULL)
    with pytest.raises(flow.DoesNotFit, match=r"TRELLIS_COMB 109494 of 83640 \(131 %\)") as exc:
        flow.build("ecpix5", tenants=64, maglev=2, out_dir=tmp_path / "out")
    assert exc.value.over == {"TRELLIS_COMB": (109494, 83640)}
    assert isinstance(exc.value, flow.BudgetError) and not (tmp_path / "out" / "top.bit").exists()


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_committed_lpf_is_what_the_build_writes(board):
    # constraints/<board>.lpf is generated (board_lpf) and committed: it must not drift from the platform, and every
    # line of it must be in the LPF that a real build of the board top writes (which adds the PLL clock's net).
    from wirespeed.hdl.platform.boards import board_lpf
    committed = (Path(__file__).parents[2] / "constraints" / f"{board}.lpf").read_text()
    assert committed == board_lpf(board), f"regenerate constraints/{board}.lpf with board_lpf({board!r})"
    platform = BOARDS[board].platform_class()(toolchain="Trellis")
    top = BoardTop(board, CoreParams(clock_hz=50_000_000, features=frozenset()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = platform.prepare(top, name="top").files["top.lpf"].splitlines()
    body = [ln for ln in committed.splitlines() if not ln.startswith("#")]
    assert body and set(body) <= set(built)
    assert 'FREQUENCY NET "reset_sync.clk" 50000000.0 HZ;' in built        # the core clock, from the PLL


def test_the_cli_prints_a_pack_only_report_as_json(fake_tools, tmp_path, capsys):
    from wirespeed.host.tools import cli
    fake_tools(constraint_mhz=1.0)
    rc = cli.main(["build", "--board", "ecpix5", "--tenants", "64", "--maglev", "2", "--pack-only",
                   "--out", str(tmp_path / "out"), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pack_only"] and report["timing_met"] is None
    assert report["utilization"]["LUT4"]["percent"] == 86.0


def test_the_cli_summary_of_a_bringup_build(fake_tools, tmp_path, capsys):
    from wirespeed.host.tools import cli
    fake_tools(constraint_mhz=1.0)
    assert cli.main(["build", "--board", "versa-ecp5", "--bringup", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "bring-up core (no pipelines), core clock 100 MHz" in out and "line rate" not in out


# -- wirespeed build --block ------------------------------------------------------------------------------------------

def test_a_block_builds_out_of_context_with_registered_ports(fake_tools, tmp_path):
    fake_tools(constraint_mhz=100.0)
    phases = []
    report = flow.build_block("telemetry", width=4, clock_mhz=100.0, out_dir=tmp_path / "blk", seed=7,
                              progress=lambda phase, detail: phases.append(phase))
    assert report["timing_met"] and report["core_fmax_mhz"] == 120.5
    assert report["block"] == "telemetry" and report["config"] == flow.BLOCK_CONFIGS["telemetry"]
    assert set(report["utilization"]) == {"LUT4", "FF", "EBR", "DSP"}
    assert json.loads((tmp_path / "blk" / "report.json").read_text())["core_fmax_mhz"] == 120.5
    argv = json.loads((tmp_path / "blk" / "nextpnr-ecp5.argv").read_text())
    assert "--out-of-context" in argv and argv[argv.index("--seed") + 1] == "7" and "--um5g-85k" in argv
    assert (tmp_path / "blk" / "top.lpf").read_text() == 'FREQUENCY PORT "clk" 100 MHZ;\n'
    il = (tmp_path / "blk" / "top.il").read_text()
    assert "reg_i_event__valid" in il                       # the input's register stage
    assert {"elaborate", "place and route"} <= set(phases)


def test_a_block_that_misses_its_clock_raises_with_the_report_written(fake_tools, tmp_path):
    fake_tools(constraint_mhz=400.0)
    with pytest.raises(flow.TimingNotMet, match="block telemetry .* 120.5 MHz < 400"):
        flow.build_block("telemetry", width=4, clock_mhz=400.0, out_dir=tmp_path / "blk")
    assert not json.loads((tmp_path / "blk" / "report.json").read_text())["timing_met"]


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "dsp"}, "block 'dsp': one of parser"),
    ({"name": "parser", "width": 5}, "width 5: 4, 8 or 16"),
    ({"name": "parser", "device": "LFE5U-12F"}, "device 'LFE5U-12F'"),
    ({"name": "parser", "clock_mhz": 0}, "clock_mhz 0: 1..500"),
    ({"name": "parser", "router": "router3"}, "router 'router3': one of router1, router2"),
])
def test_a_bad_block_build_argument_is_named_before_any_tool_runs(kwargs, message):
    with pytest.raises(flow.BuildError, match=message):
        flow.build_block(**kwargs)


def test_every_block_elaborates_behind_registered_ports():
    from amaranth.back import rtlil
    from wirespeed.hdl.bus.registered import RegisteredPorts
    for name in ("telemetry", "router"):
        block = flow.make_block(name, 4, 100_000_000)
        top = RegisteredPorts(block)
        ports = {"__".join(map(str, path)): member.flow for path, member, _ in block.signature.flatten(block)}
        assert {n: m.flow for n, m in top.signature.members.items()} == ports
        assert "module \\top" in rtlil.convert(top, name="top")


def test_the_critical_path_split_is_read_from_the_log():
    log = "Info: Critical path report for clock 'clk':\nInfo:  1.0  1.0  Source a\nInfo: 4.2 ns logic, 34.0 ns routing\n"
    assert flow.critical_path(log) == {"logic_ns": 4.2, "routing_ns": 34.0, "total_ns": 38.2}
    assert flow.critical_path("") is None


def test_the_cli_builds_a_block_instead_of_a_board(fake_tools, tmp_path, capsys):
    from wirespeed.host.tools import cli
    fake_tools(constraint_mhz=100.0)
    args = cli.build_parser().parse_args(["build", "--block", "telemetry", "--width", "4", "--clock-mhz", "100",
                                          "--out", str(tmp_path / "blk"), "--json"])
    assert flow.run(args)["block"] == "telemetry"
    args = cli.build_parser().parse_args(["build", "--block", "telemetry", "--width", "4", "--clock-mhz", "100",
                                          "--out", str(tmp_path / "blk")])
    flow.run(args)
    printed = capsys.readouterr().out
    assert "Fmax: 120.5 MHz, timing met" in printed and "LUT4:" in printed
    args = cli.build_parser().parse_args(["build", "--block", "telemetry", "--board", "ecpix5"])
    with pytest.raises(flow.BuildError, match="not both"):
        flow.run(args)
    args = cli.build_parser().parse_args(["build", "--json"])
    with pytest.raises(flow.BuildError, match="--board or --block is required"):
        flow.run(args)
