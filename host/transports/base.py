"""Transports: the only layer that touches a device. Everything above speaks 32-bit register words.

``Offload`` ─▶ :class:`Transport` (``read32``/``write32`` + bulk) ─▶ model | sim | pynq | uio | pci
           ─▶ :class:`AsyncTransport` ─▶ cocotb (AxiLiteMaster), for driver code inside testbenches.

Addresses are byte offsets from the core's base, 4-byte aligned; values are unsigned 32-bit.
"""

from __future__ import annotations

import abc
from typing import Iterable, Sequence

from ..errors import TransportError

__all__ = ["Transport", "AsyncTransport", "check_access", "SUBMIT_PATHS", "check_submit"]

#: How a transport that could do both submits requests: through the packet stream, or the MMIO window.
SUBMIT_PATHS = ("stream", "mmio")


def check_submit(submit: str) -> str:
    if submit not in SUBMIT_PATHS:
        from ..errors import ConfigError
        raise ConfigError("submit", submit, f"must be one of {', '.join(SUBMIT_PATHS)}")
    return submit


def check_access(address: int, size: int | None, value: int | None = None) -> None:
    """Raise :class:`TransportError` for an unaligned, negative or out-of-window access or a non-32-bit value."""
    if address < 0 or address % 4:
        raise TransportError(f"address 0x{address:x} is not a 4-byte aligned offset")
    if size is not None and address + 4 > size:
        raise TransportError(f"address 0x{address:x} is outside the {size:#x}-byte register window")
    if value is not None and not 0 <= value <= 0xFFFF_FFFF:
        raise TransportError(f"value {value!r} does not fit in 32 bits")


class Transport(abc.ABC):
    """Synchronous register access. Subclasses implement :meth:`read32` and :meth:`write32`; bulk variants default to
    loops and are overridden where the medium has something faster (a DMA, a memcpy, a burst).

    A transport is a context manager; :meth:`close` releases the device and is idempotent.
    """

    #: The URI scheme, for messages.
    scheme: str = "?"
    #: ``classify_stream(packets, inline) -> [VerdictRecord]`` on transports that can send a batch of packets
    #: through the core's packet stream (``"sim"``, ``"model"``); ``None`` where requests go through the MMIO submit
    #: window (every board transport today). ``Offload.classify*`` picks the path from it.
    classify_stream = None

    @abc.abstractmethod
    def read32(self, address: int) -> int:
        ...

    @abc.abstractmethod
    def write32(self, address: int, value: int) -> None:
        ...

    def read_block(self, address: int, count: int) -> list[int]:
        """Read ``count`` consecutive words starting at ``address``."""
        return [self.read32(address + 4 * i) for i in range(count)]

    def write_block(self, address: int, values: Sequence[int] | Iterable[int]) -> None:
        """Write consecutive words starting at ``address``."""
        for i, value in enumerate(values):
            self.write32(address + 4 * i, value)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncTransport(abc.ABC):
    """The same contract as :class:`Transport`, awaited: for cocotb testbenches."""

    scheme: str = "?"

    @abc.abstractmethod
    async def read32(self, address: int) -> int:
        ...

    @abc.abstractmethod
    async def write32(self, address: int, value: int) -> None:
        ...

    async def read_block(self, address: int, count: int) -> list[int]:
        return [await self.read32(address + 4 * i) for i in range(count)]

    async def write_block(self, address: int, values) -> None:
        for i, value in enumerate(values):
            await self.write32(address + 4 * i, value)

    def close(self) -> None:
        pass
