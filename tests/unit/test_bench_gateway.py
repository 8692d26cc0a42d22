"""``wirespeed bench --gateway`` (host/tools/bench_gateway.py): the schedule, percentiles and added latency; the
open-loop generator against an in-process server (it sends on schedule while nothing has answered, bounds every run
by a deadline, and counts failures as failures); and one short run of the whole command through the CLI.

No test asserts a latency value: the figures depend on the machine."""

import asyncio
import json
import math

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from wirespeed.host.tools import bench_gateway as bg
from wirespeed.host.tools.cli import main

CAP_S = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, CAP_S))


# -- pure parts -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, seconds, n", [(500, 5, 2500), (1000, 0.5, 500), (3, 1, 3), (50, 1, 50),
                                              (1000, 0.0001, 1)])
def test_schedule_is_evenly_spaced(rate, seconds, n):
    s = bg.schedule(rate, seconds)
    assert s.size == n
    assert s[0] == 0.0
    if n > 1:
        assert np.allclose(np.diff(s), 1.0 / rate)
        assert s[-1] < seconds


@pytest.mark.parametrize("rate, seconds", [(0, 1), (-5, 1), (100, 0), (100, -1)])
def test_schedule_rejects_nonpositive(rate, seconds):
    with pytest.raises(ValueError):
        bg.schedule(rate, seconds)


def test_percentiles_are_nearest_rank_in_ms():
    lat = np.arange(1, 1001) / 1e3                 # 1 ms … 1000 ms
    np.random.default_rng(1).shuffle(lat)
    assert bg.latency_percentiles(lat) == {"p50_ms": 500.0, "p99_ms": 990.0, "p999_ms": 999.0}


def test_failures_count_as_infinitely_slow():
    lat = np.full(1000, 0.001)
    lat[:5] = np.inf                               # 0.5 % failed: p99 still on a success, p99.9 on a failure
    p = bg.latency_percentiles(lat)
    assert p["p50_ms"] == 1.0 and p["p99_ms"] == 1.0 and p["p999_ms"] is None
    lat[:600] = np.inf                             # most failed: even the median is a failure
    assert bg.latency_percentiles(lat)["p50_ms"] is None
    assert bg.latency_percentiles([]) == {"p50_ms": None, "p99_ms": None, "p999_ms": None}


def test_added_is_target_minus_direct():
    direct = {"p50_ms": 1.0, "p99_ms": 2.5, "p999_ms": 4.0}
    gw = {"p50_ms": 1.25, "p99_ms": 2.0, "p999_ms": None}
    assert bg.added_latency(gw, direct) == {"added_p50_ms": 0.25, "added_p99_ms": -0.5, "added_p999_ms": None}
    assert bg.added_latency(direct, {"p50_ms": None, "p99_ms": 1.0, "p999_ms": 1.0})["added_p50_ms"] is None


def test_server_timing_parsed():
    value = ('device;dur=0.084;desc="device decision", queue;dur=0.000;desc="upstream pool wait", '
             'ttft;dur=0.512;desc="first byte from upstream", total;dur=0.801;desc="total"')
    assert bg.parse_server_timing(value) == {"device": 0.084, "queue": 0.0, "ttft": 0.512, "total": 0.801}
    assert bg.parse_server_timing(value.encode("latin-1")) == bg.parse_server_timing(value)


def test_summary_parses_the_server_timing_values_the_run_kept():
    # The generator keeps each answer's header value as it came and parses them only in summary().
    values = [b"device;dur=0.030, ttft;dur=0.100, total;dur=0.200",
              b"device;dur=0.050, ttft;dur=0.300, total;dur=0.500"]
    run = bg.LoadRun(rate=2, seconds=1.0, latencies=np.full(2, 0.001), lag=np.zeros(2), errors=0, timeouts=0,
                     non_200=0, ok=2, span_s=1.0, timings=values)
    st = run.summary()["server_timing_ms"]
    assert st["device"] == {"p50": 0.04, "p99": 0.0498}
    assert st["own"] == {"p50": 0.15, "p99": 0.199}
    parsed = bg.LoadRun(rate=2, seconds=1.0, latencies=np.full(2, 0.001), lag=np.zeros(2), errors=0, timeouts=0,
                        non_200=0, ok=2, span_s=1.0, timings=[bg.parse_server_timing(v) for v in values])
    assert parsed.summary()["server_timing_ms"] == st


def test_summary_sustained_only_without_failures_and_at_rate():
    lat = np.full(100, 0.002)
    ok = bg.LoadRun(rate=100, seconds=1.0, latencies=lat, lag=np.zeros(100), errors=0, timeouts=0, non_200=0,
                    ok=100, span_s=1.0)
    row = ok.summary()
    assert row["sustained"] and row["achieved_rps"] == 100.0 and row["requests"] == 100
    late = bg.LoadRun(rate=100, seconds=1.0, latencies=lat, lag=np.zeros(100), errors=0, timeouts=0, non_200=0,
                      ok=100, span_s=2.0)      # answered, but at half the offered rate
    assert late.summary()["achieved_rps"] == 50.0 and not late.summary()["sustained"]
    lat2 = lat.copy()
    lat2[0] = np.inf
    one_error = bg.LoadRun(rate=100, seconds=1.0, latencies=lat2, lag=np.zeros(100), errors=1, timeouts=1,
                           non_200=0, ok=99, span_s=1.0)
    assert not one_error.summary()["sustained"]


def test_configs_name_the_mock_and_a_roomy_tenant():
    from wirespeed.host.gateway.config import parse_config
    cfg = parse_config(bg.gateway_config("http://127.0.0.1:9999", device="model"), "<bench>")
    assert cfg.device == "model"
    assert [t.key for t in cfg.tenants] == [bg.TENANT_KEY]
    assert cfg.tenants[0].rates["requests_per_s"] >= 50 * max(bg.DEFAULT_RATES)
    assert cfg.pools[0].backends == ("http://127.0.0.1:9999",)
    lite = bg.litellm_config("http://127.0.0.1:9999", "sk-abc")
    assert "api_base: http://127.0.0.1:9999/v1" in lite and "model: openai/gpt-4o-mini" in lite
    assert "master_key: sk-abc" in lite


# -- the generator against an in-process server ---------------------------------------------------------------------


async def _serve(handler):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1/chat/completions"


def _client(kind: str):
    """The generator's client of ``kind`` (``bench_gateway.CLIENTS``), as an async context manager."""
    from wirespeed.host.tools.bench_client import RawClient
    return RawClient(limit=64) if kind == "raw" else aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))


@pytest.mark.parametrize("kind", bg.CLIENTS)
def test_open_loop_sends_on_schedule_while_nothing_answers(kind):
    """The server answers nothing until every scheduled request has arrived: an open-loop generator gets there (and
    then all succeed); a closed-loop one would wait for answers first and time out."""
    async def test():
        arrived, all_in = [], asyncio.Event()
        n = 20

        async def handler(request):
            body = await request.json()
            arrived.append((request.headers["x-session-id"], request.headers["Authorization"], body["max_tokens"]))
            if len(arrived) == n:
                all_in.set()
            await all_in.wait()
            return web.json_response({"ok": True})
        runner, url = await _serve(handler)
        try:
            async with _client(kind) as s:
                result = await bg.open_loop(s, url, 200, n / 200, grace_s=5.0)
        finally:
            await runner.cleanup()
        return arrived, result
    arrived, result = run(test())
    assert len(arrived) == 20
    assert len({a[0] for a in arrived}) == 20                 # x-session-id varies
    assert {a[1] for a in arrived} == {f"Bearer {bg.TENANT_KEY}"} and {a[2] for a in arrived} == {8}
    assert result.ok == 20 and result.errors == 0 and result.non_200 == 0
    assert np.isfinite(result.latencies).all()


@pytest.mark.parametrize("kind", bg.CLIENTS)
def test_measure_interleaves_the_targets_in_rounds_and_pools_each_ones_slices(kind):
    """Three rounds over two targets: the slices go A, B, A, B, A, B (the warm-ups first, in order), and each
    target's row pools its three slices."""
    async def test():
        arrivals = []

        def handler(name):
            async def answer(request):
                arrivals.append((name, request.headers["x-session-id"]))
                return web.json_response({"ok": True})
            return answer
        (ra, ua), (rb, ub) = await _serve(handler("a")), await _serve(handler("b"))
        marks = []
        try:
            targets = [bg.Target("a", ua, None, bg.TENANT_KEY, None), bg.Target("b", ub, None, bg.TENANT_KEY, None)]
            rows = await bg.measure(targets, 100, 0.3, rounds=3, warmup_s=0.05, grace_s=2.0, client=kind,
                                    between=lambda: marks.append(len(arrivals)))
        finally:
            await ra.cleanup()
            await rb.cleanup()
        return arrivals, marks, rows
    arrivals, marks, rows = run(test())
    # Each stretch between two marks is one warm-up or slice, all to one target.
    stretches = [arrivals[a:b] for a, b in zip(marks, marks[1:] + [len(arrivals)])]
    assert [{name for name, _ in st} for st in stretches] == [{"a"}, {"b"}] * 4
    assert all(sid.startswith("benchw-") for st in stretches[:2] for _, sid in st)
    assert [len(st) for st in stretches[2:]] == [10] * 6
    assert [r["requests"] for r in rows] == [30, 30] and all(r["ok"] == 30 and r["errors"] == 0 for r in rows)


def test_pooled_runs_keep_every_request_and_sum_the_counts():
    a = bg.LoadRun(rate=10, seconds=1, latencies=np.array([0.001, np.inf]), lag=np.array([0.0, 0.1]), errors=1,
                   timeouts=1, non_200=0, ok=1, span_s=1.0, statuses={200: 1})
    b = bg.LoadRun(rate=10, seconds=2, latencies=np.array([0.003]), lag=np.array([0.2]), errors=0, timeouts=0,
                   non_200=1, ok=0, span_s=1.5, statuses={500: 1}, timings=[{"total": 1.0}])
    p = bg.LoadRun.pooled([a, b])
    assert list(p.latencies) == [0.001, np.inf, 0.003] and list(p.lag) == [0.0, 0.1, 0.2]
    assert (p.seconds, p.span_s, p.errors, p.timeouts, p.non_200, p.ok) == (3, 2.5, 1, 1, 1, 1)
    assert p.statuses == {200: 1, 500: 1} and p.timings == [{"total": 1.0}]


def test_the_due_timer_never_wakes_early_and_a_past_instant_returns_at_once():
    """The generator's timer (a timerfd armed at an absolute instant): every wait ends at or after its instant, in
    order, and an instant already past does not block. (How late it wakes is a measurement: the report's gen lag.)"""
    import time

    async def test():
        timer = bg.DueTimer.open(asyncio.get_running_loop())
        if timer is None:
            pytest.skip("no timerfd here (not Linux): the generator sleeps with asyncio instead")
        woke = []
        try:
            due = time.perf_counter() + 0.002
            for i in range(50):
                when = due + i * 0.00037                        # mid-millisecond instants
                await timer.wait_until(when)
                woke.append((when, time.perf_counter()))
            await asyncio.wait_for(timer.wait_until(time.perf_counter() - 1.0), 1.0)
        finally:
            timer.close()
        return woke
    woke = run(test())
    assert len(woke) == 50 and all(now >= when for when, now in woke)


@pytest.mark.parametrize("kind", bg.CLIENTS)
def test_open_loop_bounded_by_its_deadline(kind):
    """A server that never answers: the run still ends (at the deadline), and every request is a timeout."""
    async def test():
        async def handler(request):
            await asyncio.Event().wait()
        runner, url = await _serve(handler)
        try:
            async with _client(kind) as s:
                return await bg.open_loop(s, url, 100, 0.05, grace_s=0.3)
        finally:
            await runner.cleanup()
    result = run(test())
    assert result.latencies.size == 5
    assert result.timeouts == 5 and result.errors == 5 and result.ok == 0
    row = result.summary()
    assert row["p50_ms"] is None and not row["sustained"]


@pytest.mark.parametrize("kind", bg.CLIENTS)
def test_open_loop_counts_non_200_and_errors_apart(kind):
    async def test():
        async def handler(request):
            return web.json_response({"error": {"message": "busy"}}, status=503)
        runner, url = await _serve(handler)
        try:
            async with _client(kind) as s:
                refused = await bg.open_loop(s, url, 100, 0.05, grace_s=2.0)
                # Nothing listens at the next URL: connection errors, not answers.
                port = bg._free_port()
                gone = await bg.open_loop(s, f"http://127.0.0.1:{port}/v1/chat/completions", 100, 0.05,
                                          grace_s=2.0)
        finally:
            await runner.cleanup()
        return refused, gone
    refused, gone = run(test())
    assert refused.non_200 == 5 and refused.errors == 0 and refused.ok == 0 and refused.statuses == {503: 5}
    assert not refused.summary()["sustained"] and refused.summary()["p50_ms"] is None
    assert gone.errors == 5 and gone.timeouts == 0 and gone.non_200 == 0


# -- the whole command ------------------------------------------------------------------------------------------------


def test_bench_gateway_cli_short_run(capsys):
    """One short run end to end (mock and gateway processes, about 5 s): the JSON's shape, and that every request
    was answered. The figures themselves are not asserted."""
    assert main(["bench", "--gateway", "--gateway-rates", "50", "--gateway-seconds", "1", "--gateway-uri", "software",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["gateway"]
    gw = report["gateway"]
    assert gw["rates"] == [50] and gw["rounds"] == 5 and gw["client"] == "raw" and gw["target_p99_added_ms"] == 0.5
    assert gw["machine"]["cpu_count"] >= 1 and gw["machine"]["python"]
    assert gw["target_met"] is None                 # 1 000 req/s was not offered
    assert [r["target"] for r in gw["rows"]] == ["direct", "passthrough", "software"]
    for r in gw["rows"]:
        assert r["offered_rps"] == 50 and r["requests"] == 50 and r["errors"] == 0 and r["non_200"] == 0
        for key in ("achieved_rps", "p50_ms", "p99_ms", "p999_ms"):
            assert isinstance(r[key], float) and math.isfinite(r[key])
        cpu = r["cpu_us_per_request"]
        assert cpu["backend"] > 0 and cpu["generator"] > 0
        assert (cpu["target"] is None) == (r["target"] == "direct")
    assert gw["rows"][2]["cpu_us_per_request"]["target"] > 0
    sw = gw["rows"][2]
    for key in ("added_p50_ms", "added_p99_ms", "added_p999_ms"):
        assert sw[key] == pytest.approx(sw[key.replace("added_", "")] - gw["rows"][0][key.replace("added_", "")],
                                        abs=1e-3)
    assert sw["fallbacks"] == 0
    assert set(sw["server_timing_ms"]) >= {"device", "total", "own"}
