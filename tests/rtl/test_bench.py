"""``wirespeed bench`` on the RTL: the figures it reports are the ones the specification promises."""

import json

import pytest

from wirespeed.hdl.parser.header_parser import DESC_LATENCY_CYCLES
from wirespeed.host.tools.cli import main

pytestmark = pytest.mark.rtl


def test_bench_parser_rtl_json(capsys):
    assert main(["bench", "--uri", "sim", "--accesses", "100", "--width", "4", "--packets", "20",
                 "--model-requests", "100", "--limiter-requests", "0", "--placement-capacity", "64",
                 "--router-requests", "0", "--maglev-backends", "--core-packets", "0",
                 "--core-model-requests", "0", "--baseline-requests", "0", "--json"]) == 0
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
    from wirespeed.hdl.limiter.rate_limiter import LIMIT_LATENCY_CYCLES
    assert main(["bench", "--uri", "model", "--accesses", "10", "--width", "--model-requests", "10",
                 "--limiter-requests", "600", "--placement-capacity", "1024", "--router-requests", "0",
                 "--maglev-backends", "--core-packets", "0", "--core-model-requests", "0", "--baseline-requests", "0",
                 "--json"]) == 0
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
    from wirespeed.hdl.router.hash_router import ROUTE_LATENCY_CYCLES
    assert main(["bench", "--uri", "model", "--accesses", "10", "--width", "--model-requests", "10",
                 "--limiter-requests", "0", "--placement-capacity", "64", "--router-requests", "800",
                 "--maglev-backends", "1000", "--core-packets", "0", "--core-model-requests", "0",
                 "--baseline-requests", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    r = report["router_rtl"]
    assert r["requests"] == r["cycles"] == 800 and r["requests_per_cycle"] == 1.0
    assert set(r["latency_cycles"].values()) == {ROUTE_LATENCY_CYCLES}
    assert r["verdict_mismatches"] == 0 and r["routed"] and r["unavailable"]
    (build,) = report["maglev_build"]
    assert (build["m"], build["backends"]) == (65537, 1000) and build["best_ms"] > 0


def test_bench_core_rtl_json(capsys):
    """The whole core: one beat per cycle in every mix and mode, each verdict at most 16 cycles after the beat holding
    the last header byte (DECISION_LATENCY_CYCLES exactly, lookaside), every record and egress packet as the model
    says."""
    from wirespeed.hdl.pipeline.offload_pipeline import DECISION_LATENCY_CYCLES
    assert main(["bench", "--uri", "model", "--accesses", "10", "--width", "--model-requests", "10",
                 "--limiter-requests", "0", "--placement-capacity", "64", "--router-requests", "0",
                 "--maglev-backends", "--core-packets", "60", "--core-model-requests", "50",
                 "--baseline-requests", "200", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    runs = {(r["mode"], r["mix"]): r for r in report["core_rtl"]}
    assert set(runs) == {(m, x) for m in ("lookaside", "inline") for x in ("realistic", "worst_case")}
    for (mode, mix), r in runs.items():
        assert r["packets"] == 60 and r["beats_per_cycle"] == 1.0 and r["cycles"] == r["beats"], r
        lat = r["decision_latency_cycles"]
        assert lat["max"] <= 16 and lat["timed"] == 60, r
        if mode == "lookaside":
            assert {lat[k] for k in ("p50", "p99", "p99.99", "max")} == {DECISION_LATENCY_CYCLES}, r
        assert r["verdict_mismatches"] == r["egress_mismatches"] == r["tuser_mismatches"] == 0, r
    statuses = runs["lookaside", "realistic"]["statuses"]
    assert statuses.get("200") and len(statuses) > 1, statuses         # rejects too (400, 401, 503)
    assert report["core_sim_cycles_per_s"] > 0
    assert report["core_model"]["requests_per_s"] > 0 and report["software_baseline"]["requests_per_s"] > 0


def test_demo_sim_matches_model():
    """``wirespeed demo`` on the RTL: every verdict table equals the model's, and s_axis takes one beat per cycle."""
    from wirespeed.host.tools import demo
    sim = demo.run("sim", requests=300, seed=5, stream_packets=100)
    model = demo.run("model", requests=300, seed=5)
    for key in ("tenants", "reasons", "session_affinity", "telemetry", "latency_histogram", "frames"):
        assert sim[key] == model[key], key
    t = sim["throughput"]
    assert t["packets"] == 100 and t["beats_per_cycle"] == 1.0 and t["egress_mismatches"] == 0
    assert t["decision_latency_cycles"]["max"] <= 16
    assert model["throughput"] is None
