"""The bench's own servers (``wirespeed.host.tools.bench_backends``): the lean backend answers a chat completion as the
aiohttp ``MockBackend`` does (the same choices and usage, through the openai SDK), and the passthrough forwards
requests and answers unchanged on kept-alive connections, with a 502 when the backend is gone. Each test runs under
a 10 s cap."""

import asyncio
import json

import openai

from wirespeed.host.gateway.mock import MockBackend
from wirespeed.host.tools.bench_backends import BenchBackend, Passthrough

CAP_S = 10
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something."}]


def run(test):
    return asyncio.run(asyncio.wait_for(test(), CAP_S))


async def _chat(url: str, **kw):
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=5) as client:
        return await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, **kw)


async def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    answer = await reader.read()
    writer.close()
    return answer


def _same(raw) -> dict:
    body = json.loads(raw.content)
    return {k: body[k] for k in ("object", "model", "choices", "usage")}


def test_bench_backend_answers_as_the_mock_does():
    async def main():
        bench, mock = BenchBackend(completion_tokens=8), MockBackend("m", completion_tokens=8)
        bench_url, mock_url = await bench.start(), await mock.start()
        try:
            for kw in ({"max_tokens": 5}, {"max_tokens": 50}, {}):
                ours, theirs = await _chat(bench_url, **kw), await _chat(mock_url, **kw)
                assert ours.status_code == 200 and _same(ours) == _same(theirs)
            assert bench.served == 3
            models = await _raw(bench_url, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert models.startswith(b"HTTP/1.1 200 OK") and b'"gpt-4o-mini"' in models
            missing = await _raw(bench_url, b"GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404 ") and b'"error"' in missing
            try:
                await _chat(bench_url, stream=True)
                raise AssertionError("a stream was answered")
            except openai.BadRequestError as e:
                assert "does not stream" in str(e)
            bad = await _raw(bench_url, b"NOT HTTP\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400 ")
        finally:
            await bench.stop()
            await mock.stop()
    run(main)


def test_passthrough_forwards_unchanged_and_keeps_connections():
    async def main():
        mock = MockBackend("m", completion_tokens=8)
        mock_url = await mock.start()
        proxy = Passthrough(mock_url)
        proxy_url = await proxy.start()
        try:
            direct = await _chat(mock_url, max_tokens=3)
            for _ in range(3):
                through = await _chat(proxy_url, max_tokens=3, extra_headers={"x-session-id": "s1"})
                assert through.status_code == 200 and _same(through) == _same(direct)
                assert through.headers["x-mock-backend"] == "m"
            assert [r.headers.get("x-session-id") for r in mock.requests[-3:]] == ["s1"] * 3
            assert proxy.upstream.connects == 1                    # one kept-alive upstream connection
            # Two requests in one write, then one with Connection: close: three answers, in order, on one
            # connection that stays open until the last (llhttp's keep-alive is read at the end of each head).
            get = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
            answers = await _raw(proxy_url, get * 2 + get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            assert answers.count(b"HTTP/1.1 200 ") == 3 and answers.count(b"connection: close") == 1
            await mock.stop()
            gone = await _raw(proxy_url, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            assert gone.startswith(b"HTTP/1.1 502 ")
        finally:
            await proxy.stop()
            await mock.stop()
    run(main)
