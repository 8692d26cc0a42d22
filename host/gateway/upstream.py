"""Pooled keep-alive HTTP/1.1 connections to one backend, with llhttp (httptools) parsing the responses.

Why not ``aiohttp.ClientSession``: it was the first upstream client here, and it cost 186 µs of CPU per request
against a loopback mock, against 46 µs for a connection kept by an asyncio protocol and parsed by llhttp, on the same
machine and mock (``docs/gateway.md``, "Upstream connections"). The gateway's whole budget at 1 000 req/s on one
event loop is well under a millisecond per request, so the client is this module: the framing is llhttp's (the same
parser the client side uses), and what is written here is the pool and the request line.

- :class:`Upstream`: one backend's pool, bounded (``limit`` connections, the rest wait in order), with connections
  reused newest-first and dropped once idle longer than ``keepalive_s`` (below a backend's own keep-alive timeout,
  so the gateway does not send on a connection the backend is closing) or as soon as the backend closes them.
- :meth:`Upstream.request` writes the request and returns the :class:`Response` once its head has arrived. Its body
  is read whole (:meth:`Response.read`) or chunk by chunk as it arrives (``async for``); the connection goes back to
  the pool when the body is complete and both sides keep it alive.
- Errors: :class:`ConnectFailed` when no connection could be made (the request was not sent: another backend may take
  it); :class:`UpstreamError` for anything after that (reset, a response llhttp refuses, a read timeout).
"""

from __future__ import annotations

import asyncio
import collections
import ssl as _ssl
import time
from urllib.parse import urlsplit

import httptools

__all__ = ["Upstream", "Response", "UpstreamError", "ConnectFailed", "find_header"]

#: A response buffers at most this many body bytes before the connection stops reading (the client is slow).
_HIGH_WATER = 256 << 10


def find_header(headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case) in ``(name, value)`` bytes pairs as received, or None."""
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


class UpstreamError(ConnectionError):
    """The backend failed after the request may have been sent: reset, closed early, a malformed response, or no
    byte within the read timeout."""


class ConnectFailed(UpstreamError):
    """No connection to the backend could be made: the request was not sent."""


class Response:
    """One response: ``status``, ``headers`` (``(name, value)`` bytes as received), and the body through
    :meth:`read` or ``async for chunk in response``. Use it as an async context manager, or call :meth:`release`:
    that returns the connection to the pool (or closes it, if the body was not read to its end)."""

    __slots__ = ("status", "headers", "length", "chunked", "keep_alive", "done", "error", "_chunks", "_buffered",
                 "_waiter", "_conn", "_head", "_interim", "_read_timeout", "_bodyless")

    def __init__(self, conn: "_Connection", read_timeout: float, bodyless: bool):
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None
        self.chunked = self.keep_alive = self.done = False
        self.error: BaseException | None = None
        self._chunks: collections.deque = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self._conn = conn
        self._head = False
        self._interim = False
        self._read_timeout = read_timeout
        self._bodyless = bodyless

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        return find_header(self.headers, name)

    # -- fed by the connection --

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_head(self, status: int, keep_alive: bool) -> None:
        self.status, self.keep_alive, self._head = status, keep_alive, True
        for n, v in self.headers:
            low = n.lower()
            if low == b"content-length":
                self.length = int(v)            # (llhttp has checked it is a number, and that it is not repeated)
            elif low == b"transfer-encoding" and b"chunked" in v.lower():
                self.chunked = True
        self._wake()

    def _on_data(self, data: bytes) -> None:
        if self.done:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _on_done(self) -> None:
        self.done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self.done:
            self.error, self.done = error, True
            self._wake()

    # -- read by the caller --

    async def _wait(self) -> None:
        # The read timeout is the pool's sweep (Upstream._sweep), not a timer per wait: most waits are short, and
        # arming and cancelling a timer each time was a measurable share of a request's CPU.
        conn = self._conn
        self._waiter = conn.upstream._loop.create_future()
        conn.deadline = time.monotonic() + self._read_timeout
        try:
            await self._waiter
        finally:
            self._waiter = None
            conn.deadline = None

    def _timed_out(self) -> None:
        self._fail(UpstreamError(f"no byte from {self._conn.upstream.url} in {self._read_timeout} s"))
        self._conn.close()

    async def _await_head(self) -> None:
        while not self._head and not self.done:
            await self._wait()
        if not self._head:
            raise self.error

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self.done:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= _HIGH_WATER // 2:
            self._conn.resume()
        return chunk

    async def read(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.upstream._release(conn, self.done and self.error is None and self.keep_alive)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.release()


class _Connection(asyncio.Protocol):
    """One kept-alive connection; llhttp's callbacks feed its current :class:`Response`."""

    def __init__(self, upstream: "Upstream"):
        self.upstream = upstream
        self.transport = None
        self.response: Response | None = None
        self.parser = None
        self.closed = False
        self.paused = False
        self.idle_since = 0.0
        self.deadline: float | None = None      # while a read waits: when it times out (see Upstream._sweep)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self, read_timeout: float, bodyless: bool) -> Response:
        self.response = Response(self, read_timeout, bodyless)
        self.parser = httptools.HttpResponseParser(self)
        self.upstream._busy.add(self)
        return self.response

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.done:      # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(UpstreamError(f"{self.upstream.url} sent a response llhttp refuses: {exc}"))
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.done:
            if response._head and response.length is None and not response.chunked:
                response.keep_alive = False     # a body delimited by the close (RFC 9112 6.3): it ends here
                response._on_done()
            else:
                response._fail(UpstreamError(f"{self.upstream.url} closed the connection mid-response"
                                             + (f": {exc}" if exc else "")))
        self.upstream._lost(self)

    def pause_writing(self) -> None:        # (request bodies are written whole; the transport buffers them)
        pass

    def resume_writing(self) -> None:
        pass

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- llhttp's callbacks --

    def on_message_begin(self) -> None:
        self.response.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response, parser = self.response, self.parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:       # interim (100 Continue, 103 Early Hints): not forwarded
            response._interim = True
            return
        response._on_head(status, parser.should_keep_alive())
        if response._bodyless:                          # a HEAD's answer: no body, whatever its headers say
            self.parser = None
            response._on_done()

    def on_body(self, body: bytes) -> None:
        self.response._on_data(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response._interim:
            response._interim = False
            return
        response._on_done()


class Upstream:
    """One backend's pool of kept-alive HTTP/1.1 connections.

    Parameters
    ----------
    url : str
        ``http://host:port`` or ``https://host:port``, optionally with a path prefix put before every target.
    limit : int
        Connections open at most; requests beyond wait, in order, for one to come back.
    keepalive_s : float
        A connection idle longer than this is closed instead of reused.
    connect_timeout_s, read_timeout_s : float
        Time allowed to connect, and for each read of the response.
    """

    def __init__(self, url: str, *, limit: int = 64, keepalive_s: float = 4.0, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 600.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"backend URL {url!r}: must be http:// or https:// with a host")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise ValueError(f"backend URL {url!r}: must not have user info, a query or a fragment")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = _ssl.create_default_context() if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/").encode()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if parts.port is None else f"{host}:{parts.port}").encode("idna")
        self.limit, self.keepalive_s = limit, keepalive_s
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self._idle: list[_Connection] = []
        self._open = 0                      # connections open or opening
        self._waiters: collections.deque = collections.deque()
        self._closed = False
        self._busy: set[_Connection] = set()    # connections with a response under way
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_period = 1.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0                   # connections made so far

    async def request(self, method: bytes, target: bytes, headers=(), body: bytes = b"",
                      read_timeout_s: float | None = None) -> tuple[Response, float, float]:
        """Send a request and wait for its response's head: ``(response, queued_s, connect_s)``, the time spent
        waiting for a free connection and opening a new one. ``headers`` are ``(name, value)`` bytes pairs,
        forwarded as they are (the caller drops hop-by-hop ones); ``host`` and ``content-length`` are added."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        queued, connect, conn = await self._acquire()
        timeout = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        period = max(0.01, min(1.0, timeout / 4))
        if self._sweeper is None or period < self._sweep_period:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._sweep_period = period
            self._sweeper = self._loop.call_later(period, self._sweep)
        response = conn.start(timeout, method == b"HEAD")
        head = [b"%s %s%s HTTP/1.1\r\nhost: %s\r\n" % (method, self.prefix, target, self.host_header)]
        head += [b"%s: %s\r\n" % pair for pair in headers]
        if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        conn.transport.write(b"".join(head) + body if body else b"".join(head))
        try:
            await response._await_head()
        except BaseException:
            response.release()
            raise
        return response, queued, connect

    async def _acquire(self) -> tuple[float, float, _Connection]:
        if self._closed:
            raise ConnectFailed(f"{self.url}: the pool is closed")
        now = time.monotonic()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return 0.0, 0.0, conn
            conn.close()
        queued = 0.0
        if self._open >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            t = time.perf_counter()
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():    # handed over as we were cancelled: pass it on
                    if waiter.result() is not None:
                        self._release(waiter.result(), True)
                    else:
                        self._give_back()
                raise
            queued = time.perf_counter() - t
            if conn is not None:
                return queued, 0.0, conn
            # Woken with None: a slot was reserved for us (_wake_one), to open a connection in.
        else:
            self._open += 1
        if self._closed:
            self._give_back()
            raise ConnectFailed(f"{self.url}: the pool is closed")
        t = time.perf_counter()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _transport, conn = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl)
        except (OSError, TimeoutError) as exc:
            self._give_back()
            raise ConnectFailed(f"cannot connect to {self.url}: {exc!r}") from exc
        except BaseException:
            self._give_back()
            raise
        self.connects += 1
        return queued, time.perf_counter() - t, conn

    def _wake_one(self, conn) -> bool:
        """Hand ``conn`` to the first request still waiting; with None, reserve it a slot to open one in (counted in
        ``_open`` now, so that no newcomer takes it first)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._open += 1
                waiter.set_result(conn)
                return True
        return False

    def _give_back(self) -> None:
        """A reserved or opening slot that did not become a connection: free it for the next waiter."""
        self._open -= 1
        if self._open < self.limit:
            self._wake_one(None)

    def _sweep(self) -> None:
        """Every ``_sweep_period`` while responses are under way: fail those whose read has waited past its
        timeout (so the read timeout is enforced to within the period)."""
        now = time.monotonic()
        for conn in [c for c in self._busy if c.deadline is not None and now > c.deadline]:
            if conn.response is not None:
                conn.response._timed_out()
        self._sweeper = self._loop.call_later(self._sweep_period, self._sweep) if self._busy else None

    def _release(self, conn: _Connection, reusable: bool) -> None:
        self._busy.discard(conn)
        conn.response = conn.parser = None
        if reusable and not conn.closed and not self._closed:
            conn.resume()
            if not self._wake_one(conn):
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
        else:
            conn.close()                    # its slot frees when the close completes (_lost)

    def _lost(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._give_back()                   # a waiter may open a new connection in this one's place

    @property
    def idle(self) -> int:
        """Connections open and waiting to be reused."""
        return len(self._idle)

    async def close(self) -> None:
        """Close the idle connections now and the busy ones when they are released; later requests fail."""
        self._closed = True
        if self._sweeper is not None and not self._busy:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        while self._wake_one(None):         # every waiter: each gives its slot back and fails
            pass
        await asyncio.sleep(0)
