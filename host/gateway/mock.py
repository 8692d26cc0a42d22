"""The mock backend the gateway's demo, tests and bench put behind it: an OpenAI-compatible LLM server on loopback.

:class:`MockBackend` serves, with :mod:`aiohttp.web`, the endpoints the gateway routes:

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (the legacy text form), streamed or not;
- ``POST /v1/embeddings`` (deterministic vectors from a hash of the text);
- ``GET /v1/models``;
- ``POST /v1/messages`` (Anthropic's Messages API), streamed or not.

A completion is ``n = min(completion_tokens, max_tokens)`` words ``tok0 tok1 …``, and its usage says exactly ``n``
completion tokens and :func:`prompt_tokens` prompt tokens, so a test knows what the gateway must count. Every
request is recorded in ``requests``; ``fail_status`` makes every answer an error, ``hold`` parks a stream before its
last content chunk, and :meth:`MockBackend.stop` drops open connections like a killed process, after which
:meth:`MockBackend.start` binds the same port again.

::

    backend = MockBackend("mock-1", completion_tokens=8)
    url = await backend.start()          # "http://127.0.0.1:PORT"
    ...
    await backend.stop()
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import struct
import time
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from .tokens import PRELOAD_MODELS, count_text_tokens, encoding_for

__all__ = ["MockBackend", "Received", "start_mocks", "prompt_tokens", "MOCK_MODEL"]

#: The one model ``GET /v1/models`` lists (requests may name any model; it is echoed back).
MOCK_MODEL = "mock-gpt"
#: OpenAI's chat framing: tokens per message, per ``name``, and priming the reply.
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3
#: How long :meth:`MockBackend.stop` lets a cancelled handler unwind: it is cancelled at once, so this only bounds it.
_SHUTDOWN_S = 0.05
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


# -- token counts -----------------------------------------------------------------------------------------------------


def _content_text(content) -> str:
    """The text of a message's content: the string, or its ``text`` parts joined (images and the like carry none)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def prompt_tokens(model: str, messages_or_text) -> int:
    """The prompt tokens the mock reports for a request.

    Parameters
    ----------
    model : str
        The request's model, which picks the tokenizer.
    messages_or_text : str or list
        A text; a list of texts (a legacy prompt batch: their sum); or chat messages, counted with OpenAI's formula:
        per message 3 + tokens(role) + tokens(content) (+ tokens(name) + 1 when it has a ``name``), plus 3 for the
        reply. A content may be a string or a list of parts, whose ``text`` parts count.

    Returns
    -------
    int
    """
    if isinstance(messages_or_text, str):
        return count_text_tokens(model, messages_or_text)
    if messages_or_text and all(isinstance(t, str) for t in messages_or_text):
        return sum(count_text_tokens(model, t) for t in messages_or_text)
    total = _REPLY_PRIMING
    for message in messages_or_text:
        total += _PER_MESSAGE + count_text_tokens(model, message["role"])
        total += count_text_tokens(model, _content_text(message.get("content")))
        if "name" in message:
            total += _PER_NAME + count_text_tokens(model, str(message["name"]))
    return total


# -- request checks ---------------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """A request the mock answers with 400; the message says which field."""


def _field(body: dict, name: str, kinds, *, required: bool = False, default=None):
    """``body[name]`` checked to be of ``kinds``; ``default`` when absent or null, unless ``required``."""
    value = body.get(name)
    if value is None:
        if required:
            raise _Invalid(f"missing required parameter: '{name}'")
        return default
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    # bool is an int in Python, but a JSON true is not a token count.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _Invalid(f"invalid type for '{name}': {type(value).__name__}")
    return value


def _limit(body: dict, *names: str) -> int | None:
    """The first of ``names`` given, a token limit ≥ 1, or None."""
    for name in names:
        value = _field(body, name, int)
        if value is not None:
            if value < 1:
                raise _Invalid(f"'{name}' must be at least 1, got {value}")
            return value
    return None


def _messages(body: dict) -> list:
    messages = _field(body, "messages", list, required=True)
    if not messages:
        raise _Invalid("'messages' must not be empty")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _Invalid(f"'messages[{i}]' must be an object with a string 'role'")
        content = m.get("content")
        if not (content is None or isinstance(content, str) or (isinstance(content, list) and all(
                isinstance(p, dict) and (p.get("type") != "text" or isinstance(p.get("text"), str))
                for p in content))):
            raise _Invalid(f"'messages[{i}].content' must be a string or a list of content parts")
    return messages


def _texts(body: dict, name: str) -> list[str]:
    """A ``prompt`` or ``input``: a string or a non-empty list of strings, as a list."""
    value = _field(body, name, (str, list), required=True)
    texts = [value] if isinstance(value, str) else value
    if not texts or not all(isinstance(t, str) for t in texts):
        raise _Invalid(f"'{name}' must be a string or a non-empty list of strings")
    return texts


def _error(status: int, message: str) -> web.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return web.json_response({"error": {"message": message, "type": kind, "code": None}}, status=status)


# -- the backend ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request as the mock received it: ``path`` is the target as sent (query included)."""
    method: str
    path: str
    headers: CIMultiDict
    body: bytes

    def json(self):
        """The body parsed as JSON."""
        return json.loads(self.body)


def _pieces(n: int) -> list[str]:
    """The completion's ``n`` tokens as streamed: ``tok0``, `` tok1``, … (they join to ``"tok0 tok1 …"``)."""
    return [f"tok{i}" if i == 0 else f" tok{i}" for i in range(n)]


def _vector(text: str, dim: int) -> list[float]:
    """A unit vector of ``dim`` float32 values from SHAKE-256 of ``text``: the same text always gets the same one."""
    raw = struct.unpack(f"<{dim}I", hashlib.shake_256(text.encode()).digest(4 * dim))
    values = [u / 2**31 - 1.0 for u in raw]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    # Rounded to float32, so the "float" and "base64" encodings give the same numbers.
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in values))))


class MockBackend:
    """An OpenAI-compatible mock LLM backend on one loopback port.

    Parameters
    ----------
    name : str
        Its name: every response carries ``x-mock-backend: <name>``, and ``/v1/models`` names it as the owner.
    completion_tokens : int
        Tokens of every completion (fewer when the request's ``max_tokens`` is lower; ``finish_reason`` then says
        ``"length"``).
    chunk_delay_s : float
        Sleep between two streamed content chunks (a decode rate for the bench).
    usage : bool
        Whether OpenAI-format answers carry ``usage`` (off: the gateway must count tokens itself). Anthropic
        answers always do, as the real API does.
    embedding_dim : int
        Length of embedding vectors (a request's ``dimensions`` overrides it).

    Attributes
    ----------
    url : str or None
        The base URL (``http://127.0.0.1:PORT``) while it listens, else None.
    requests : list of Received
        Every request received, in order, failed ones too.
    fail_status : int or None
        When set, every request is answered with this status and an OpenAI-format error body.
    hold : asyncio.Event or None
        When set, a streamed answer sends every chunk but the last content chunk, then waits for the event before
        sending the rest.
    """

    def __init__(self, name: str, *, completion_tokens: int = 16, chunk_delay_s: float = 0.0, usage: bool = True,
                 embedding_dim: int = 8):
        if completion_tokens < 1:
            raise ValueError(f"completion_tokens={completion_tokens!r} must be at least 1")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim={embedding_dim!r} must be at least 1")
        self.name = name
        self.completion_tokens = completion_tokens
        self.chunk_delay_s = chunk_delay_s
        self.usage = usage
        self.embedding_dim = embedding_dim
        self.url: str | None = None
        self.requests: list[Received] = []
        self.fail_status: int | None = None
        self.hold: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None      # kept across stop() so start() comes back on it
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"MockBackend({self.name!r}, url={self.url!r})"

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` and return the base URL.

        Parameters
        ----------
        host : str
        port : int
            0 picks a free port the first time; after :meth:`stop` it means the port used before, so a restarted
            backend is at the same address.

        Returns
        -------
        str
            ``http://host:port``.
        """
        if self._runner is not None:
            raise RuntimeError(f"{self!r} is already running")
        # Load the tokenizers now (about half a second), not in the first request.
        await asyncio.get_running_loop().run_in_executor(None, lambda: [encoding_for(m) for m in PRELOAD_MODELS])
        if port == 0 and self._address is not None and self._address[0] == host:
            port = self._address[1]
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._tag)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages", self._messages)
        # handler_cancellation: a handler whose client went away (or that stop() cut off) is cancelled, not left
        # waiting on ``hold`` or a sleep.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_S)
        await runner.setup()
        try:
            # reuse_address: the port's old connections may sit in TIME_WAIT after stop().
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._address = (host, runner.addresses[0][1])
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self._address[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop like a killed process: close the listener, then reset every open connection (streams cut mid-way,
        their handlers cancelled). Stopping a stopped backend does nothing."""
        runner, self._runner, self.url = self._runner, None, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()
        for conn in runner.server.connections:
            if conn.transport is not None:
                conn.transport.abort()
        await runner.cleanup()

    # -- plumbing -----------------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        body = await request.read()
        self.requests.append(Received(request.method, request.raw_path, CIMultiDict(request.headers), body))
        if self.fail_status is not None:
            return _error(self.fail_status, f"mock backend {self.name} fails every request with {self.fail_status}")
        try:
            return await handler(request)
        except _Invalid as e:
            return _error(400, str(e))
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _error(e.status, f"{e.reason}: {request.method} {request.path}")

    async def _tag(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-mock-backend"] = self.name

    @staticmethod
    async def _body(request: web.Request) -> dict:
        try:
            body = json.loads(await request.read())
        except ValueError as e:
            raise _Invalid(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise _Invalid("the body must be a JSON object")
        return body

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{self.name}-{next(self._ids)}"

    def _length(self, limit: int | None) -> tuple[int, bool]:
        """The completion's token count, and whether ``max_tokens`` cut it short."""
        n = self.completion_tokens if limit is None else min(self.completion_tokens, limit)
        return n, n < self.completion_tokens

    @staticmethod
    def _stream_flags(body: dict) -> tuple[bool, bool]:
        stream = _field(body, "stream", bool, default=False)
        options = _field(body, "stream_options", dict, default={})
        return stream, bool(_field(options, "include_usage", bool, default=False))

    async def _open_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        return response

    async def _before_content(self, i: int, n: int) -> None:
        """Pace content chunk ``i`` of ``n``: the chunk delay after the first, and ``hold`` before the last."""
        if i and self.chunk_delay_s:
            await asyncio.sleep(self.chunk_delay_s)
        if i == n - 1 and self.hold is not None:
            await self.hold.wait()

    @staticmethod
    async def _send(response: web.StreamResponse, obj, event: str | None = None) -> None:
        # One write per event, so each leaves as soon as it is made.
        data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        await response.write((f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode())

    # -- OpenAI endpoints ---------------------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = _field(body, "model", str, required=True)
        messages = _messages(body)
        n, cut = self._length(_limit(body, "max_completion_tokens", "max_tokens"))
        stream, include_usage = self._stream_flags(body)
        usage = {"prompt_tokens": prompt_tokens(model, messages), "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        head = {"id": self._id("chatcmpl"), "created": int(time.time()), "model": model}
        finish = "length" if cut else "stop"
        pieces = _pieces(n)
        if not stream:
            answer = {**head, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "logprobs": None,
                "finish_reason": finish}]}
            return web.json_response({**answer, "usage": usage} if self.usage else answer)
        response = await self._open_stream(request)
        head["object"] = "chat.completion.chunk"
        for i, piece in enumerate(pieces):
            await self._before_content(i, n)
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            await self._send(response, {**head, "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
        await self._send(response, {**head, "choices": [
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
        if include_usage and self.usage:
            await self._send(response, {**head, "choices": [], "usage": usage})
        await self._send(response, "[DONE]")
        await response.write_eof()
        return response

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = _field(body, "model", str, required=True)
        prompts = _texts(body, "prompt")
        n, cut = self._length(_limit(body, "max_tokens"))
        stream, include_usage = self._stream_flags(body)
        # One choice per prompt, as OpenAI answers a batch; usage sums over them.
        usage = {"prompt_tokens": prompt_tokens(model, prompts), "completion_tokens": n * len(prompts)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": self._id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model}
        finish = "length" if cut else "stop"
        pieces = _pieces(n)
        if not stream:
            answer = {**head, "choices": [{"text": "".join(pieces), "index": j, "logprobs": None,
                                           "finish_reason": finish} for j in range(len(prompts))]}
            return web.json_response({**answer, "usage": usage} if self.usage else answer)
        response = await self._open_stream(request)
        for i, piece in enumerate(pieces):
            await self._before_content(i, n)
            for j in range(len(prompts)):
                await self._send(response, {**head, "choices": [
                    {"text": piece, "index": j, "logprobs": None, "finish_reason": None}]})
        for j in range(len(prompts)):
            await self._send(response, {**head, "choices": [
                {"text": "", "index": j, "logprobs": None, "finish_reason": finish}]})
        if include_usage and self.usage:
            await self._send(response, {**head, "choices": [], "usage": usage})
        await self._send(response, "[DONE]")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        model = _field(body, "model", str, required=True)
        texts = _texts(body, "input")
        dim = _limit(body, "dimensions") or self.embedding_dim
        encoding = _field(body, "encoding_format", str, default="float")
        if encoding not in ("float", "base64"):
            raise _Invalid(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
        data = []
        for i, text in enumerate(texts):
            vector = _vector(text, dim)
            if encoding == "base64":        # what the openai SDK asks for by default: little-endian float32
                vector = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        answer = {"object": "list", "data": data, "model": model}
        tokens = prompt_tokens(model, texts)
        if self.usage:
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(answer)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": self.name}]})

    # -- Anthropic endpoint -------------------------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        model = _field(body, "model", str, required=True)
        messages = _messages(body)
        if body.get("max_tokens") is None:                      # required by the Messages API
            raise _Invalid("missing required parameter: 'max_tokens'")
        n, cut = self._length(_limit(body, "max_tokens"))
        stream = _field(body, "stream", bool, default=False)
        system = _field(body, "system", (str, list))
        # A top-level system prompt counts as a leading system message.
        counted = ([{"role": "system", "content": system}] if system else []) + messages
        input_tokens = prompt_tokens(model, counted)
        message_id = self._id("msg")
        stop_reason = "max_tokens" if cut else "end_turn"
        pieces = _pieces(n)
        if not stream:
            return web.json_response({
                "id": message_id, "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "".join(pieces)}], "model": model, "stop_reason": stop_reason,
                "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": n}})
        response = await self._open_stream(request)

        async def send(event: str, **fields) -> None:
            await self._send(response, {"type": event, **fields}, event)

        await send("message_start", message={
            "id": message_id, "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": 0}})
        await send("content_block_start", index=0, content_block={"type": "text", "text": ""})
        for i, piece in enumerate(pieces):
            await self._before_content(i, n)
            await send("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
        await send("content_block_stop", index=0)
        await send("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": None},
                   usage={"output_tokens": n})
        await send("message_stop")
        await response.write_eof()
        return response


async def start_mocks(n: int = 2, **kw) -> list[MockBackend]:
    """Start ``n`` backends named ``mock-1`` … ``mock-n`` on free loopback ports.

    Parameters
    ----------
    n : int
    **kw
        :class:`MockBackend` keywords, the same for each.

    Returns
    -------
    list of MockBackend
        Started; their ``url`` is set.
    """
    mocks = [MockBackend(f"mock-{i}", **kw) for i in range(1, n + 1)]
    try:
        for mock in mocks:
            await mock.start()
    except BaseException:
        for mock in mocks:
            await mock.stop()
        raise
    return mocks
