"""The gateway's mock backend (``wirespeed.host.gateway.mock``), called the way the gateway's clients call a real
one: the openai SDK for the OpenAI endpoints, raw HTTP for Anthropic's and for malformed requests. Usage numbers
are exact, streams are incremental and can be held, a stopped backend refuses and cuts connections, and a restarted
one is back at the same address. Each test runs under a 10 s cap."""

import asyncio
import contextlib
import json
import time

import aiohttp
import openai
import pytest

from wirespeed.host.gateway import mock
from wirespeed.host.gateway.mock import MOCK_MODEL, MockBackend, prompt_tokens, start_mocks

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something."}]
CAP_S = 10


def run(test):
    """Run the coroutine function ``test`` on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(test(), CAP_S))


@contextlib.asynccontextmanager
async def serving(**kw):
    backend = MockBackend("mock-a", **kw)
    url = await backend.start()
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=5)
    try:
        yield backend, client
    finally:
        await client.close()
        await backend.stop()


def words(n):
    return " ".join(f"tok{i}" for i in range(n))


@pytest.mark.parametrize("max_tokens, n, finish", [(None, 16, "stop"), (5, 5, "length"), (16, 16, "stop"),
                                                   (40, 16, "stop")])
def test_chat_usage_is_exact(max_tokens, n, finish):
    async def main():
        async with serving() as (backend, client):
            extra = {} if max_tokens is None else {"max_tokens": max_tokens}
            raw = await client.chat.completions.with_raw_response.create(model=MOCK_MODEL, messages=MESSAGES, **extra)
            return backend, raw.headers["x-mock-backend"], raw.parse()

    backend, tag, r = run(main)
    assert tag == "mock-a"
    assert r.object == "chat.completion" and r.model == MOCK_MODEL
    assert (r.choices[0].message.role, r.choices[0].message.content) == ("assistant", words(n))
    assert r.choices[0].finish_reason == finish
    p = prompt_tokens(MOCK_MODEL, MESSAGES)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (p, n, p + n)
    [got] = backend.requests
    assert (got.method, got.path) == ("POST", "/v1/chat/completions")
    assert got.headers["authorization"] == "Bearer x"
    assert got.json()["messages"] == MESSAGES


def test_max_completion_tokens_and_no_usage():
    async def main():
        async with serving(completion_tokens=4, usage=False) as (_, client):
            return await client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=3)

    r = run(main)
    assert r.choices[0].message.content == words(3) and r.choices[0].finish_reason == "length"
    assert r.usage is None


@pytest.mark.parametrize("include_usage, usage", [(True, True), (False, True), (True, False)])
def test_chat_stream(include_usage, usage):
    async def main():
        async with serving(usage=usage) as (_, client):
            stream = await client.chat.completions.create(
                model=MOCK_MODEL, messages=MESSAGES, max_tokens=6, stream=True,
                stream_options={"include_usage": include_usage})
            return [chunk async for chunk in stream]

    chunks = run(main)
    with_choices = [c for c in chunks if c.choices]
    assert len(with_choices) == 6 + 1                           # one per token, then the finish chunk
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == words(6)
    assert [c.choices[0].finish_reason for c in with_choices] == [None] * 6 + ["length"]
    if include_usage and usage:
        assert chunks[-1].choices == [] and len(chunks) == 8
        p = prompt_tokens(MOCK_MODEL, MESSAGES)
        u = chunks[-1].usage
        assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (p, 6, p + 6)
    else:
        assert len(chunks) == 7


def test_legacy_completions():
    async def main():
        async with serving(completion_tokens=3) as (_, client):
            whole = await client.completions.create(model="m", prompt=["one two", "three"])
            stream = await client.completions.create(model="m", prompt="hello", stream=True,
                                                     stream_options={"include_usage": True})
            return whole, [c async for c in stream]

    whole, chunks = run(main)
    assert whole.object == "text_completion"
    assert [(c.index, c.text, c.finish_reason) for c in whole.choices] == [(0, words(3), "stop"), (1, words(3), "stop")]
    p = prompt_tokens("m", ["one two", "three"])
    assert p == prompt_tokens("m", "one two") + prompt_tokens("m", "three")
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens) == (p, 6, p + 6)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == words(3)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_embeddings_are_deterministic_in_both_encodings():
    async def main():
        async with serving(embedding_dim=12) as (_, client):
            b64 = await client.embeddings.create(model="e", input=["alpha", "beta"])          # the SDK asks base64
            flt = await client.embeddings.create(model="e", input="alpha", encoding_format="float")
            small = await client.embeddings.create(model="e", input="alpha", dimensions=4, encoding_format="float")
            return b64, flt, small

    b64, flt, small = run(main)
    alpha, beta = (d.embedding for d in b64.data)
    assert len(alpha) == len(beta) == 12 and len(small.data[0].embedding) == 4
    assert alpha == flt.data[0].embedding                       # same text, same vector, either encoding
    assert alpha != beta
    assert abs(sum(v * v for v in alpha) - 1) < 1e-5
    assert b64.usage.prompt_tokens == b64.usage.total_tokens == prompt_tokens("e", ["alpha", "beta"])


def test_models_list():
    async def main():
        async with serving() as (_, client):
            return [m async for m in client.models.list()]

    [model] = run(main)
    assert (model.id, model.owned_by, model.created) == (MOCK_MODEL, "mock-a", 0)


def test_prompt_tokens_follows_openais_chat_formula(monkeypatch):
    monkeypatch.setattr(mock, "count_text_tokens", lambda model, text: len(text))     # a token a character
    messages = [{"role": "system", "content": "a b"},
                {"role": "user", "name": "bob",
                 "content": [{"type": "text", "text": "c"}, {"type": "image_url", "image_url": {"url": "x"}},
                             {"type": "text", "text": "d"}]},
                {"role": "assistant", "content": None}]
    # 3 per message + role + content (text parts only), + name + 1, and 3 for the reply.
    assert prompt_tokens("m", messages) == (3 + 6 + 3) + (3 + 4 + 2 + 3 + 1) + (3 + 9 + 0) + 3
    assert prompt_tokens("m", "hello") == 5 and prompt_tokens("m", ["ab", "cde"]) == 5


async def post(url, path, data):
    async with aiohttp.ClientSession() as s:
        async with s.post(url + path, data=data if isinstance(data, (str, bytes)) else json.dumps(data)) as r:
            return r.status, r.headers, await r.read()


def sse_events(raw: bytes):
    """(event, data) pairs of a text/event-stream body."""
    out = []
    for block in raw.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), json.loads(fields["data"])))
    return out


def test_anthropic_messages():
    body = {"model": "claude-x", "max_tokens": 3, "system": "Be brief.", "messages": MESSAGES[1:]}

    async def main():
        async with serving() as (backend, _):
            return (await post(backend.url, "/v1/messages", body),
                    await post(backend.url, "/v1/messages", {**body, "max_tokens": 50, "stream": True}))

    (status, _, whole), (s_status, s_headers, streamed) = run(main)
    inputs = prompt_tokens("claude-x", [{"role": "system", "content": "Be brief."}, *MESSAGES[1:]])
    assert status == 200 and json.loads(whole) == {
        "id": json.loads(whole)["id"], "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": words(3)}], "model": "claude-x", "stop_reason": "max_tokens",
        "stop_sequence": None, "usage": {"input_tokens": inputs, "output_tokens": 3}}
    assert s_status == 200 and s_headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed)
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events] == ["message_start", "content_block_start", *["content_block_delta"] * 16,
                                            "content_block_stop", "message_delta", "message_stop"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == inputs
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == words(16)
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn" and events[-2][1]["usage"] == {"output_tokens": 16}


@pytest.mark.parametrize("path, data, says", [
    ("/v1/chat/completions", "{not json", "not valid JSON"),
    ("/v1/chat/completions", {"model": "m"}, "'messages'"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "max_tokens": 0}, "'max_tokens'"),
    ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "max_tokens": True}, "'max_tokens'"),
    ("/v1/completions", {"model": "m", "prompt": [1, 2]}, "'prompt'"),
    ("/v1/embeddings", {"input": "x"}, "'model'"),
    ("/v1/messages", {"model": "m", "messages": MESSAGES}, "'max_tokens'"),
])
def test_bad_requests_get_openai_format_400(path, data, says):
    async def main():
        async with serving() as (backend, _):
            return await post(backend.url, path, data)

    status, headers, body = run(main)
    assert status == 400 and headers["x-mock-backend"] == "mock-a"
    error = json.loads(body)["error"]
    assert says in error["message"] and (error["type"], error["code"]) == ("invalid_request_error", None)


def test_fail_status():
    async def main():
        async with serving() as (backend, client):
            backend.fail_status = 500
            with pytest.raises(openai.InternalServerError) as failed:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            backend.fail_status = None
            again = await client.chat.completions.create(model="m", messages=MESSAGES)
            return backend, failed.value, again

    backend, error, again = run(main)
    assert error.status_code == 500 and error.response.headers["x-mock-backend"] == "mock-a"
    assert error.body["type"] == "server_error" and "500" in error.body["message"]
    assert again.choices[0].message.content == words(16)
    assert len(backend.requests) == 2                           # the failed request is recorded too


def test_stop_refuses_and_cuts_then_start_comes_back_on_the_same_url():
    async def main():
        async with serving(completion_tokens=3) as (backend, client):
            url = backend.url
            backend.hold = asyncio.Event()                      # never set: the stream stays open until stop()
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            first = await stream.__anext__()
            began = time.perf_counter()
            await backend.stop()
            # Reset at once, not after the graceful wait a handler still running would get.
            assert time.perf_counter() - began < mock._SHUTDOWN_S
            assert backend.url is None
            with pytest.raises(openai.APIConnectionError):        # the open stream is cut
                async for _ in stream:
                    pass
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model="m", messages=MESSAGES)
            backend.hold = None
            again = await backend.start()
            reply = await client.chat.completions.create(model="m", messages=MESSAGES)
            return first, url, again, reply

    first, url, again, reply = run(main)
    assert first.choices[0].delta.content == "tok0"
    assert again == url
    assert reply.choices[0].message.content == words(3)


def test_hold_parks_the_last_content_chunk_and_the_stream_is_incremental():
    async def main():
        async with serving(completion_tokens=3) as (backend, client):
            backend.hold = asyncio.Event()
            got = []

            async def consume():
                stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
                async for chunk in stream:
                    got.append(chunk)

            task = asyncio.create_task(consume())
            while len(got) < 2:                                 # tok0 and tok1 arrive before the hold is set
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            held = (len(got), task.done())
            backend.hold.set()
            await task
            return held, got

    held, got = run(main)
    assert held == (2, False)
    assert [c.choices[0].delta.content for c in got] == ["tok0", " tok1", " tok2", None]


def test_chunk_delay_paces_the_stream():
    async def main():
        async with serving(completion_tokens=5, chunk_delay_s=0.05) as (_, client):
            start = time.perf_counter()
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            [c async for c in stream]
            return time.perf_counter() - start

    assert run(main) >= 4 * 0.05                                # a delay between each two of the 5 content chunks


def test_start_mocks_names_and_tags():
    async def main():
        mocks = await start_mocks(3, completion_tokens=2)
        try:
            tags = []
            async with aiohttp.ClientSession() as s:
                for m in mocks:
                    async with s.get(m.url + "/v1/models") as r:
                        tags.append((r.headers["x-mock-backend"], (await r.json())["data"][0]["owned_by"]))
            return [(m.name, m.url, m.completion_tokens) for m in mocks], tags
        finally:
            for m in mocks:
                await m.stop()

    described, tags = run(main)
    assert [d[0] for d in described] == ["mock-1", "mock-2", "mock-3"] and {d[2] for d in described} == {2}
    assert len({d[1] for d in described}) == 3
    assert tags == [("mock-1", "mock-1"), ("mock-2", "mock-2"), ("mock-3", "mock-3")]
