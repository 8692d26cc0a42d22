"""The gateway's upstream client (``wirespeed.host.gateway.upstream``) against raw loopback servers that send exact
bytes, so each framing case (Content-Length, chunked, close-delimited, interim 1xx, HEAD, malformed, cut short) is
controlled byte for byte; and its pool: reuse, the ``limit`` bound and its queue, ``keepalive_s``, a backend closing
an idle connection, read timeouts and backpressure. Each test runs under a 3 s cap."""

import asyncio
import contextlib
import os
import socket
import time

import pytest

from wirespeed.host.gateway import upstream as upstream_mod
from wirespeed.host.gateway.upstream import ConnectFailed, Upstream, UpstreamError

CAP_S = 3

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: a\r\n\r\nhello"


def run(test):
    """Run the coroutine function ``test`` on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(test(), CAP_S))


async def until(predicate, timeout=1.0):
    """Poll ``predicate`` until it holds; TimeoutError after ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


class RawServer:
    """A loopback server calling ``handler(server, reader, writer)`` for each connection; it counts connections
    (``connections``, ``live``, ``max_live``) and records each request read by :meth:`read_request`."""

    def __init__(self, handler):
        self.handler = handler
        self.connections = self.live = self.max_live = 0
        self.requests: list[tuple[bytes, bytes]] = []       # (head, body) as received
        self.writers = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        self.writers.append(writer)
        try:
            await self.handler(self, reader, writer)
        except ConnectionError:
            pass
        finally:
            self.live -= 1
            writer.close()

    async def read_request(self, reader) -> bytes | None:
        """The next request's head (its body read by its content-length), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return head


def replies(answer, *, close_after=None, delay=0.0):
    """A handler answering each request on a connection with ``answer`` (bytes, or a function of the request's
    head returning bytes), after ``delay`` s; it closes the connection after ``close_after`` answers (and
    ``close_after`` is a number), else keeps reading."""
    async def handler(server, reader, writer):
        n = 0
        while (head := await server.read_request(reader)) is not None:
            if delay:
                await asyncio.sleep(delay)
            writer.write(answer(head) if callable(answer) else answer)
            await writer.drain()
            n += 1
            if close_after is not None and n >= close_after:
                return
    return handler


@contextlib.asynccontextmanager
async def serving(handler, path="", **kw):
    async with RawServer(handler) as server:
        up = Upstream(server.url + path, **kw)
        try:
            yield server, up
        finally:
            await up.close()


async def get(up, target=b"/", method=b"GET", **kw):
    """Request, read the whole body, release: ``(response, body, queued, connect)``."""
    response, queued, connect = await up.request(method, target, **kw)
    async with response:
        body = await response.read()
    return response, body, queued, connect


# -- framing --

def test_content_length_response_and_reuse():
    async def main():
        async with serving(replies(OK)) as (server, up):
            r, queued, connect = await up.request(b"GET", b"/a")
            async with r:
                head = (r.status, list(r.headers), r.length, r.chunked, r.keep_alive, r.header(b"x-test"))
                body = await r.read()
            idle = up.idle
            r2, body2, queued2, connect2 = await get(up, b"/b")
            return head, body, queued, connect, idle, (r2.status, body2, queued2, connect2, up.idle), server, up

    head, body, queued, connect, idle, second, server, up = run(main)
    assert head == (200, [(b"Content-Length", b"5"), (b"X-Test", b"a")], 5, False, True, b"a")
    assert body == b"hello"
    assert queued == 0.0 and connect > 0
    assert idle == 1
    assert second == (200, b"hello", 0.0, 0.0, 1)        # no connect: the kept connection, back in the pool
    assert up.connects == 1 and server.connections == 1
    assert [h.split(b" ")[1] for h, _ in server.requests] == [b"/a", b"/b"]


def test_chunked_response_streams_chunk_by_chunk():
    async def main():
        release = asyncio.Event()

        async def handler(server, reader, writer):
            while await server.read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                await release.wait()        # the rest only once the client has seen the first chunk
                release.clear()
                writer.write(b"6\r\nsecond\r\n4\r\nlast\r\n0\r\n\r\n")
                await writer.drain()

        async with serving(handler) as (server, up):
            r, _, _ = await up.request(b"GET", b"/stream")
            async with r:
                framing = (r.status, r.chunked, r.length, r.keep_alive)
                first = await anext(r)
                sent_rest_before_first = release.is_set()
                release.set()
                rest = [chunk async for chunk in r]
            idle = up.idle
            release.set()                           # (the second answer goes straight through)
            _, again, _, connect2 = await get(up, b"/stream2")
            return framing, first, sent_rest_before_first, rest, idle, again, connect2, server, up

    framing, first, early, rest, idle, again, connect2, server, up = run(main)
    assert framing == (200, True, None, True)
    assert first == b"first" and not early
    assert b"".join(rest) == b"secondlast"
    assert idle == 1
    assert again == b"firstsecondlast" and connect2 == 0.0
    assert up.connects == 1 and server.connections == 1


def test_close_delimited_body():
    async def handler(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\npart1")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"-part2")
        await writer.drain()
        # (returning closes the connection: that ends the body)

    async def main():
        async with serving(handler) as (server, up):
            r, _, _ = await up.request(b"GET", b"/")
            async with r:
                framing = (r.status, r.length, r.chunked, r.keep_alive)
                body = await r.read()
                done = (r.done, r.error, r.keep_alive)
            await until(lambda: up._open == 0)
            idle = up.idle
            _, body2, _, connect2 = await get(up)
            return framing, body, done, idle, body2, connect2, server, up

    framing, body, done, idle, body2, connect2, server, up = run(main)
    assert framing == (200, None, False, False)
    assert body == b"part1-part2"
    assert done == (True, None, False)
    assert idle == 0
    assert body2 == b"part1-part2" and connect2 > 0
    assert up.connects == 2 and server.connections == 2


def test_connection_close_header_is_not_reused():
    async def main():
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        async with serving(replies(answer)) as (server, up):     # (the server would keep it: the client must not)
            r, body, _, _ = await get(up)
            await until(lambda: up._open == 0)
            idle = up.idle
            await get(up)
            return r.keep_alive, body, idle, server, up

    keep_alive, body, idle, server, up = run(main)
    assert (keep_alive, body, idle) == (False, b"ok", 0)
    assert up.connects == 2 and server.connections == 2


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "split-writes"])
def test_interim_responses_are_skipped(split):
    parts = [b"HTTP/1.1 100 Continue\r\n\r\n",
             b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok"]

    async def handler(server, reader, writer):
        while await server.read_request(reader) is not None:
            for part in (parts if split else [b"".join(parts)]):
                writer.write(part)
                await writer.drain()
                if split:
                    await asyncio.sleep(0.005)

    async def main():
        async with serving(handler) as (server, up):
            r, body, _, _ = await get(up, method=b"POST", body=b"x")
            r2, body2, _, connect2 = await get(up, method=b"POST", body=b"y")
            return r, body, (r2.status, body2, connect2), up

    r, body, second, up = run(main)
    assert r.status == 200
    assert r.headers == [(b"Content-Length", b"2"), (b"X-Final", b"1")]
    assert r.header(b"link") is None
    assert body == b"ok" and r.keep_alive
    assert second == (200, b"ok", 0.0) and up.connects == 1


def test_head_does_not_wait_for_a_body():
    def answer(head):
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"      # (a HEAD's answer: no body follows)
        return OK

    async def main():
        async with serving(replies(answer), read_timeout_s=1.0) as (server, up):
            r, _, _ = await up.request(b"HEAD", b"/")
            async with r:
                t = time.perf_counter()
                body = await r.read()
                waited = time.perf_counter() - t
                state = (r.status, r.length, r.done, r.error, r.keep_alive)
            idle = up.idle
            _, body2, _, connect2 = await get(up)           # the same connection, parsing afresh
            return body, waited, state, idle, body2, connect2, server, up

    body, waited, state, idle, body2, connect2, server, up = run(main)
    assert body == b"" and waited < 0.5
    assert state == (200, 1000, True, None, True)
    assert idle == 1
    assert body2 == b"hello" and connect2 == 0.0
    assert up.connects == 1 and server.connections == 1


# -- errors --

def test_malformed_response_raises_upstream_error():
    async def main():
        async with serving(replies(b"HTTP/1.1 abc\r\n\r\n")) as (server, up):
            with pytest.raises(UpstreamError) as info:
                await up.request(b"GET", b"/")
            await until(lambda: up._open == 0)
            return info.value, up

    error, up = run(main)
    assert not isinstance(error, ConnectFailed)         # it was sent
    assert "llhttp refuses" in str(error)
    assert up.idle == 0 and up.connects == 1


def test_close_mid_body_raises_while_reading():
    async def main():
        head_and_3 = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
        async with serving(replies(head_and_3, close_after=1)) as (server, up):
            r, _, _ = await up.request(b"GET", b"/")
            got = []
            async with r:
                with pytest.raises(UpstreamError) as info:
                    async for chunk in r:
                        got.append(chunk)
            await until(lambda: up._open == 0)
            # read() as well, on a fresh connection
            r2, _, _ = await up.request(b"GET", b"/")
            async with r2:
                with pytest.raises(UpstreamError):
                    await r2.read()
            await until(lambda: up._open == 0)
            return r, b"".join(got), info.value, up

    r, got, error, up = run(main)
    assert r.length == 10
    assert got == b"abc"                               # what came is delivered, then the error
    assert not isinstance(error, ConnectFailed) and "mid-response" in str(error)
    assert up.idle == 0 and up.connects == 2


def test_connection_refused_is_connect_failed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # (closed without listen: nothing accepts on that port)

    async def main():
        up = Upstream(f"http://127.0.0.1:{port}", connect_timeout_s=1.0)
        with pytest.raises(ConnectFailed) as info:
            await up.request(b"GET", b"/")
        return info.value, up

    error, up = run(main)
    assert isinstance(error, UpstreamError)
    assert f"127.0.0.1:{port}" in str(error)
    assert up._open == 0 and up.connects == 0 and up.idle == 0


def test_read_timeout_while_reading_the_body():
    async def handler(server, reader, writer):
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")   # then nothing, connection held
        await writer.drain()
        await reader.read()

    async def main():
        async with serving(handler, read_timeout_s=0.1) as (server, up):
            r, _, _ = await up.request(b"GET", b"/")
            t = time.perf_counter()
            async with r:
                with pytest.raises(UpstreamError) as info:
                    await r.read()
            waited = time.perf_counter() - t
            await until(lambda: up._open == 0)
            return r.status, info.value, waited, up

    status, error, waited, up = run(main)
    assert status == 200
    assert not isinstance(error, ConnectFailed)
    assert "no byte" in str(error) and "0.1 s" in str(error)
    assert 0.09 <= waited < 1.0
    assert up.idle == 0


def test_read_timeout_waiting_for_the_head_per_request():
    async def handler(server, reader, writer):
        await server.read_request(reader)
        await reader.read()                             # never answers

    async def main():
        async with serving(handler, read_timeout_s=30.0) as (server, up):
            t = time.perf_counter()
            with pytest.raises(UpstreamError) as info:
                await up.request(b"GET", b"/", read_timeout_s=0.05)     # the per-request timeout wins
            waited = time.perf_counter() - t
            await until(lambda: up._open == 0)
            return info.value, waited, up

    error, waited, up = run(main)
    assert "no byte" in str(error) and "0.05 s" in str(error)
    assert waited < 1.0 and up.idle == 0


def test_release_before_the_end_closes_the_connection():
    async def handler(server, reader, writer):
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()

    async def main():
        async with serving(handler) as (server, up):
            r, _, _ = await up.request(b"GET", b"/")
            r.release()                                 # the rest of the body never read
            r.release()                                 # (twice is harmless)
            await until(lambda: up._open == 0)
            return up

    up = run(main)
    assert up.idle == 0 and up.connects == 1


# -- the pool --

def test_pool_limit_queues_and_reuses():
    async def main():
        async with serving(replies(OK, delay=0.05), limit=1) as (server, up):
            results = await asyncio.gather(get(up, b"/1"), get(up, b"/2"))
            return [(body, queued, connect) for _, body, queued, connect in results], (up.idle, up._open), server, up

    results, pool, server, up = run(main)
    (body1, queued1, connect1), (body2, queued2, connect2) = results
    assert body1 == body2 == b"hello"
    assert queued1 == 0.0 and connect1 > 0
    assert queued2 > 0.03 and connect2 == 0.0           # it waited for the first, then took its connection
    assert up.connects == 1 and server.connections == 1 and server.max_live == 1
    assert pool == (1, 1)


def test_cancelled_queued_request_gives_way():
    async def main():
        async with serving(replies(OK, delay=0.05), limit=1) as (server, up):
            first = asyncio.create_task(get(up, b"/1"))
            await until(lambda: up._open == 1)
            gone = asyncio.create_task(get(up, b"/gone"))
            kept = asyncio.create_task(get(up, b"/kept"))
            await until(lambda: len(up._waiters) == 2)
            gone.cancel()                               # while queued
            with pytest.raises(asyncio.CancelledError):
                await gone
            bodies = [body for _, body, _, _ in await asyncio.gather(first, kept)]
            return bodies, [h.split(b" ")[1] for h, _ in server.requests], up.connects

    bodies, targets, connects = run(main)
    assert bodies == [b"hello", b"hello"]
    assert targets == [b"/1", b"/kept"] and connects == 1


def test_keepalive_expiry_opens_a_new_connection():
    async def main():
        async with serving(replies(OK), keepalive_s=0.05) as (server, up):
            await get(up)
            await asyncio.sleep(0.1)
            _, body, _, connect = await get(up)
            await until(lambda: up._open == 1)          # the expired one was closed
            return body, connect, up.idle, server, up

    body, connect, idle, server, up = run(main)
    assert body == b"hello" and connect > 0
    assert up.connects == 2 and server.connections == 2
    assert idle == 1


def test_backend_closing_an_idle_connection_drops_it():
    async def handler(server, reader, writer):
        await replies(OK, close_after=1)(server, reader, writer)
        await asyncio.sleep(0.02)                       # then closes it, idle

    async def main():
        async with serving(handler) as (server, up):
            await get(up)
            idle_before = up.idle
            await until(lambda: up.idle == 0)
            open_after = up._open
            r, body, _, connect = await get(up)
            return idle_before, open_after, r.status, body, connect, server, up

    idle_before, open_after, status, body, connect, server, up = run(main)
    assert idle_before == 1
    assert open_after == 0
    assert (status, body) == (200, b"hello") and connect > 0
    assert up.connects == 2 and server.connections == 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_backpressure_pauses_reading_and_keeps_the_body(chunked):
    payload = os.urandom(2 << 20)

    async def handler(server, reader, writer):
        while await server.read_request(reader) is not None:
            if chunked:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(payload), 64 << 10):
                    piece = payload[i:i + (64 << 10)]
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
            await writer.drain()

    async def main():
        async with serving(handler) as (server, up):
            r, _, _ = await up.request(b"GET", b"/big")
            conn = r._conn
            await until(lambda: conn.paused)            # the consumer does not read: the connection stops
            buffered = r._buffered
            await asyncio.sleep(0.05)
            still = (conn.paused, r._buffered)
            async with r:
                body = await r.read()
                paused_after = conn.paused
            return buffered, still, body, paused_after, up.idle

    buffered, still, body, paused_after, idle = run(main)
    assert upstream_mod._HIGH_WATER < buffered < len(payload) // 2
    assert still == (True, buffered)                    # nothing more read while paused
    assert len(body) == len(payload) and body == payload
    assert not paused_after
    assert idle == 1                                    # and the connection is still good


def test_request_bytes_on_the_wire():
    async def main():
        async with serving(replies(OK), path="/prefix") as (server, up):
            await get(up, b"/v1/models", headers=[(b"x-a", b"1"), (b"Authorization", b"Bearer k")])
            await get(up, b"/v1/chat?x=1", method=b"POST", body=b'{"a":1}')
            await get(up, b"/empty", method=b"POST")
            await get(up, b"/gone", method=b"DELETE")
            return server

    server = run(main)
    host = b"127.0.0.1:%d" % server.port
    assert server.requests == [
        (b"GET /prefix/v1/models HTTP/1.1\r\nhost: " + host + b"\r\nx-a: 1\r\nAuthorization: Bearer k\r\n\r\n", b""),
        (b"POST /prefix/v1/chat?x=1 HTTP/1.1\r\nhost: " + host + b"\r\ncontent-length: 7\r\n\r\n", b'{"a":1}'),
        (b"POST /prefix/empty HTTP/1.1\r\nhost: " + host + b"\r\ncontent-length: 0\r\n\r\n", b""),
        (b"DELETE /prefix/gone HTTP/1.1\r\nhost: " + host + b"\r\n\r\n", b""),
    ]


def test_url_prefix_trailing_slash_and_default_port():
    up = Upstream("http://example.test/base/")
    assert (up.host, up.port, up.prefix, up.host_header, up.ssl) == ("example.test", 80, b"/base", b"example.test",
                                                                     None)
    up = Upstream("https://example.test:8443")
    assert (up.port, up.prefix, up.host_header) == (8443, b"", b"example.test:8443") and up.ssl is not None
    assert Upstream("https://example.test").port == 443


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://", "127.0.0.1:8000", "/just/a/path"])
def test_bad_url_is_value_error(url):
    with pytest.raises(ValueError):
        Upstream(url)


def test_closed_pool_refuses():
    async def main():
        async with serving(replies(OK)) as (server, up):
            await get(up)
            await up.close()
            idle = up.idle
            with pytest.raises(ConnectFailed):
                await up.request(b"GET", b"/")
            await until(lambda: up._open == 0)
            return idle

    assert run(main) == 0


# -- bugs found in upstream.py (these fail until it is fixed) --

def _partial(head):
    """The answer to ``/hold``: a head and part of a body (the response cannot be reused); else OK."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" if b" /hold " in head else OK


# A waiter woken with a free slot (``_wake_one(None)``) that is cancelled before it runs gives the slot back to the
# next waiter (it used to drop the wake-up, leaving the next one waiting with ``_open < limit``).
def test_a_cancelled_waiter_passes_its_slot_on():
    async def main():
        async with serving(replies(_partial), limit=1) as (server, up):
            held, _, _ = await up.request(b"GET", b"/hold")
            a = asyncio.create_task(get(up, b"/a"))
            b = asyncio.create_task(get(up, b"/b"))
            await until(lambda: len(up._waiters) == 2)
            held.release()      # not reusable: closed; connection_lost (next loop turn) wakes `a` with its slot
            asyncio.get_running_loop().call_soon(a.cancel)     # after connection_lost, before `a` resumes
            with pytest.raises(asyncio.CancelledError):
                await a
            try:
                async with asyncio.timeout(0.5):
                    _, body, _, _ = await b
            except TimeoutError:
                body = None
            return body, up._open, list(up._waiters)

    body, open_, waiters = run(main)
    assert body == b"hello", f"the second waiter hung with _open={open_}, {len(waiters)} waiter(s) queued"


# The slot a lost connection hands to a waiter (``_wake_one(None)``) is reserved, so a request that runs before that
# waiter resumes queues instead of opening a connection over ``limit``.
def test_the_limit_holds_when_a_newcomer_races_a_woken_waiter():
    async def main():
        async with serving(replies(_partial), limit=1) as (server, up):
            held, _, _ = await up.request(b"GET", b"/hold")
            a = asyncio.create_task(get(up, b"/a"))
            await until(lambda: len(up._waiters) == 1)
            held.release()      # closed; connection_lost runs next turn and wakes `a` with the freed slot
            c = asyncio.create_task(get(up, b"/c"))            # scheduled between connection_lost and `a`
            bodies = [body for _, body, _, _ in await asyncio.gather(a, c)]
            return bodies, up._open, up.idle, up.connects

    bodies, open_, idle, connects = run(main)
    assert bodies == [b"hello", b"hello"]
    assert open_ <= 1 and idle <= 1, f"limit=1 but {open_} connections open ({idle} idle, {connects} made)"


# close() fails every queued request with ConnectFailed (it used to wake one, and the rest waited forever).
def test_close_fails_every_queued_request():
    async def main():
        async with serving(replies(_partial), limit=1) as (server, up):
            held, _, _ = await up.request(b"GET", b"/hold")
            waiting = [asyncio.create_task(up.request(b"GET", b"/%d" % i)) for i in range(3)]
            await until(lambda: len(up._waiters) == 3)
            await up.close()
            held.release()
            done, pending = await asyncio.wait(waiting, timeout=0.5)
            for task in pending:
                task.cancel()
            return [type(t.exception()).__name__ for t in done], len(pending)

    failed, pending = run(main)
    assert pending == 0, f"{pending} queued request(s) still waiting after close(); the others raised {failed}"
    assert failed == ["ConnectFailed"] * 3


# A backend URL with user info is refused: it used to go out whole as the Host header (not a valid Host, RFC 9110
# 7.2, and the secret in clear).
def test_userinfo_in_the_url_is_refused_or_left_out_of_the_host_header():
    try:
        up = Upstream("http://user:secret@example.test:8000")
    except ValueError:
        return
    assert up.host_header == b"example.test:8000"
