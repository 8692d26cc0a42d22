"""``wirespeed demo`` on the model: the gateway it configures decides as docs/pipeline.md says, and the report is
deterministic for a seed."""

import json

import pytest

from wirespeed.host.tools import demo
from wirespeed.host.tools.cli import main

SEED = 1


@pytest.fixture(scope="module")
def report():
    return demo.run("model", requests=1000, seed=SEED)


def rows(report):
    return {r["tenant"]: r for r in report["tenants"]}


def test_demo_cli_json(capsys):
    assert main(["demo", "--uri", "model", "--json", "--requests", "300", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "", "no progress or status with --json"
    result = json.loads(captured.out)
    assert result["uri"] == "model" and result["seed"] == 3 and result["requests"] == 300
    assert {"tenants", "reasons", "latency_histogram", "session_affinity", "telemetry", "throughput"} <= set(result)
    assert sum(r["requests"] for r in result["tenants"]) == 300
    assert result["throughput"] is None and "no stream timing" in result["throughput_note"]


def test_demo_cli_text(capsys):
    assert main(["demo", "--uri", "model", "--requests", "200"]) == 0
    captured = capsys.readouterr()
    assert "mallory" in captured.out and "rate_limited" in captured.out
    assert "hardware latency histogram" in captured.out
    assert "throughput: not measured" in captured.out
    assert "requests classified: 200/200" in captured.err


def test_demo_bad_requests_is_one_line(capsys):
    assert main(["demo", "--uri", "model", "--requests", "0"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("wirespeed demo: WirespeedError: --requests")


def test_every_request_is_counted(report):
    assert sum(r["requests"] for r in report["tenants"]) == report["requests"] == 1000
    assert report["telemetry"]["events"] == 1000
    assert sum(e["count"] for e in report["reasons"]) == 1000
    assert report["latency_histogram"]["count"] == 1000
    telemetry = report["telemetry"]["reasons"]
    assert {e["reason"]: e["count"] for e in report["reasons"]} == telemetry
    for r in report["tenants"]:
        assert r["requests"] == r["forward"] + r["429"] + r["other"]
        assert r["other"] == r["503"] + r["400"] + r["401"] + r["431"] + r["punt"]
    assert report["frames"] > 0


def test_abusive_tenant_is_rate_limited(report):
    mallory = rows(report)["mallory"]
    assert mallory["429"] > mallory["requests"] // 2
    assert rows(report)["acme"]["429"] == 0 and rows(report)["globex"]["429"] == 0
    limited = [e for e in report["reasons"] if e["reason"] == "rate_limited"]
    assert limited and limited[0]["status"] == 429


def test_bad_traffic_is_rejected(report):
    r = rows(report)
    smuggling = r["(smuggling)"]
    assert smuggling["forward"] == 0 and smuggling["400"] > smuggling["requests"] * 0.8
    unknown = r["(unknown key)"]
    assert unknown["requests"] == unknown["401"] > 0
    assert r["(malformed)"]["400"] > 0


def test_drained_pool_gives_503(report):
    assert sum(r["503"] for r in report["tenants"]) > 0
    assert report["pools"]["catalog"]["up"] == []
    assert not any(b.startswith("catalog/") for r in report["tenants"] for b in r["backends"])


def test_affinity(report):
    a = report["session_affinity"]
    assert a["sessions"] >= 8 and a["requests"] > 0
    assert a["split_sessions"] == [] and a["sessions_on_one_backend"] == a["sessions"]
    assert len(set(a["backend_of"].values())) > 1, "sessions spread over the anthropic pool"
    # Tenant affinity: an OpenAI-style tenant's chat requests all land on one chat backend.
    chat = [b for b in rows(report)["acme"]["backends"] if b.startswith("chat/")]
    assert len(chat) == 1


def test_latency_histogram_units(report):
    h = report["latency_histogram"]
    ns_per_cycle = 1e9 / report["core"]["clock_hz"]
    for b in h["buckets"]:
        assert b["low_ns"] == b["low_cycles"] * ns_per_cycle and b["count"] > 0
    assert 0 < h["max_cycles"] < 256


def test_deterministic_for_a_seed(report):
    again = demo.run("model", requests=1000, seed=SEED)
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_seconds"}   # noqa: E731
    assert strip(again) == strip(report)
    other = demo.run("model", requests=1000, seed=SEED + 1)
    assert other["tenants"] != report["tenants"]
