"""``wirespeed bench`` on the RTL: the figures it reports are the ones the specification promises."""

import json

import pytest

from wirespeed.hdl.parser import DESC_LATENCY_CYCLES
from wirespeed.host.cli import main

pytestmark = pytest.mark.rtl


def test_bench_parser_rtl_json(capsys):
    assert main(["bench", "--uri", "sim", "--accesses", "100", "--width", "4", "--packets", "20",
                 "--model-requests", "100", "--limiter-requests", "0", "--placement-capacity", "64",
                 "--router-requests", "0", "--maglev-backends", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = {r["mix"]: r for r in report["parser_rtl"]}
    assert set(runs) == {"realistic", "worst_case"}
    for r in runs.values():
        assert r["width_bytes"] == 4 and r["packets"] == 20
        assert r["beats_per_cycle"] == 1.0 and r["cycles"] == r["beats"]
        assert set(r["descriptor_latency_cycles"].values()) == {DESC_LATENCY_CYCLES}
        assert r["descriptor_mismatches"] == 0
    assert report["register_access"]["sim"]["cycles_per_access"] == 5.0


def test_bench_limiter_rtl_json(capsys):
    """One decision per cycle at every hot-tenant share, each verdict LIMIT_LATENCY_CYCLES after its request."""
    from wirespeed.hdl.limiter import LIMIT_LATENCY_CYCLES
    assert main(["bench", "--uri", "model", "--accesses", "10", "--width", "--model-requests", "10",
                 "--limiter-requests", "600", "--placement-capacity", "1024", "--router-requests", "0",
                 "--maglev-backends", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["hot_fraction"] for r in report["limiter_rtl"]] == [0.0, 0.5, 1.0]
    for r in report["limiter_rtl"]:
        assert r["requests"] == r["cycles"] == 600 and r["decisions_per_cycle"] == 1.0
        assert set(r["latency_cycles"].values()) == {LIMIT_LATENCY_CYCLES}
        assert r["verdict_mismatches"] == 0
        assert r["statuses"].get("200") and r["statuses"].get("429"), r["statuses"]
    fill, half = report["placement"]
    assert fill["capacity"] == 1024 and fill["stopped_at_table_full"] and fill["load_factor"] >= 0.90
    assert half == {**half, "capacity": 2048, "keys": 1024, "stopped_at_table_full": False}


def test_bench_router_rtl_json(capsys):
    """One request per cycle, each verdict ROUTE_LATENCY_CYCLES after its request, all equal to the model."""
    from wirespeed.hdl.router import ROUTE_LATENCY_CYCLES
    assert main(["bench", "--uri", "model", "--accesses", "10", "--width", "--model-requests", "10",
                 "--limiter-requests", "0", "--placement-capacity", "64", "--router-requests", "800",
                 "--maglev-backends", "1000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    r = report["router_rtl"]
    assert r["requests"] == r["cycles"] == 800 and r["requests_per_cycle"] == 1.0
    assert set(r["latency_cycles"].values()) == {ROUTE_LATENCY_CYCLES}
    assert r["verdict_mismatches"] == 0 and r["routed"] and r["unavailable"]
    (build,) = report["maglev_build"]
    assert (build["m"], build["backends"]) == (65537, 1000) and build["best_ms"] > 0
