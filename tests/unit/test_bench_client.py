"""The gateway bench's HTTP/1.1 client (``host/tools/bench_client.py``) against a raw asyncio server on loopback:
keep-alive reuse, ``Connection: close``, a connection the server drops while idle, the per-origin limit, and a
request cancelled mid-answer. Each test is bounded in time."""

import asyncio

import pytest

from wirespeed.host.tools.bench_client import RawClient

CAP_S = 20


class Server:
    """Answers each request (after ``delay_s``) with ``answer(n)``; counts connections and requests; ``hold`` makes
    it wait until released."""

    def __init__(self, answer=None, delay_s: float = 0.0):
        self.answer = answer or (lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-n: %d\r\n\r\nok" % n)
        self.delay_s = delay_s
        self.connections, self.requests, self.open, self.peak = 0, 0, 0, 0
        self.writers = []

    async def handle(self, reader, writer):
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")]
                if length:
                    await reader.readexactly(length[0])
                self.requests += 1
                n = self.requests
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(self.answer(n))
                await writer.drain()
                if b"connection: close" in self.answer(n).lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return "http://127.0.0.1:%d/v1/x" % self.server.sockets[0].getsockname()[1]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, CAP_S))


def test_answers_on_one_kept_alive_connection_with_their_headers_and_body():
    async def test():
        server = Server()
        url = await server.start()
        async with RawClient() as client:
            answers = [await client.post(url, b"{}", {"x-session-id": "a"}) for _ in range(5)]
        server.server.close()
        return server, answers
    server, answers = run(test())
    assert [(status, headers[b"x-n"], body) for status, headers, body in answers] == \
        [(200, b"%d" % n, b"ok") for n in range(1, 6)]
    assert server.connections == 1


def test_a_closed_or_dropped_connection_is_replaced():
    async def test():
        server = Server(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n%s\r\n" % (
            b"Connection: close\r\n" if n == 1 else b""))
        url = await server.start()
        async with RawClient() as client:
            first = await client.get(url)                   # answered with Connection: close
            second = await client.get(url)
            for w in server.writers:                        # the server drops the idle connection
                w.close()
            await asyncio.sleep(0.1)
            third = await client.get(url)
        server.server.close()
        return server, [first[0], second[0], third[0]]
    server, statuses = run(test())
    assert statuses == [200, 200, 200] and server.connections == 3


def test_requests_beyond_the_limit_wait_for_a_connection():
    async def test():
        server = Server(delay_s=0.05)
        url = await server.start()
        async with RawClient(limit=2) as client:
            answers = await asyncio.gather(*(client.post(url, b"x") for _ in range(6)))
        server.server.close()
        return server, answers
    server, answers = run(test())
    assert [a[0] for a in answers] == [200] * 6
    assert server.connections == 2 and server.peak == 2


def test_a_request_cancelled_mid_answer_closes_its_connection_and_frees_its_place():
    async def test():
        server = Server(delay_s=0.5)
        url = await server.start()
        async with RawClient(limit=1) as client:
            slow = asyncio.ensure_future(client.get(url))
            await asyncio.sleep(0.1)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            server.delay_s = 0.0
            status = (await client.get(url))[0]
        server.server.close()
        return server, status
    server, status = run(test())
    assert status == 200 and server.connections == 2       # the cut connection was not reused


def test_a_refused_connection_is_an_error_and_https_is_refused():
    async def test():
        async with RawClient() as client:
            with pytest.raises(OSError):
                await client.get("http://127.0.0.1:1/x")
            with pytest.raises(ValueError, match="http://"):
                await client.get("https://127.0.0.1:1/x")
    run(test())
