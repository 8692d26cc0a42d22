"""The gateway bench's HTTP/1.1 client (``wirespeed bench --gateway --gateway-client raw``, the default): keep-alive
connections as asyncio protocols, each answer parsed by llhttp (httptools), each request written as one buffer.

Why not aiohttp's ``ClientSession``: on this project's 2-core machine it spent about 280 µs of CPU per request,
more than the gateway it measured (about 270 µs), on the same two cores. The generator's CPU is not the target's
latency, but it competes with the target for the cores and delays it. This client spends about 115 µs per request.
``--gateway-client aiohttp`` keeps the aiohttp generator for comparison (``docs/performance.md``).

:class:`RawClient`: ``await client.post(url, body, headers)`` → ``(status, headers, body)``, with ``headers`` the
response's lower-cased names → values (bytes); ``get`` likewise; ``close``. One origin or several; per origin at
most ``limit`` connections, and requests beyond them wait in order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit

import httptools

__all__ = ["RawClient"]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, origin: "_Origin"):
        self.origin = origin
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future | None = None
        self.headers: dict = {}
        self.body: list = []
        self.keep_alive = True
        self.closed = False

    # -- the transport's side --

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad answer: {exc}"))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.origin.lost(self)
        self._fail(ConnectionError("the connection closed before the answer ended"))

    # -- llhttp's callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()      # (llhttp clears it once the message completes)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        answer, self.answer = self.answer, None
        result = (self.parser.get_status_code(), self.headers, b"".join(self.body))
        self.headers, self.body = {}, []
        if answer is not None and not answer.done():
            answer.set_result(result)

    def _fail(self, exc: Exception) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    # -- the client's side --

    async def send(self, data: bytes) -> tuple:
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.answer


class _Origin:
    """The connections to one ``host:port``."""

    def __init__(self, host: str, port: int, limit: int):
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[_Connection] = []
        self.count = 0                              # open or opening
        self.waiters: deque = deque()

    def lost(self, conn: _Connection) -> None:
        """An idle connection the server closed (a busy one is counted out by :meth:`release`)."""
        if conn in self.idle:
            self.idle.remove(conn)
            self.count -= 1
            self._wake()

    async def acquire(self) -> _Connection:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self.count -= 1
            if self.count < self.limit:
                self.count += 1
                try:
                    _transport, conn = await asyncio.get_running_loop().create_connection(
                        lambda: _Connection(self), self.host, self.port)
                except BaseException:
                    self.count -= 1
                    self._wake()
                    raise
                return conn
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()                    # (woken, then cancelled: the turn passes on)
                raise

    def release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not conn.closed and conn.keep_alive:
            self.idle.append(conn)
        else:
            self.count -= 1
            if not conn.closed:
                conn.transport.close()
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()


class RawClient:
    """HTTP/1.1 over keep-alive connections, at most ``limit`` per origin (see the module doc)."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._origins: dict = {}
        self._targets: dict = {}            # url -> (origin, head line + host header)

    def _target(self, method: bytes, url: str):
        key = (method, url)
        target = self._targets.get(key)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"{url!r}: the bench's client speaks plain http:// only")
            port = parts.port or 80
            origin = self._origins.get((parts.hostname, port))
            if origin is None:
                origin = self._origins[parts.hostname, port] = _Origin(parts.hostname, port, self.limit)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target = self._targets[key] = (origin, b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (
                method, path.encode(), parts.netloc.encode()))
        return target

    async def request(self, method: bytes, url: str, headers: dict | None = None, body: bytes = b"") -> tuple:
        origin, head = self._target(method, url)
        lines = [head]
        for name, value in (headers or {}).items():
            lines.append(b"%s: %s\r\n" % (name.encode(), value.encode()))
        if body or method == b"POST":
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        data = b"".join(lines) + body
        conn = await origin.acquire()
        reusable = False
        try:
            answer = await conn.send(data)
            reusable = True
            return answer
        finally:
            origin.release(conn, reusable)          # (cancelled or failed mid-answer: that connection is closed)

    async def post(self, url: str, body: bytes, headers: dict | None = None) -> tuple:
        """``(status, headers, body)`` of a POST."""
        return await self.request(b"POST", url, headers, body)

    async def get(self, url: str, headers: dict | None = None) -> tuple:
        return await self.request(b"GET", url, headers)

    async def close(self) -> None:
        for origin in self._origins.values():
            origin.close()

    async def __aenter__(self) -> "RawClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
