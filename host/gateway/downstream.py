"""The client side of the gateway's connections: an asyncio protocol that buffers what a client sends, read by one
coroutine per connection, with its timeouts enforced by a periodic sweep.

Why not asyncio's streams: a ``StreamReader`` read, the ``asyncio.timeout`` around it and the writer's ``drain`` were
together a measurable share of a request's CPU in the gateway (``docs/gateway.md``, "Where the time goes"); here a
read is one future, a write is the transport's, and no timer is armed per read.

- :class:`Downstream`: one connection. ``buf`` holds the bytes received and not yet consumed; :meth:`read_more`
  waits for more (False at end of stream); :meth:`write`, :meth:`drain` and :meth:`close` are the writer's.
- :class:`Connections`: the live connections of one server and their sweep, which fails a read that has waited past
  its deadline with :class:`TimeoutError` (to within ``period``).
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Downstream", "Connections"]

#: Stop reading from a client whose unread bytes exceed this (it pipelines faster than it is answered).
_HIGH_WATER = 1 << 20


class Downstream(asyncio.Protocol):
    """One client connection; ``handler(conn)`` runs as its task from ``connection_made`` on."""

    def __init__(self, handler, connections: "Connections"):
        self.handler = handler
        self.connections = connections
        self.transport = None
        self.buf = bytearray()
        self.eof = False
        self.task: asyncio.Task | None = None
        self.deadline: float | None = None
        self._reader: asyncio.Future | None = None
        self._drainer: asyncio.Future | None = None
        self._read_paused = self._write_paused = False

    # -- the transport's side --

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self.handler(self))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake(None)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake(None)
        return True                             # half-closed: the answer may still be written

    def connection_lost(self, exc) -> None:
        self.eof = True
        self.connections.discard(self)
        self._wake(None)
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_exception(ConnectionResetError("the client closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    def _wake(self, exc) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            if exc is None:
                reader.set_result(None)
            else:
                reader.set_exception(exc)

    def timed_out(self) -> None:
        """The sweep found the current read past its deadline."""
        self.deadline = None
        self._wake(TimeoutError())

    # -- the handler's side --

    async def read_more(self, timeout: float) -> bool:
        """Wait until more bytes are in :attr:`buf`: True, or False at the end of the stream (nothing new came).
        Raises :class:`TimeoutError` if nothing comes within ``timeout`` seconds."""
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        if self.eof:
            return False
        size = len(self.buf)
        self._reader = asyncio.get_running_loop().create_future()
        self.deadline = time.monotonic() + timeout
        try:
            await self._reader
        finally:
            self.deadline = None
        return len(self.buf) > size

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        if self._write_paused:
            self._drainer = asyncio.get_running_loop().create_future()
            await self._drainer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Connections:
    """One server's live :class:`Downstream` connections, swept every ``period`` seconds for reads past their
    deadline (while any connection is open)."""

    def __init__(self, period: float = 1.0):
        self.period = period
        self._live: set[Downstream] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self):
        return iter(list(self._live))

    def add(self, conn: Downstream) -> None:
        self._live.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.period, self._sweep)

    def discard(self, conn: Downstream) -> None:
        self._live.discard(conn)

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._live if c.deadline is not None and now > c.deadline]:
            conn.timed_out()
        self._sweeper = (asyncio.get_running_loop().call_later(self.period, self._sweep) if self._live else None)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
