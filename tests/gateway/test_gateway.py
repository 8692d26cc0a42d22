"""``wirespeed gateway`` called as users call it: the official ``openai`` SDK, ``/metrics`` through prometheus-client's
parser, and bad input on a raw socket. The gateway runs on ``"software"`` in front of two mock backends on loopback
(``tests/support/gateway_rig.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import socket
import time

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wirespeed.host.errors import TransportError
from wirespeed.host.gateway.config import GatewayConfigError
from wirespeed.host.gateway.server import GatewayOptions
from tests.support.gateway_rig import GatewayRig

TENANTS = """
[[tenants]]
name = "acme"
key = "sk-acme-1"
requests_per_minute = 6000
tokens_per_minute = 1000000

[[tenants]]
name = "slow"
key = "sk-slow-1"
requests_per_minute = 2
"""
CHAT = dict(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "Say hello to the gateway."}])


@pytest.fixture(scope="module")
def rig():
    with GatewayRig(TENANTS) as r:
        yield r


def _without_ids(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("id", "created")}


def test_chat_non_streaming_bodies_arrive_unchanged(rig):
    client = rig.client("sk-acme-1")
    raw = client.chat.completions.with_raw_response.create(**CHAT, extra_headers={"x-session-id": "s-1"})
    completion = raw.parse()
    sent = raw.http_response.request.content
    served_by = raw.headers["x-mock-backend"]
    mock = next(m for m in rig.mocks if m.name == served_by)
    received = mock.requests[-1]
    assert received.path == "/v1/chat/completions"
    assert received.body == sent                       # the request body, byte for byte
    assert "authorization" not in {k.lower() for k in received.headers}   # the tenant's key stays at the gateway
    assert "x-token-estimate" not in {k.lower() for k in received.headers}
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert completion.usage.completion_tokens == 5
    # The response body is the backend's: the same request straight to that mock gives the same object.
    direct = rig.call(_post_json(mock.url + "/v1/chat/completions", json.loads(sent)))
    assert _without_ids(json.loads(raw.http_response.content)) == _without_ids(direct)


async def _post_json(url: str, payload: dict) -> dict:
    import aiohttp
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=payload) as r:
            return await r.json()


def test_server_timing_names_every_stage(rig):
    raw = rig.client("sk-acme-1").chat.completions.with_raw_response.create(**CHAT)
    stages = dict(re.findall(r'(\w+);dur=([0-9.]+)', raw.headers["server-timing"]))
    assert set(stages) == {"device", "queue", "connect", "ttft", "total"}
    assert 0 < float(stages["device"]) <= float(stages["total"])
    assert float(stages["ttft"]) <= float(stages["total"])


def test_stream_passes_chunks_through_as_they_arrive(rig):
    hold = rig.call(_event())
    for m in rig.mocks:
        m.hold = hold
    try:
        stream = rig.client("sk-acme-1").chat.completions.create(
            model="gpt-4o-mini", max_tokens=4, stream=True, messages=[{"role": "user", "content": "Count."}])
        chunks = iter(stream)
        first = next(chunks)
        # The mock is holding back its last content chunk: the first one came through before it was produced.
        assert not hold.is_set()
        assert first.choices[0].delta.content == "tok0"
        rig.loop.call_soon_threadsafe(hold.set)
        rest = list(chunks)
    finally:
        for m in rig.mocks:
            m.hold = None
    text = first.choices[0].delta.content + "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == "tok0 tok1 tok2 tok3"
    usage = [c.usage for c in rest if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 4   # the gateway asked for include_usage


async def _event() -> asyncio.Event:
    return asyncio.Event()


def test_embeddings_and_models(rig):
    client = rig.client("sk-acme-1")
    raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["alpha", "beta"])
    emb = raw.parse()
    assert [d.index for d in emb.data] == [0, 1]
    assert len(emb.data[0].embedding) == 8 and emb.data[0].embedding != emb.data[1].embedding
    mock = next(m for m in rig.mocks if m.name == raw.headers["x-mock-backend"])
    assert mock.requests[-1].body == raw.http_response.request.content
    models = client.models.list()
    assert [m.id for m in models.data] == ["mock-gpt"]


def test_unknown_key_is_401(rig):
    with pytest.raises(openai.AuthenticationError) as err:
        rig.client("sk-nobody").chat.completions.create(**CHAT)
    assert err.value.status_code == 401
    assert err.value.body["code"] == "unknown_tenant"


def test_rate_limit_is_429_with_retry_after(rig):
    client = rig.client("sk-slow-1")
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as err:
        client.models.list()
    headers = err.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert int(headers["retry-after-ms"]) <= int(headers["retry-after"]) * 1000
    assert err.value.body["code"] == "rate_limited"


def _metrics(rig) -> dict:
    import urllib.request
    with urllib.request.urlopen(rig.metrics_url, timeout=10) as r:
        text = r.read().decode()
    return {s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict, name: str, **labels) -> float:
    want = [f"|{k}={v}" for k, v in labels.items()]
    return sum(v for k, v in samples.items() if k.split("|")[0] == name and all(w in k for w in want))


def test_metrics_parse_and_move(rig):
    before = _metrics(rig)
    rig.client("sk-acme-1").chat.completions.create(**CHAT)
    after = _metrics(rig)
    for stage in ("device", "queue", "connect", "ttft", "total"):
        name = "wirespeed_gateway_stage_seconds_count"
        assert _total(after, name, stage=stage, tenant="acme", status="200") == \
            _total(before, name, stage=stage, tenant="acme", status="200") + 1
    assert _total(after, "wirespeed_gateway_added_seconds_count", tenant="acme") == \
        _total(before, "wirespeed_gateway_added_seconds_count", tenant="acme") + 1
    assert _total(after, "wirespeed_device_events_total") == _total(before, "wirespeed_device_events_total") + 1
    assert _total(after, "wirespeed_device_actions_total", action="forward") == \
        _total(before, "wirespeed_device_actions_total", action="forward") + 1
    assert _total(after, "wirespeed_gateway_tokens_total", kind="reserved", tenant="acme") > \
        _total(before, "wirespeed_gateway_tokens_total", kind="reserved", tenant="acme")
    assert _total(after, "wirespeed_device_latency_cycles_count") == _total(after, "wirespeed_device_events_total")
    assert _total(after, "wirespeed_device_clock_hz") == rig.gateway.primary.dev.info().clock_hz > 0


BAD = {
    "bare_lf": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\nAuthorization: Bearer sk-acme-1\r\n\r\n", 400),
    "cl_te": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
              b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n", 400),
    "two_cl": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
               b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}", 400),
    "obs_fold": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\nX-A: 1\r\n  folded\r\n\r\n",
                 400),
    "oversized": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\nX-Big: " + b"a" * 9000
                  + b"\r\n\r\n", 431),
    "bad_chunk_size": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_status_and_a_clean_close(rig, case):
    data, status = BAD[case]
    seen = sum(len(m.requests) for m in rig.mocks)
    answer = rig.raw(data)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
    assert len(body) == length                           # the whole answer, then the close (no <timeout>)
    error = json.loads(body)["error"]
    assert error["code"] and error["message"]
    assert sum(len(m.requests) for m in rig.mocks) == seen    # nothing reached a backend


def test_pipelined_requests_on_one_connection(rig):
    one = (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n\r\n")
    last = one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    answer = rig.raw(one + one + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.endswith(b"}") and answer.lower().count(b"connection: close") == 1   # closed after the last


@contextlib.contextmanager
def _classify_raises(device, exc: Exception):
    """Every classify on the gateway's ``device`` raises ``exc`` while the block runs. An inline device
    (``"software"``) is called directly on the loop, any other through ``_Device.classify``'s coroutine."""
    def broken(block):
        raise exc

    async def broken_async(block, frame=False):
        raise exc
    target, fake = (device.dev, broken) if device.inline else (device, broken_async)
    target.classify = fake
    try:
        yield
    finally:
        del target.classify


def test_fallback_to_software_when_the_device_errors(rig):
    gw = rig.gateway
    dev = gw.primary

    before = _total(_metrics(rig), "wirespeed_gateway_fallback_total", cause="TransportError")
    try:
        with _classify_raises(dev, TransportError("the device stopped answering (test)")):
            completion = rig.client("sk-acme-1").chat.completions.create(**CHAT)
    finally:
        gw._device_down_until = 0.0
    assert completion.usage.completion_tokens == 5
    assert _total(_metrics(rig), "wirespeed_gateway_fallback_total", cause="TransportError") == before + 1


def test_no_backend_is_503():
    with GatewayRig(TENANTS, n_mocks=1, options=GatewayOptions(probe_interval_s=60)) as rig:
        url = rig.mocks[0].url
        rig.call(rig.mocks[0].stop())
        client = rig.client("sk-acme-1")
        for _ in range(4):                 # connect failures, then the device's own 503 once it is marked down
            with pytest.raises(openai.InternalServerError) as err:
                client.chat.completions.create(**CHAT)
            assert err.value.status_code == 503
        assert err.value.body["code"] == "no_backend"
        assert rig.gateway.backends[url].down


def _backend_of(client, session: str) -> str:
    raw = client.chat.completions.with_raw_response.create(**CHAT, extra_headers={"x-session-id": session})
    return raw.headers["x-mock-backend"]


def test_health_flap_moves_only_the_failed_backends_sessions():
    with GatewayRig(TENANTS, n_mocks=2) as rig:
        client = rig.client("sk-acme-1")
        sessions = [f"session-{i}" for i in range(24)]
        home = {s: _backend_of(client, s) for s in sessions}
        assert set(home.values()) == {"mock-1", "mock-2"}
        down = rig.mocks[0]
        url = down.url
        rig.call(down.stop())
        during = {s: _backend_of(client, s) for s in sessions}      # connect failures retried, then marked down
        assert set(during.values()) == {"mock-2"}
        assert rig.gateway.backends[url].down
        assert all(during[s] == home[s] for s in sessions if home[s] == "mock-2")   # nobody else moved
        assert rig.call(down.start()) == url                              # the same address again
        deadline = time.monotonic() + 10
        while rig.gateway.backends[url].down and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not rig.gateway.backends[url].down                # the probe brought it back
        assert {s: _backend_of(client, s) for s in sessions} == home  # the table is restored exactly


def test_chunked_request_body_is_framed_by_llhttp_and_forwarded(rig):
    body = json.dumps(CHAT).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    answer = rig.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     + chunked)
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:300]
    served_by = re.search(rb"x-mock-backend: (\S+)", answer, re.I).group(1).decode()
    assert next(m for m in rig.mocks if m.name == served_by).requests[-1].body == body


async def _messages(url: str, stream: bool) -> tuple[int, bytes]:
    import aiohttp
    payload = {"model": "claude-sonnet-4", "max_tokens": 6, "stream": stream,
               "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/messages", json=payload, headers={"x-api-key": "sk-acme-1"}) as r:
            return r.status, await r.read()


def test_anthropic_messages_streamed_and_settled(rig):
    before = _metrics(rig)
    status, body = rig.call(_messages(rig.base_url, True))
    assert status == 200
    events = [line[7:] for line in body.decode().splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    status, body = rig.call(_messages(rig.base_url, False))
    assert status == 200 and json.loads(body)["usage"]["output_tokens"] == 6
    after = _metrics(rig)
    used = _total(after, "wirespeed_gateway_tokens_total", kind="used", tenant="acme") - \
        _total(before, "wirespeed_gateway_tokens_total", kind="used", tenant="acme")
    usage = json.loads(body)["usage"]
    assert used == 2 * (usage["input_tokens"] + usage["output_tokens"])   # both settled from the backend's usage


def test_upstream_connections_are_warmed_at_start_and_pooled():
    with GatewayRig(TENANTS, n_mocks=1) as rig:
        mock = rig.mocks[0]
        assert [r.path for r in mock.requests] == ["/v1/models"] * rig.gateway.options.warm_connections
        raws = [rig.client("sk-acme-1").chat.completions.with_raw_response.create(**CHAT) for _ in range(3)]
        for raw in raws:                          # no request opened a connection: the warmed ones were used
            stages = dict(re.findall(r'(\w+);dur=([0-9.]+)', raw.headers["server-timing"]))
            assert float(stages["connect"]) == 0.0


def test_nonstandard_backend_status_passes_through_and_counts_as_a_failure():
    with GatewayRig(TENANTS, n_mocks=1, options=GatewayOptions(fail_threshold=100)) as rig:
        rig.mocks[0].fail_status = 599
        answer = rig.raw(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
                         b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 599 \r\n"), answer[:100]
        assert rig.gateway.backends[rig.mocks[0].url].failures == 1


def test_a_stream_cut_by_the_backend_reaches_the_client_as_an_error():
    with GatewayRig(TENANTS, n_mocks=1, options=GatewayOptions(probe_interval_s=60)) as rig:
        mock = rig.mocks[0]
        mock.hold = rig.call(_event())
        stream = rig.client("sk-acme-1").chat.completions.create(
            model="gpt-4o-mini", max_tokens=4, stream=True, messages=[{"role": "user", "content": "Count."}])
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.content == "tok0"
        rig.call(mock.stop())                     # killed mid-stream
        with pytest.raises(openai.APIConnectionError):
            list(chunks)


def test_fallback_when_a_worker_thread_device_stalls():
    with GatewayRig(TENANTS, n_mocks=1, device="model",
                    options=GatewayOptions(device_timeout_s=0.05, device_retry_s=60)) as rig:
        primary = rig.gateway.primary
        assert not primary.inline                 # "model" runs on the driver's worker thread

        async def stalled(block, frame=False):
            await asyncio.sleep(5)
        primary.classify = stalled
        client = rig.client("sk-acme-1")
        assert client.chat.completions.create(**CHAT).usage.completion_tokens == 5
        assert client.chat.completions.create(**CHAT).usage.completion_tokens == 5   # straight to "software"
        samples = _metrics(rig)
        assert _total(samples, "wirespeed_gateway_fallback_total", cause="stall") == 1
        assert _total(samples, "wirespeed_gateway_fallback_total", cause="device_down") == 1


def test_body_over_the_limit_is_413_and_bytes_after_a_chunked_body_close_the_connection():
    with GatewayRig(TENANTS, n_mocks=1, options=GatewayOptions(max_body_bytes=1000)) as rig:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
        answer = rig.raw(head + b"Content-Length: 2000\r\n\r\n" + b"x" * 2000)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "body_too_large"
        body = json.dumps(CHAT).encode()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        pipelined = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n\r\n"
        answer = rig.raw(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked + pipelined)
        # The chunked request is answered; the bytes behind it are not parsed, and the connection closes.
        assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in answer.lower()
        assert not any(r.path == "/v1/models" and r.method == "GET" for r in rig.mocks[0].requests[2:])


def test_a_client_that_stalls_is_closed_after_its_timeout_and_nothing_reaches_a_backend():
    # The client side's timeouts (header or body stalled: header_timeout_s; nothing after an answer: idle_timeout_s),
    # enforced by the connections' sweep.
    options = GatewayOptions(header_timeout_s=0.2, idle_timeout_s=0.4)
    with GatewayRig(TENANTS, n_mocks=1, options=options) as rig:
        warm = len(rig.mocks[0].requests)
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
        for stalled in (head, head + b"Content-Length: 100\r\n\r\n{\"model\":"):
            t = time.monotonic()
            assert rig.raw(stalled, timeout=5.0) == b""             # closed, without an answer
            assert 0.2 <= time.monotonic() - t < 2.0
        t = time.monotonic()
        answer = rig.raw(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.count(b"HTTP/1.1 ") == 1
        assert 0.4 <= time.monotonic() - t < 2.5                     # kept alive, then closed when idle
        assert [r.path for r in rig.mocks[0].requests[warm:]] == ["/v1/models"]


@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_a_body_are_not_chunked_and_keep_the_connection(status):
    # HEAD, 204 and 304 have no body: passed on without Transfer-Encoding, a HEAD's Content-Length the backend's (a
    # 204 none), and the connection stays usable for the next request.
    with GatewayRig(TENANTS, n_mocks=1, options=GatewayOptions(fail_threshold=100)) as rig:
        get = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n\r\n"
        close = get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        answers = rig.raw(get.replace(b"GET", b"HEAD", 1) + close)
        head, _, rest = answers.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)\r\ncontent-length: (\d+)", head).group(1))
        assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding" not in head.lower()
        assert rest.startswith(b"HTTP/1.1 200 OK") and length == len(rest.split(b"\r\n\r\n", 1)[1]) > 0
        rig.mocks[0].fail_status = status
        answers = rig.raw(get + close)
        first, _, rest = answers.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 %d " % status) and b"transfer-encoding" not in first.lower()
        if status == 204:
            assert b"content-length" not in first.lower()
        assert rest.startswith(b"HTTP/1.1 %d " % status)             # the second request was answered too


def test_a_client_gone_mid_stream_settles_what_was_returned():
    # The client closes after the first chunk: the gateway stops at the next chunk, the upstream answer is cut, and
    # the reservation is settled from the text returned so far, counted by tiktoken (it used to run the stream on,
    # or, when a write failed, never settle at all). A whole stream settles from the backend's usage chunk instead,
    # which the cut one never gets: the two counts differ.
    with GatewayRig(TENANTS, n_mocks=1) as rig:
        body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 4, "stream": True,
                           "messages": [{"role": "user", "content": "Count."}]}).encode()
        request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        def settled(run) -> dict:
            before = _metrics(rig)
            run()
            deadline = time.monotonic() + 5
            while _total(_metrics(rig), "wirespeed_gateway_tokens_total", kind="used", tenant="acme") == \
                    _total(before, "wirespeed_gateway_tokens_total", kind="used", tenant="acme"):
                assert time.monotonic() < deadline, "the request was never settled"
                time.sleep(0.02)
            rig.call(rig.gateway.flush_settlements())
            after = _metrics(rig)
            return {kind: _total(after, "wirespeed_gateway_tokens_total", kind=kind, tenant="acme")
                    - _total(before, "wirespeed_gateway_tokens_total", kind=kind, tenant="acme")
                    for kind in ("reserved", "used", "refunded", "debited")}

        def leave_after_first_chunk():
            hold = rig.mocks[0].hold = rig.call(_event())
            with socket.create_connection((rig.host, rig.port), timeout=5) as s:
                s.sendall(request)
                seen = b""
                while b"tok0" not in seen:
                    seen += s.recv(65536)
            rig.loop.call_soon_threadsafe(hold.set)      # the next chunk finds the client gone

        whole = settled(lambda: rig.raw(request.replace(b"Host: x", b"Host: x\r\nConnection: close")))
        aborted = _total(_metrics(rig), "wirespeed_gateway_requests_total", tenant="acme", status="499")
        cut = settled(leave_after_first_chunk)
        assert _total(_metrics(rig), "wirespeed_gateway_requests_total", tenant="acme", status="499") == aborted + 1
        for d in (whole, cut):
            assert d["refunded"] - d["debited"] == d["reserved"] - d["used"]
        assert whole["reserved"] == cut["reserved"] and cut["used"] > 0 and cut["used"] != whole["used"]


def test_l4_affinity_keeps_a_connection_on_one_backend_and_spreads_connections():
    # affinity = "l4": each request is classified in a TCP/IP frame carrying the connection's addresses and ports,
    # so the device's front end hashes the 4-tuple: one connection's requests stay on one backend, and different
    # connections (other source ports) spread over the pool.
    routes = '\n[[routes]]\nprefix = "/v1/chat/completions"\npool = "chat"\naffinity = "l4"\n'
    with GatewayRig(TENANTS, n_mocks=3, routes=routes) as rig:
        seen = []
        for _ in range(12):
            with rig.client("sk-acme-1") as client:          # a connection of its own
                backends = {client.chat.completions.with_raw_response.create(**CHAT).headers["x-mock-backend"]
                            for _ in range(3)}
            assert len(backends) == 1
            seen += backends
        assert len(set(seen)) >= 2, seen


def test_l4_affinity_on_a_device_without_the_front_end_fails_at_start(monkeypatch):
    from wirespeed.host.gateway import server
    real = server._Device.info

    async def without_frontend(self):
        info = await real(self)
        return dataclasses.replace(info, features=info.features - {"frontend"})
    monkeypatch.setattr(server._Device, "info", without_frontend)
    routes = '\n[[routes]]\nprefix = "/v1/chat/completions"\npool = "chat"\naffinity = "l4"\n'
    with pytest.raises(GatewayConfigError, match=r"\[\[routes\]\] #1: affinity='l4' is invalid: .*'frontend'"):
        GatewayRig(TENANTS, n_mocks=1, routes=routes)


def test_an_unexpected_error_closes_only_its_connection_and_is_logged(rig, caplog):
    with _classify_raises(rig.gateway.primary, RuntimeError("planted bug")):
        assert rig.raw(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n\r\n") == b""
    assert any("a connection failed" in r.getMessage() and "planted bug" in r.exc_text for r in caplog.records
               if r.exc_text)
    assert rig.client("sk-acme-1").models.list().data                 # the gateway serves on


def test_the_pools_api_key_goes_to_the_backend_and_the_clients_does_not():
    with GatewayRig(TENANTS, n_mocks=1, pool_extra='api_key = "sk-backend-9"\n') as rig:
        mock = rig.mocks[0]
        assert {r.headers.get("authorization") for r in mock.requests} == {"Bearer sk-backend-9"}   # the warm-up
        rig.client("sk-acme-1").chat.completions.create(**CHAT)
        chat = mock.requests[-1]
        assert chat.path == "/v1/chat/completions" and chat.headers.get("authorization") == "Bearer sk-backend-9"
        body = b'{"model":"claude-x","max_tokens":4,"messages":[{"role":"user","content":"Hello there"}]}'
        answer = rig.raw(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: sk-acme-1\r\nConnection: close\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        messages = mock.requests[-1]
        assert messages.path == "/v1/messages" and messages.headers.get("x-api-key") == "sk-backend-9"
        assert "authorization" not in messages.headers


def test_a_request_leaves_no_cyclic_garbage_in_the_gateway(rig):
    # The cyclic collector's passes were the gateway's longest pauses (docs/performance.md): a request must free
    # what it made by reference counting alone. With collection off and every unreachable object kept, no object of
    # the gateway's own classes is found after 40 chat requests (the request frame and its llhttp parser once were,
    # 14 objects per request).
    import gc
    body = json.dumps(CHAT).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\n"
               b"Content-Type: application/json\r\nx-session-id: s-%d\r\nContent-Length: %d\r\n\r\n")
    rig.raw(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-acme-1\r\nConnection: close\r\n\r\n")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with socket.create_connection((rig.host, rig.port), timeout=10) as s:
            for i in range(40):
                s.sendall(request % (i, len(body)) + body)
                answer = b""
                while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                        re.search(rb"(?i)content-length: (\d+)", answer.partition(b"\r\n\r\n")[0])[1]):
                    chunk = s.recv(65536)
                    assert chunk, answer
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        time.sleep(0.2)                     # (the gateway's side of the last answer is done)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("wirespeed.host.gateway")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []
