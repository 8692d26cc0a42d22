"""The servers ``wirespeed bench --gateway`` measures against, besides the gateway: a lean OpenAI-compatible backend
and a passthrough proxy.

Both are asyncio protocols on uvloop with llhttp (httptools) framing, so that they take as little of the machine's
CPU as they can: on a 2-core machine the load generator, the backend and the gateway share the cores, and whatever
the instruments use is taken from the gateway under test (``docs/performance.md``).

- :class:`BenchBackend` answers ``POST …/chat/completions`` (not streamed) as :class:`~..gateway.mock.MockBackend`
  does: the same completion (``tok0 tok1 …``, at most ``completion_tokens``), the same ``usage`` (prompt tokens by
  :func:`~..gateway.mock.prompt_tokens`), computed once per distinct request body; ``GET …/models``; anything else
  gets an OpenAI-format 404 (or 400 for a body it cannot answer). Its CPU per request is a fraction of the aiohttp
  ``MockBackend``'s.
- :class:`Passthrough` forwards every request to one backend through the gateway's own connection classes
  (:mod:`..gateway.downstream`, :mod:`..gateway.upstream`) and does nothing else: no device, no tokens, no metrics.
  What it adds over ``direct`` is what any proxy hop in Python adds on the machine, the floor under the gateway's
  own figure.
"""

from __future__ import annotations

import asyncio
import json
import time

import httptools

from ..gateway.downstream import Connections, Downstream
from ..gateway.mock import _pieces, prompt_tokens
from ..gateway.upstream import Upstream, UpstreamError

__all__ = ["BenchBackend", "Passthrough", "chat_answer"]

_ANSWERS_KEPT = 1024
_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                  b"upgrade", b"host", b"content-length"})


def _response(status: int, phrase: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (status, phrase, extra, len(body), body))


def _error(status: int, phrase: bytes, message: str) -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _response(status, phrase, json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode())


def chat_answer(body: bytes, completion_tokens: int = 8) -> bytes:
    """The whole HTTP response :class:`BenchBackend` gives a chat completion request with this body."""
    try:
        request = json.loads(body)
        model, messages = request["model"], request["messages"]
        if not isinstance(model, str) or not isinstance(messages, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _error(400, b"Bad Request", "the bench backend needs a JSON body with model and messages")
    if request.get("stream"):
        return _error(400, b"Bad Request", "the bench backend does not stream")
    limit = request.get("max_completion_tokens", request.get("max_tokens"))
    n = completion_tokens if not isinstance(limit, int) or limit <= 0 else min(limit, completion_tokens)
    usage = {"prompt_tokens": prompt_tokens(model, messages), "completion_tokens": n}
    usage["total_tokens"] = usage["prompt_tokens"] + n
    answer = {"id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(_pieces(n))},
                           "logprobs": None, "finish_reason": "length" if n < completion_tokens else "stop"}],
              "usage": usage}
    return _response(200, b"OK", json.dumps(answer).encode(), b"x-mock-backend: bench\r\n")


class _BackendConnection(asyncio.Protocol):
    def __init__(self, backend: "BenchBackend"):
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.body = []
        self.keep_alive = True

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_error(400, b"Bad Request", "malformed request"))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()   # (llhttp clears it once the message completes)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.backend.served += 1
        method, path = self.parser.get_method(), self.url.split(b"?", 1)[0]
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self.transport.write(self.backend.answer(b"".join(self.body)))
        elif method == b"GET" and path.endswith(b"/models"):
            self.transport.write(self.backend.models)
        else:
            self.transport.write(_error(404, b"Not Found", f"no route for {method.decode()} {path.decode()!r}"))
        if not self.keep_alive:
            self.transport.close()


class BenchBackend:
    """The bench's backend: ``await start(host, port)`` returns its URL; ``served`` counts requests."""

    def __init__(self, completion_tokens: int = 8):
        self.completion_tokens = completion_tokens
        self.served = 0
        self._answers: dict[bytes, bytes] = {}
        self._server = None
        self.models = _response(200, b"OK", json.dumps({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "bench"}]}).encode())

    def answer(self, body: bytes) -> bytes:
        response = self._answers.get(body)
        if response is None:
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            response = self._answers[body] = chat_answer(body, self.completion_tokens)
        return response

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.get_running_loop().create_server(lambda: _BackendConnection(self), host, port)
        return "http://%s:%d" % self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class Passthrough:
    """A proxy that forwards every request to ``backend`` and its answer back (see the module doc)."""

    def __init__(self, backend: str, *, connections: int = 64, timeout_s: float = 30.0):
        self.upstream = Upstream(backend, limit=connections)
        self.timeout_s = timeout_s
        self._clients = Connections(1.0)
        self._server = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Downstream(self._serve, self._clients), host, port)
        return "http://%s:%d" % self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._clients.close()
        await self.upstream.close()

    async def _serve(self, conn: Downstream) -> None:
        frame = _Frame()
        try:
            while True:
                while not frame.messages:
                    if not conn.buf and not await conn.read_more(self.timeout_s):
                        return
                    data = bytes(conn.buf)
                    conn.buf.clear()
                    frame.parser.feed_data(data)
                method, target, headers, body, keep_alive = frame.messages.pop(0)
                try:
                    response, _queued, _connect = await self.upstream.request(
                        method, target, [(n, v) for n, v in headers if n.lower() not in _HOP], body)
                    async with response:
                        data = await response.read()
                    out = b"".join(b"%s: %s\r\n" % (n, v) for n, v in response.headers if n.lower() not in _HOP)
                    conn.write(b"HTTP/1.1 %d \r\n%s%scontent-length: %d\r\n\r\n%s"
                               % (response.status, out, b"" if keep_alive else b"connection: close\r\n",
                                  len(data), data))
                except UpstreamError as exc:
                    conn.write(_error(502, b"Bad Gateway", f"upstream: {exc}"))
                    return
                await conn.drain()
                if not keep_alive:
                    return
        except (httptools.HttpParserError, ConnectionError, TimeoutError):
            return
        finally:
            conn.close()


class _Frame:
    """llhttp's callbacks for the passthrough: complete requests, in order."""

    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.messages: list = []
        self.url, self.headers, self.body = b"", [], []
        self.keep_alive = True

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()   # (llhttp clears it once the message completes)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.messages.append((self.parser.get_method(), self.url, self.headers, b"".join(self.body),
                              self.keep_alive))
