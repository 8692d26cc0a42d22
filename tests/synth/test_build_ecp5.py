"""ECPIX-5 builds with the real tools: YoWASP Yosys and nextpnr-ecp5, which ``make test`` installs (the ``synth``
extra).

Two builds, sized for the CI budget (``docs/boards.md``, "Measured"):
- the **bring-up core** (UART bridge, register bank, ID block) through the whole flow: synthesis, place and route,
  the timing check at the board's bring-up clock, and the bitstream;
- the **full core** (W = 4, small tables: the tables are EBR, the logic is what takes the time) through synthesis and
  nextpnr's packing, which must fit the LFE5UM5G-85F. A utilisation check, so it maps with ``abc-nodch``: classic
  ABC without its delay-oriented structural choices, which were most of ABC's time on this core, for 1.5 %
  more LUT4 (``flow.abc_script_nodch``; the default ``abc`` mapping is measured in ``docs/boards.md``).

The full core's own place and route is not here: at 86-92 % of the 85F's LUTs (before 4-input LUTs became the
default; 82.8 % since) its placement took 32-34 min on this machine and its routing did not converge
(``docs/boards.md``), so no test can assert its timing within the CI budget yet. Skipped, saying why, only when the
tools are missing.
"""

import pytest

from wirespeed.hdl.platform.boards import BOARDS
from wirespeed.host.tools import build as flow
pytestmark = [pytest.mark.synth, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _tools():
    try:
        flow.find_tools()
    except flow.ToolMissing as exc:
        pytest.skip(f"synthesis tools missing: {exc}; install them with pip install -e '.[synth]'")


def test_the_bringup_core_builds_for_ecpix5_and_meets_timing(tmp_path):
    board = BOARDS["ecpix5"]
    report = flow.build("ecpix5", bringup=True, out_dir=tmp_path)
    assert report["config"]["features"] == []
    assert report["clock"]["core_mhz"] == board.bringup_clock_hz / 1e6
    assert report["timing_met"], report["fmax"]
    assert report["core_fmax_mhz"] >= board.bringup_clock_hz / 1e6
    assert (tmp_path / "top.bit").stat().st_size > 100_000
    assert report["bridge"].endswith("UartAxiLiteBridge")
    # The register bank and the bridge were kept, not optimised away.
    assert report["utilization"]["LUT4"]["used"] > 2_000 and report["utilization"]["FF"]["used"] > 1_000


def test_the_full_core_fits_the_ecpix5(tmp_path):
    report = flow.build("ecpix5", tenants=1024, maglev=1024, out_dir=tmp_path, pack_only=True, lut_mapper="abc-nodch")
    assert report["lut_mapper"] == "abc-nodch"
    assert report["config"]["width_bytes"] == BOARDS["ecpix5"].width == 4
    assert set(report["config"]["features"]) >= {"parser", "limiter", "router", "frontend", "submit"}
    util = report["utilization"]
    for label in ("LUT4", "FF", "EBR", "DSP"):
        assert util[label]["used"] <= util[label]["available"], (label, util[label])
    # The datapath was kept, not optimised away (the parser alone is about 28 k LUT4 at W = 4).
    assert util["LUT4"]["used"] > 50_000 and util["DSP"]["used"] > 0
    # The EBR census that guards the budget before the tools run is not below what the netlist uses.
    assert util["EBR"]["used"] <= report["ebr_estimate"]["total"]
    assert report["timing_met"] is None and report["files"]["bitstream"] is None
