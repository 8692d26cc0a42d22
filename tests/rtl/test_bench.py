"""``wirespeed bench`` on the RTL: the figures it reports are the ones the specification promises."""

import json

import pytest

from wirespeed.hdl.parser import DESC_LATENCY_CYCLES
from wirespeed.host.cli import main

pytestmark = pytest.mark.rtl


def test_bench_parser_rtl_json(capsys):
    assert main(["bench", "--uri", "sim", "--accesses", "100", "--width", "4", "--packets", "20",
                 "--model-requests", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = {r["mix"]: r for r in report["parser_rtl"]}
    assert set(runs) == {"realistic", "worst_case"}
    for r in runs.values():
        assert r["width_bytes"] == 4 and r["packets"] == 20
        assert r["beats_per_cycle"] == 1.0 and r["cycles"] == r["beats"]
        assert set(r["descriptor_latency_cycles"].values()) == {DESC_LATENCY_CYCLES}
        assert r["descriptor_mismatches"] == 0
    assert report["register_access"]["sim"]["cycles_per_access"] == 5.0
