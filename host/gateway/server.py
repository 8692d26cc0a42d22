"""The gateway's server: every request's raw header block to the device for its verdict, then the request to the
backend the verdict names, over pooled keep-alive connections, with the response streamed back.

client ─▶ :class:`Gateway` connection (:mod:`.downstream`, on uvloop) ─▶ header block ─▶ llhttp (httptools, strict)
frames the body ─▶ token estimate (:mod:`.tokens`) ─▶ device ``classify`` (cost = the estimate) ─▶ reject in OpenAI's
error format, or ─▶ the backend's pool of kept-alive connections (:mod:`.upstream`, llhttp again) ─▶ response (SSE
passed through chunk by chunk) ─▶ settle the tokens (refund or debit) ─▶ ``Server-Timing`` and Prometheus
(:mod:`.metrics`)

Why the client side is not aiohttp's server: it parses and normalises the header block itself and answers malformed
input with its own 400 before any handler runs, so the device would never see the bytes the client sent. Here the
device's verdict is the only header parse that decides anything; llhttp only frames the body (and gives the header
list that is forwarded), and bytes llhttp refuses still get the device's status.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field

import httptools
import orjson

from ..driver.offload import open as ws_open, open_async
from ..errors import WirespeedError
from ..models.frontend import build_frame
from .config import GatewayConfig, GatewayConfigError, Route, apply, apply_async, backend_url
from .downstream import Connections, Downstream
from .metrics import GatewayMetrics
from .tokens import PRELOAD_MODELS, Estimate, count_text_tokens, encoding_for, estimate
from .upstream import ConnectFailed, Upstream, UpstreamError, find_header

__all__ = ["Gateway", "GatewayOptions", "L4_FRAME_PORT", "CLIENT_CLOSED"]

_log = logging.getLogger(__name__)

#: Request headers not forwarded: hop-by-hop (RFC 9110 7.6.1), the framing the gateway redoes, the tenant's
#: credentials (they are the gateway's keys, not the backend's), and the gateway's own cost header.
_DROP_REQUEST = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                           b"upgrade", b"host", b"content-length", b"expect", b"authorization", b"x-api-key",
                           b"x-token-estimate"})
_DROP_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"trailer",
                            b"server-timing"})
_ESTIMATE_HEADER = b"x-token-estimate"
#: The blank line that ends a server-sent event (LF or CRLF line ends).
_EVENT_END = re.compile(rb"\r?\n\r?\n")
#: Settlements are applied together this long after the first one waiting (see ``Gateway._settle``). A refund on
#: ``"software"`` is a limiter command of about 85 µs, run on the event loop; at 10 ms they ran a hundred times a
#: second and stalled about 2 % of the requests behind them.
SETTLE_DELAY_S = 0.05
#: The destination port of the frame an ``l4`` route's request is classified in: 80, which the device's front end
#: serves from reset (``docs/frontend.md``).
L4_FRAME_PORT = 80
#: The status the metrics count a request under when its client went away before the whole answer was written
#: (nginx's 499, "client closed request"); nothing is sent with it.
CLIENT_CLOSED = 499
_NO_ROUTE = Route("", "", "tenant")
_STAGE_DESC = {"device": "device decision", "queue": "upstream pool wait", "connect": "upstream connect",
               "ttft": "first byte from upstream", "total": "total"}


@dataclass
class GatewayOptions:
    """The gateway's tunables (defaults suit a loopback demo and the tests).

    Attributes
    ----------
    max_body_bytes : int
        Largest request body (413 above).
    connections_per_backend : int
        The bound of each backend's connection pool.
    warm_connections : int
        Connections opened to each backend at start.
    upstream_keepalive_s : float
        An upstream connection idle longer than this is closed rather than reused: keep it below the backends' own
        keep-alive timeout (uvicorn's default, in front of vLLM and most Python servers, is 5 s), or a request may
        be sent on a connection the backend is closing, and fail.
    upstream_read_timeout_s : float
        Longest wait for the next bytes of a backend's answer.
    fail_threshold : int
        Consecutive connect failures or 5xx answers that mark a backend down.
    probe_interval_s : float
        How often a down backend is probed.
    device_timeout_s : float
        A device call slower than this counts as a stall: the request is classified by ``"software"``.
    device_retry_s : float
        After a device error or stall, how long requests go straight to ``"software"`` before the device is tried
        again.
    idle_timeout_s, header_timeout_s : float
        Keep-alive idle time, and time allowed for a header block or body to arrive.
    """
    max_body_bytes: int = 32 << 20
    connections_per_backend: int = 64
    warm_connections: int = 2
    upstream_keepalive_s: float = 4.0
    upstream_read_timeout_s: float = 600.0
    fail_threshold: int = 3
    probe_interval_s: float = 0.5
    device_timeout_s: float = 1.0
    device_retry_s: float = 5.0
    idle_timeout_s: float = 75.0
    header_timeout_s: float = 30.0


class _Framing(Exception):
    """llhttp refused the bytes, or the request cannot be framed (the message names why)."""


class _NextMessage(Exception):
    """llhttp started on bytes past the request's end (a pipelined request after a chunked body)."""


class _Frame:
    """llhttp's callbacks for one request: the target, the header list, the body."""

    __slots__ = ("url", "headers", "body", "headers_done", "complete", "body_limit", "parser", "keep_alive")

    def __init__(self, body_limit: int):
        self.parser = httptools.HttpRequestParser(self)
        self.keep_alive = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.headers_done = self.complete = False
        self.body_limit = body_limit

    def on_message_begin(self):
        if self.complete:
            raise _NextMessage()

    def on_url(self, url: bytes):
        self.url += url

    def on_header(self, name: bytes, value: bytes):
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()     # (llhttp clears it once the message completes)

    def on_body(self, body: bytes):
        self.body += body
        if len(self.body) > self.body_limit:
            raise _Framing(f"body larger than {self.body_limit} bytes")

    def on_message_complete(self):
        self.complete = True

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)


def _feed(parser, data: bytes) -> None:
    """``parser.feed_data(data)``; an exception our callbacks raised comes out as itself (httptools wraps it in an
    ``HttpParserCallbackError``)."""
    try:
        parser.feed_data(data)
    except httptools.HttpParserCallbackError as exc:
        if isinstance(exc.__context__, (_Framing, _NextMessage)):
            raise exc.__context__ from None
        raise


def _block_end(buf: bytearray, start: int) -> int:
    """The end of the header block in ``buf`` (just past the empty line), searching from ``start``; -1 if none yet.
    A bare LF ends it too, so that such a block reaches the device (which rejects it) instead of waiting."""
    ends = [i for i in (buf.find(b"\n\r\n", start), buf.find(b"\n\n", start)) if i >= 0]
    if not ends:
        return -1
    i = min(ends)
    return i + (3 if buf[i + 1] == 13 else 2)


def _with_estimate(block: bytes, frame: _Frame, tokens: int) -> bytes:
    """The header block with the gateway's ``x-token-estimate`` line, and without any the client sent (a client must
    not name its own cost)."""
    if frame.header(_ESTIMATE_HEADER) is not None:
        lines = block[:-2].split(b"\r\n")
        block = b"\r\n".join([lines[0]] + [ln for ln in lines[1:-1]
                                           if ln.split(b":", 1)[0].strip().lower() != _ESTIMATE_HEADER]) + b"\r\n\r\n"
    return block[:-2] + b"x-token-estimate: %d\r\n\r\n" % tokens


#: Every digit to "0": a run of 19 or more digits in a body, the only place orjson and ``json`` read a value
#: differently (orjson reads an integer outside 64 bits as a float), is then one ``find``.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
#: Bodies up to this size are read by orjson. Above it the digit scan (about 0.5 ns a byte) and orjson together
#: cost more than ``json`` alone.
_ORJSON_MAX_BYTES = 16384


def json_loads(data: bytes):
    """``json.loads(data)``: the same value and the same failures, faster for the small bodies of most requests and
    answers. orjson reads a body of at most :data:`_ORJSON_MAX_BYTES`, except where it would read differently:
    ``json`` reads what orjson refuses (NaN and Infinity, lone surrogates, a BOM, UTF-16 or UTF-32) and a body with a
    run of 19 or more digits (an integer that orjson would turn into a float, such as a ``max_tokens`` of ``10**20``,
    is one). Raises ``ValueError`` (``UnicodeDecodeError`` is one) as ``json.loads`` does."""
    if len(data) > _ORJSON_MAX_BYTES or _LONG_DIGITS in data.translate(_DIGITS):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _l4_frame(block: bytes, peer, local) -> bytes:
    """The header block as the device sees it inline: in a TCP/IP frame from the client's address and port to the
    gateway's address (``peer``, ``local``: the connection's socket addresses), so that the front end gives the
    router the connection's 4-tuple to hash (``affinity = "l4"``)."""
    v6 = ":" in peer[0]
    return build_frame(block, v6=v6, src=peer[0], dst=local[0], sport=peer[1], dport=L4_FRAME_PORT)


def _auth(key: bytes, path: str) -> list:
    """A pool's ``api_key`` as the backend's API takes it: ``x-api-key`` on Anthropic's ``/v1/messages``, else
    ``Authorization: Bearer``."""
    return [(b"x-api-key", key)] if path.startswith("/v1/messages") else [(b"authorization", b"Bearer " + key)]


def _error_body(status: int, reason: str, message: str) -> bytes:
    kind = {401: "authentication_error", 429: "rate_limit_error", 503: "service_unavailable"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return json.dumps({"error": {"message": message, "type": kind, "code": reason}}).encode()


_MESSAGES = {
    401: "Unknown API key.",
    429: "Rate limit reached for this key; retry after the time in Retry-After.",
    431: "Request header fields too large.",
    503: "No backend is up for this route.",
}


#: Status code -> reason phrase; a backend's nonstandard status gets none (RFC 9112 allows an empty one).
_PHRASES = {s.value: s.phrase.encode() for s in http.HTTPStatus}
#: Stage name -> its Server-Timing entry, a template for the duration in milliseconds.
_TIMING = {name: b'%s;dur=%%.3f;desc="%s"' % (name.encode(), desc.encode()) for name, desc in _STAGE_DESC.items()}


def _phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"")


def _timing_header(stages: dict) -> bytes:
    return b", ".join([_TIMING[name] % (seconds * 1e3) for name, seconds in stages.items()])


class _Usage:
    """Token usage from a response: its ``usage`` objects (the last stream event that has one), or, if none comes,
    the tokens of the text it returned."""

    def __init__(self):
        self.prompt = self.completion = self.total = None
        self.text: list[str] = []

    def add_usage(self, obj) -> None:
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if obj.get("type") == "message_start" and isinstance(obj.get("message"), dict):   # Anthropic stream
            usage = obj["message"].get("usage")
        if not isinstance(usage, dict):
            return
        for key, attr in (("prompt_tokens", "prompt"), ("input_tokens", "prompt"),
                          ("completion_tokens", "completion"), ("output_tokens", "completion"),
                          ("total_tokens", "total")):
            if isinstance(usage.get(key), int):
                setattr(self, attr, usage[key])

    def add_text(self, obj) -> None:
        for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
            if isinstance(choice, dict):
                part = choice.get("delta") or choice.get("message") or {}
                text = part.get("content") if isinstance(part, dict) else None
                text = text if isinstance(text, str) else choice.get("text")
                if isinstance(text, str):
                    self.text.append(text)
        delta = obj.get("delta") if isinstance(obj, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("text"), str):                 # Anthropic stream
            self.text.append(delta["text"])
        for part in obj.get("content") or () if isinstance(obj, dict) and obj.get("type") == "message" else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                self.text.append(part["text"])

    def tokens(self, model, est: Estimate) -> int:
        """Tokens used: as the backend reported them, else the prompt estimate plus the returned text's count."""
        if self.total is not None:
            return self.total
        if self.prompt is not None or self.completion is not None:
            return (self.prompt or 0) + (self.completion or 0)
        return est.prompt_tokens + count_text_tokens(model, "".join(self.text))


@dataclass
class _Backend:
    url: str
    upstream: Upstream
    pools: list = field(default_factory=list)          # (pool index) it belongs to
    auth: list = field(default_factory=list)           # the header its warm-up and probe requests carry
    failures: int = 0
    down: bool = False
    probe: asyncio.Task | None = None


class _Device:
    """A device the gateway classifies with. ``"software"`` runs inline on the event loop's thread: a verdict costs
    tens of microseconds of CPU, less than the hand-off to a worker thread and back. Every other URI (a board's
    MMIO, the model, the simulator) runs on the driver's worker thread (:class:`AsyncOffload`), so the loop never
    blocks on it."""

    INLINE = ("software",)

    def __init__(self, name: str, dev, tenant_names: dict, inline: bool):
        self.name, self.dev, self.tenant_names, self.inline = name, dev, tenant_names, inline

    @classmethod
    async def open(cls, name: str, uri: str, config: GatewayConfig) -> "_Device":
        inline = uri in cls.INLINE
        dev = ws_open(uri) if inline else await open_async(uri)
        try:
            ids = apply(config, dev) if inline else await apply_async(config, dev)
        except BaseException:
            await cls(name, dev, {}, inline).close()
            raise
        return cls(name, dev, {tid: tenant for tenant, tid in ids.items()}, inline)

    def tenant_name(self, tenant_id) -> str:
        """The configured name of a verdict's tenant; "-" for none (an unknown key)."""
        if tenant_id is None:
            return "-"
        name = self.tenant_names.get(tenant_id)
        return str(tenant_id) if name is None else name

    async def _do(self, method, *args):
        return method(*args) if self.inline else await method(*args)

    def decide(self, data: bytes, frame: bool = False):
        """:meth:`classify` of an inline device, as a plain call (the gateway's hot path takes no coroutine)."""
        return self.dev.classify_frame(data) if frame else self.dev.classify(data)

    async def classify(self, data: bytes, frame: bool = False):
        """The verdict for a header block, or (``frame``) for an Ethernet frame through the front end."""
        if self.inline:
            return self.decide(data, frame)
        return await (self.dev.classify_frame(data) if frame else self.dev.classify(data))

    async def refund(self, tenant_id, tokens: int) -> None:
        await self._do(self.dev.tenants.refund, tenant_id, tokens)

    async def debit(self, tenant_id, tokens: int) -> None:
        await self._do(self.dev.tenants.debit, tenant_id, tokens)

    async def set_state(self, pool: int, backend: str, state: str) -> None:
        await self._do(self.dev.pools.set_state, pool, backend, state)

    async def stats(self) -> dict:
        return await self._do(self.dev.stats)

    async def info(self):
        return await self._do(self.dev.info)

    async def read_register(self, name: str) -> int:
        return await self._do(self.dev.read_register, name)

    def pool(self, index: int):
        """The pool as the driver holds it (no device access)."""
        return self.dev.pools.get(index)

    def label(self, pool: int, backend_id: int):
        return self.dev.pools.label(pool, backend_id)

    async def close(self) -> None:
        if self.inline:
            self.dev.close()
        else:
            await self.dev.aclose()


class Gateway:
    """One gateway: its device (and the ``"software"`` fallback), upstream pools, health, metrics and listener.

    ``await gw.start()`` opens everything and listens; ``gw.address`` / ``gw.metrics_address`` are then the bound
    ``(host, port)``; ``await gw.stop()`` closes it. The CLI wraps it as ``wirespeed gateway``.

    Parameters
    ----------
    config : GatewayConfig
    uri, listen, metrics : str, optional
        Override the file's ``device``, ``listen`` and ``metrics``.
    options : GatewayOptions, optional
    """

    def __init__(self, config: GatewayConfig, *, uri: str | None = None, listen: str | None = None,
                 metrics: str | None = None, options: GatewayOptions | None = None):
        self.config = config
        self.uri = uri or config.device
        self.listen = listen or config.listen
        self.metrics_listen = metrics if metrics is not None else config.metrics
        self.options = options or GatewayOptions()
        self.metrics = GatewayMetrics()
        self.primary: _Device | None = None
        self.software: _Device | None = None
        self.backends: dict[str, _Backend] = {}
        self.address = self.metrics_address = None
        self._server = self._metrics_runner = None
        self._device_down_until = 0.0
        self._header_limit = 8192
        self._tasks: set = set()
        # Client reads time out to within a quarter of the shorter timeout (the sweep's period).
        self._clients = Connections(max(0.01, min(1.0, self.options.idle_timeout_s / 4,
                                                  self.options.header_timeout_s / 4)))
        # Settlements waiting for the next flush: (device, tenant id) -> [device, tenant name, net refund].
        self._settlements: dict = {}
        self._flush_handle = None
        self._routes = sorted(((r.prefix, r) for r in config.routes), key=lambda pr: -len(pr[0]))
        self._l4 = any(r.affinity == "l4" for r in config.routes)
        self._pool_keys = [None if p.api_key is None else p.api_key.encode() for p in config.pools]

    # -- start and stop --

    async def start(self) -> None:
        self.primary = await _Device.open(self.uri, self.uri, self.config)
        self.software = await _Device.open("software", "software", self.config)
        self._header_limit = await self.primary.read_register("parser.limits.max_header_bytes")
        info = await self.primary.info()
        self.metrics.device.clock_hz = info.clock_hz
        for i, route in enumerate(self.config.routes):
            if route.affinity == "l4" and "frontend" not in info.features:
                raise GatewayConfigError(f"{self.config.path}: [[routes]] #{i + 1}", "affinity", "l4",
                                         f"hashes the connection's 4-tuple, which needs the device's L2-L4 front end "
                                         f"(feature 'frontend'); {self.uri!r} has {sorted(info.features)}")
        # Load the tokenizers now (about a second each), not on the first request.
        await asyncio.get_running_loop().run_in_executor(None, lambda: [encoding_for(m) for m in PRELOAD_MODELS])
        o = self.options
        for index, pool in enumerate(self.config.pools):
            for url in pool.backends:
                if url not in self.backends:
                    upstream = Upstream(backend_url(url), limit=o.connections_per_backend,
                                        keepalive_s=o.upstream_keepalive_s, read_timeout_s=o.upstream_read_timeout_s)
                    self.backends[url] = _Backend(url, upstream)
                self.backends[url].pools.append(index)
                if self._pool_keys[index] is not None and not self.backends[url].auth:
                    self.backends[url].auth = _auth(self._pool_keys[index], "/v1/models")
                self.metrics.backend_up.labels(pool.name, url).set(1)
        await asyncio.gather(*(self._warm(b) for b in self.backends.values()))
        host, port = self.listen.rsplit(":", 1)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Downstream(self._serve, self._clients), host.strip("[]"), int(port))
        self.address = self._server.sockets[0].getsockname()[:2]
        if self.metrics_listen:
            await self._start_metrics()

    async def _warm(self, backend: _Backend) -> None:
        """Open the pool's first connections; a backend that cannot be reached starts down."""
        async def one():
            response, _queued, _connect = await backend.upstream.request(b"GET", b"/v1/models", backend.auth,
                                                                         read_timeout_s=5.0)
            async with response:
                await response.read()
        results = await asyncio.gather(*(one() for _ in range(self.options.warm_connections)),
                                       return_exceptions=True)
        if all(isinstance(r, ConnectFailed) for r in results) and results:
            backend.failures = self.options.fail_threshold - 1
            await self._failed(backend)

    async def _start_metrics(self) -> None:
        from aiohttp import web

        async def scrape(_request):
            try:
                await asyncio.wait_for(self.metrics.refresh_device(self.primary), 2.0)
            except (WirespeedError, asyncio.TimeoutError):
                pass                    # the scrape still serves the gateway's own series
            return web.Response(body=self.metrics.render(),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        app = web.Application()
        app.router.add_get("/metrics", scrape)
        self._metrics_runner = web.AppRunner(app, access_log=None)
        await self._metrics_runner.setup()
        host, port = self.metrics_listen.rsplit(":", 1)
        site = web.TCPSite(self._metrics_runner, host.strip("[]"), int(port))
        await site.start()
        self.metrics_address = site._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._clients.close()
        await self.flush_settlements()
        for task in list(self._tasks):
            task.cancel()
        for b in self.backends.values():
            if b.probe is not None:
                b.probe.cancel()
            await b.upstream.close()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        for d in (self.primary, self.software):
            if d is not None:
                await d.close()

    # -- the device --

    async def classify(self, block: bytes, addresses=None):
        """The verdict for a header block, and the device that gave it: the configured device, or ``"software"``
        when that errors or stalls (counted in ``wirespeed_gateway_fallback``). ``addresses``: the connection's
        ``(peer, local)`` socket addresses, for a request whose route hashes the 4-tuple (``l4``): it is classified
        in a frame (:func:`_l4_frame`)."""
        frame = addresses is not None
        if frame:
            block = _l4_frame(block, *addresses)
        now = time.monotonic()
        if now >= self._device_down_until:
            try:
                if self.primary.inline:         # a call on this thread cannot be timed out; no task is needed
                    return self.primary.decide(block, frame), self.primary
                return await asyncio.wait_for(self.primary.classify(block, frame), self.options.device_timeout_s), \
                    self.primary
            except asyncio.TimeoutError:
                cause = "stall"
            except WirespeedError as exc:
                cause = type(exc).__name__
            self._device_down_until = now + self.options.device_retry_s
            self.metrics.fallback.labels(cause).inc()
        else:
            self.metrics.fallback.labels("device_down").inc()
        return await self.software.classify(block, frame), self.software

    async def _set_state(self, *args) -> None:
        """A backend's state on the device and on the fallback, so both route alike."""
        for d in (self.primary, self.software):
            try:
                await d.set_state(*args)
            except WirespeedError:
                if d is self.software:
                    raise

    # -- health --

    async def _failed(self, backend: _Backend) -> None:
        backend.failures += 1
        self.metrics.backend_failures.labels(backend.url).inc()
        if backend.down or backend.failures < self.options.fail_threshold:
            return
        backend.down = True
        for index in backend.pools:
            await self._set_state(index, backend.url, "down")
            self.metrics.backend_up.labels(self.config.pools[index].name, backend.url).set(0)
        backend.probe = asyncio.get_running_loop().create_task(self._probe(backend))

    def _succeeded(self, backend: _Backend) -> None:
        backend.failures = 0

    async def _probe(self, backend: _Backend) -> None:
        """Until the backend answers ``GET /v1/models`` below 500, then bring it back up."""
        while True:
            await asyncio.sleep(self.options.probe_interval_s)
            try:
                async with asyncio.timeout(2.0):
                    response, _queued, _connect = await backend.upstream.request(b"GET", b"/v1/models", backend.auth)
                    async with response:
                        await response.read()
                if response.status >= 500:
                    continue
            except (UpstreamError, TimeoutError):
                continue
            break
        backend.down, backend.failures, backend.probe = False, 0, None
        for index in backend.pools:
            await self._set_state(index, backend.url, "up")
            self.metrics.backend_up.labels(self.config.pools[index].name, backend.url).set(1)

    def _rehash(self, device: _Device, verdict, tried: set) -> str | None:
        """Where the verdict's hash goes now that a backend is down: the device's own table (so the session lands
        where its next request will), or, if that backend was tried too, the next up backend of the pool."""
        info = device.pool(verdict.pool)
        if len(info.table):
            url = device.label(verdict.pool, int(info.table[(verdict.hash * info.size) >> 32]))
            if url not in tried:
                return url
        for url in info.backends:
            if url not in tried and not self.backends[url].down:
                return url
        return None

    # -- connections --

    async def _serve(self, conn: Downstream) -> None:
        """One client connection (its task, started by :class:`Downstream`): its requests in order."""
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while await self._one(conn):
                pass
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass                # stop(): the connection ends here
        except Exception:       # a bug: this connection ends, the gateway serves on
            _log.exception("wirespeed gateway: a connection failed; closing it")
        finally:
            self._tasks.discard(task)
            conn.close()

    async def _one(self, conn: Downstream) -> bool:
        """Read, decide and answer one request; False when the connection is to close."""
        writer, buf = conn, conn.buf
        o = self.options
        limit = self._header_limit + 1
        start, timeout = 0, o.idle_timeout_s
        end = _block_end(buf, 0)
        while end < 0 and len(buf) <= limit:
            start = max(0, len(buf) - 2)
            if not await conn.read_more(timeout):
                return False
            timeout = o.header_timeout_s
            end = _block_end(buf, start)
        t0 = time.perf_counter()
        if end < 0 or end > limit:                  # no end within the device's limit: it answers 431
            block, end = bytes(buf[:limit]), min(len(buf), limit)
            verdict, _ = await self.classify(block)
            await self._reject(writer, verdict, t0, keep=False)
            return False
        block = bytes(buf[:end])
        frame = _Frame(o.max_body_bytes)
        parser = frame.parser
        try:
            _feed(parser, block)
            if frame.header(b"expect") is not None and not frame.complete:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            fed = end
            length = frame.header(b"content-length")
            while not frame.complete:
                if fed >= len(buf):
                    if not await conn.read_more(o.header_timeout_s):
                        return False
                stop = len(buf)
                if length is not None:              # exactly this request's bytes: a pipelined one stays in buf
                    stop = min(stop, end + int(length))
                _feed(parser, bytes(buf[fed:stop]))
                fed = stop
        except _NextMessage:
            fed = len(buf)
            keep_alive = False                      # bytes after a chunked body: answer this one, then close
        except (httptools.HttpParserError, httptools.HttpParserUpgrade, _Framing) as exc:
            verdict, _ = await self.classify(block)
            if verdict.action == "forward":         # llhttp refused what the device let through
                reason = "body_too_large" if isinstance(exc, _Framing) else "framing"
                status = 413 if isinstance(exc, _Framing) else 400
                await self._answer(writer, status, (), _error_body(status, reason, f"{reason}: {exc}"), t0,
                                   {"device": 0.0}, keep=False)
            else:
                await self._reject(writer, verdict, t0, keep=False)
            return False
        else:
            keep_alive = frame.keep_alive
        finally:
            # The parser holds the frame's callbacks and the frame the parser: undone here, that cycle is freed at
            # once, not left to the cyclic collector (its passes were the gateway's longest pauses).
            frame.parser = None
        del buf[:fed]
        return await self._request(writer, block, frame, parser.get_method().decode(), keep_alive, t0)

    async def _request(self, writer, block: bytes, frame: _Frame, method: str, keep_alive: bool, t0: float) -> bool:
        path = frame.url.decode("latin-1")
        body = bytes(frame.body)
        try:
            payload = json_loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            payload = None
        est = estimate(path, payload)
        if isinstance(payload, dict) and payload.get("stream") is True and path.startswith("/v1/") \
                and not path.startswith("/v1/messages"):
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                # Ask the backend for the final usage chunk, to settle the reservation exactly.
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                body = json.dumps(payload).encode()
        addresses = None
        if self._l4 and self._route(path).affinity == "l4":
            transport = writer.transport
            addresses = (transport.get_extra_info("peername"), transport.get_extra_info("sockname"))
        t_dev = time.perf_counter()
        verdict, device = await self.classify(_with_estimate(block, frame, est.total), addresses)
        stages = {"device": time.perf_counter() - t_dev}
        if verdict.action != "forward":
            return await self._reject(writer, verdict, t0, keep=keep_alive and verdict.status in (401, 429, 503),
                                      stages=stages, path=path, device=device)
        tenant = device.tenant_name(verdict.tenant)
        reserved = est.total
        self.metrics.add_tokens("reserved", tenant, reserved)
        headers = [(n, v) for n, v in frame.headers if n.lower() not in _DROP_REQUEST]
        key = self._pool_keys[verdict.pool]
        if key is not None:                         # the pool's own key, as its API expects it
            headers += _auth(key, path)
        target = frame.url
        method_b = method.encode()
        tried: set = set()
        url = verdict.backend
        while True:
            backend = self.backends[url]
            tried.add(url)
            t_up = time.perf_counter()
            try:
                response, queued, connect = await backend.upstream.request(method_b, target, headers, body)
                break
            except ConnectFailed:                   # not sent: another backend may take it
                await self._failed(backend)
                url = self._rehash(device, verdict, tried)
                if url is not None:
                    self.metrics.retries.labels(self.config.pools[verdict.pool].name).inc()
                    continue
                self._settle(device, verdict.tenant, tenant, reserved, 0)
                self._observe_reject(path, tenant, "-", 503, stages, t0)
                await self._answer(writer, 503, (), _error_body(503, "no_backend", _MESSAGES[503]), t0, stages,
                                   keep=keep_alive)
                return keep_alive
            except UpstreamError as exc:
                await self._failed(backend)
                self._settle(device, verdict.tenant, tenant, reserved, 0)
                self._observe_reject(path, tenant, url, 502, stages, t0)
                await self._answer(writer, 502, (), _error_body(502, "upstream_error", f"upstream: {exc}"), t0,
                                   stages, keep=False)
                return False
        stages["queue"], stages["connect"] = queued, connect
        status = response.status                    # as the metrics count it
        usage = _Usage()
        answered = False
        try:
            async with response:
                if response.status >= 500:
                    await self._failed(backend)
                else:
                    self._succeeded(backend)
                out_headers = [(k, v) for k, v in response.headers if k.lower() not in _DROP_RESPONSE]
                content_type = response.header(b"content-type") or b""
                if method == "HEAD" or response.status in (204, 304):
                    # No body (RFC 9110 9.3.2, 15.3.5, 15.4.5): not chunked; a HEAD's or 304's Content-Length is
                    # the backend's (that of the body a GET would get), and a 204 has none.
                    await response.read()
                    t_up_end = time.perf_counter()
                    stages["ttft"] = t_up_end - t_up
                    stages["total"] = time.perf_counter() - t0
                    answered = True
                    length = response.header(b"content-length") if response.status != 204 else None
                    await self._answer(writer, response.status, out_headers, b"", t0, stages, keep=keep_alive,
                                       length=length)
                elif content_type.startswith(b"text/event-stream") or response.length is None:
                    answered = True                 # the status line goes out first
                    t_up_end = await self._stream(writer, response, out_headers, stages, usage, t0, t_up)
                else:
                    data = await response.read()
                    t_up_end = time.perf_counter()
                    stages["ttft"] = t_up_end - t_up
                    stages["total"] = time.perf_counter() - t0
                    answered = True
                    try:
                        await self._answer(writer, response.status, out_headers, data, t0, stages, keep=keep_alive)
                    finally:
                        # The usage is read once the answer is written: the client does not wait for it.
                        try:
                            obj = json_loads(data)
                        except ValueError:
                            obj = None
                        if isinstance(obj, dict):
                            usage.add_usage(obj)
                            usage.add_text(obj)
        except UpstreamError as exc:
            # The backend failed mid-answer: a stream is cut (the client sees no last chunk); otherwise 502.
            keep_alive, t_up_end = False, time.perf_counter()
            if not answered:
                await self._failed(backend)
                await self._answer(writer, 502, (), _error_body(502, "upstream_error", f"upstream: {exc}"), t0,
                                   stages, keep=False)
            stages.setdefault("total", t_up_end - t0)
        except ConnectionError:
            # The client went away mid-answer (the upstream answer is cut when the response is released): settle
            # what was returned so far, so its reservation does not stay charged whole.
            keep_alive, t_up_end = False, time.perf_counter()
            stages.setdefault("total", t_up_end - t0)
            status = CLIENT_CLOSED
        used = usage.tokens(payload.get("model") if isinstance(payload, dict) else None, est)
        if response.status >= 400:
            used = 0 if usage.total is None and usage.prompt is None else used
        self._settle(device, verdict.tenant, tenant, reserved, used)
        labels = (self._route_of(path), tenant, url, str(status))
        self.metrics.observe(labels, stages, stages["total"] - (t_up_end - t_up))
        return keep_alive

    async def _stream(self, writer, response, out_headers, stages, usage: _Usage, t0: float, t_up: float) -> float:
        """Pass the response through as it arrives (chunked to the client), scanning SSE events for usage; the
        stages known only at the end go in a ``Server-Timing`` trailer."""
        head = [b"HTTP/1.1 %d %s\r\n" % (response.status, _phrase(response.status))]
        head += [b"%s: %s\r\n" % pair for pair in out_headers]
        head.append(b"server-timing: " + _timing_header(stages) + b"\r\n")
        head.append(b"trailer: server-timing\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"".join(head))
        pending = b""
        first = True
        async for chunk in response:
            if first:
                stages["ttft"] = time.perf_counter() - t_up
                first = False
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            if writer.eof:                      # the client closed its side: gone, as nginx takes it (499)
                raise ConnectionResetError("the client closed the connection mid-stream")
            pending += chunk
            *events, pending = _EVENT_END.split(pending)
            for event in events:
                self._scan_event(event, usage)
        if pending.strip():
            self._scan_event(pending, usage)
        t_up_end = time.perf_counter()
        stages.setdefault("ttft", t_up_end - t_up)
        stages["total"] = time.perf_counter() - t0
        trailer = {k: stages[k] for k in ("ttft", "total")}
        writer.write(b"0\r\nserver-timing: " + _timing_header(trailer) + b"\r\n\r\n")
        await writer.drain()
        return t_up_end

    @staticmethod
    def _scan_event(event: bytes, usage: _Usage) -> None:
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if data and data != b"[DONE]":
                    try:
                        obj = json_loads(data)
                    except ValueError:
                        continue
                    usage.add_usage(obj)
                    usage.add_text(obj)

    def _route_of(self, path: str) -> str:
        """The ``route`` label of ``path``: its route's prefix, ``other`` for none."""
        return self._route(path).prefix or "other"

    def _route(self, path: str):
        """The configured route of ``path`` (longest prefix), or a default one (``tenant`` affinity)."""
        for prefix, route in self._routes:
            if path.startswith(prefix):
                return route
        return _NO_ROUTE

    # -- answers --

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle(self, device: _Device, tenant_id, tenant: str, reserved: int, used: int) -> None:
        """Refund what the request reserved and did not use, or debit what it used beyond that. Settlements are
        summed per tenant and applied together within :data:`SETTLE_DELAY_S` (one limiter command per tenant, not
        per request); a refund that comes a few milliseconds late only holds tokens back a little longer."""
        self.metrics.add_tokens("used", tenant, used)
        if tenant_id is None or reserved == used:
            return
        # Keyed by the device object: the primary and the fallback may both be "software".
        entry = self._settlements.setdefault((device, tenant_id), [device, tenant, 0])
        entry[2] += reserved - used
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(
                SETTLE_DELAY_S, lambda: self._spawn(self.flush_settlements()))

    async def flush_settlements(self) -> None:
        """Apply every waiting settlement now (also done on :meth:`stop`)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._settlements = self._settlements, {}
        for (_device, tenant_id), (device, tenant, net) in pending.items():
            try:
                if net > 0:
                    await device.refund(tenant_id, net)
                    self.metrics.add_tokens("refunded", tenant, net)
                elif net < 0:
                    await device.debit(tenant_id, -net)
                    self.metrics.add_tokens("debited", tenant, -net)
            except WirespeedError:
                self.metrics.fallback.labels("settle_failed").inc()

    def _observe_reject(self, path, tenant, backend, status, stages, t0) -> None:
        stages["total"] = time.perf_counter() - t0
        self.metrics.observe((self._route_of(path), tenant, backend, str(status)), stages, stages["total"])

    async def _reject(self, writer, verdict, t0: float, *, keep: bool, stages=None, path="", device=None) -> bool:
        status = verdict.status or 403
        headers = []
        if verdict.retry_after_s is not None:
            headers.append((b"retry-after", b"%d" % max(1, math.ceil(verdict.retry_after_s))))
            headers.append((b"retry-after-ms", b"%d" % max(1, math.ceil(verdict.retry_after_s * 1e3))))
        message = _MESSAGES.get(status, f"Rejected by the gateway: {verdict.reason}.")
        stages = stages if stages is not None else {}
        tenant = device.tenant_name(verdict.tenant) if device is not None else "-"
        self._observe_reject(path, tenant, "-", status, stages, t0)
        await self._answer(writer, status, headers, _error_body(status, verdict.reason, message), t0, stages,
                           keep=keep)
        return keep

    async def _answer(self, writer, status: int, headers, body: bytes, t0: float, stages: dict, *, keep: bool,
                      length: bytes | None | bool = True) -> None:
        """Write an answer with ``body``. ``length``: True for the body's Content-Length; for an answer without a
        body (HEAD, 204, 304), the Content-Length to send as given (bytes), or None for none."""
        stages.setdefault("total", time.perf_counter() - t0)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _phrase(status))]
        head += [b"%s: %s\r\n" % pair for pair in headers]
        if length is True and find_header(headers, b"content-type") is None:
            head.append(b"content-type: application/json\r\n")
        if stages:
            head.append(b"server-timing: " + _timing_header(stages) + b"\r\n")
        if length is True:
            head.append(b"content-length: %d\r\n" % len(body))
        elif length is not None:
            head.append(b"content-length: %s\r\n" % length)
        if not keep:
            head.append(b"connection: close\r\n")
        writer.write(b"".join(head) + b"\r\n" + body)
        await writer.drain()
