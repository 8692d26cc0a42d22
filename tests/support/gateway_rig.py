"""A running gateway for tests: mock backends and a :class:`~wirespeed.host.gateway.server.Gateway` on an event loop
(uvloop) in a background thread, so test code can call it with the synchronous ``openai`` client, a raw socket, or
its own ``asyncio.run``. Everything listens on 127.0.0.1 at ports the OS picks."""

from __future__ import annotations

import asyncio
import socket
import threading

from wirespeed.host.gateway.config import parse_config
from wirespeed.host.gateway.mock import MockBackend
from wirespeed.host.gateway.run import new_event_loop
from wirespeed.host.gateway.server import Gateway, GatewayOptions

#: Every call into the rig's loop is bounded.
CALL_TIMEOUT_S = 30


def config_text(backends: list[str], *, tenants: str, device: str = "software", routes: str | None = None,
                pool_extra: str = "") -> str:
    """A configuration: ``tenants`` (TOML tables), one pool "chat" of ``backends`` (with the TOML lines
    ``pool_extra``), and routes (by default every OpenAI path to "chat", chat completions by ``x-session-id``)."""
    quoted = ", ".join(f'"{b}"' for b in backends)
    if routes is None:
        routes = "".join(f'\n[[routes]]\nprefix = "{p}"\npool = "chat"\n' for p in
                         ("/v1/completions", "/v1/embeddings", "/v1/models", "/v1/messages"))
        routes += '\n[[routes]]\nprefix = "/v1/chat/completions"\npool = "chat"\naffinity = "header:x-session-id"\n'
    return (f'device = "{device}"\nlisten = "127.0.0.1:0"\nmetrics = "127.0.0.1:0"\nhash_secret = "test"\n'
            f'{tenants}\n[[pools]]\nname = "chat"\nbackends = [{quoted}]\n{pool_extra}{routes}')


class GatewayRig:
    """``n_mocks`` mock backends and a gateway in front of them.

    Attributes
    ----------
    mocks : list of MockBackend
    gateway : Gateway
    base_url : str
        ``http://127.0.0.1:PORT``.
    """

    def __init__(self, tenants: str, *, n_mocks: int = 2, mock_kw: dict | None = None, device: str = "software",
                 options: GatewayOptions | None = None, routes: str | None = None, pool_extra: str = ""):
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gateway-rig", daemon=True)
        self.thread.start()
        self.mocks = [MockBackend(f"mock-{i + 1}", **(mock_kw or {})) for i in range(n_mocks)]
        try:
            urls = [self.call(m.start()) for m in self.mocks]
            self.config = parse_config(config_text(urls, tenants=tenants, device=device, routes=routes,
                                                   pool_extra=pool_extra), "<test>")
            self.gateway = Gateway(self.config, options=options or GatewayOptions(probe_interval_s=0.1))
            self.call(self.gateway.start())
        except BaseException:
            self.close()
            raise
        host, port = self.gateway.address
        self.host, self.port = host, port
        self.base_url = f"http://{host}:{port}"
        self.metrics_url = "http://{}:{}/metrics".format(*self.gateway.metrics_address)

    def call(self, coro, timeout: float = CALL_TIMEOUT_S):
        """Run ``coro`` on the rig's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self, key: str, **kw):
        """The official synchronous SDK client for tenant ``key``, with no retries (a test sees every answer)."""
        import openai
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0, timeout=20, **kw)

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send ``data`` on a new connection, read until the gateway closes it (or ``timeout``)."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except socket.timeout:
                chunks.append(b"<timeout>")
            return b"".join(chunks)

    def close(self) -> None:
        async def stop():
            if getattr(self, "gateway", None) is not None:
                await self.gateway.stop()
            for m in self.mocks:
                await m.stop()
        try:
            if self.thread.is_alive():
                self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
