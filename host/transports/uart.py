"""The ``"uart:"`` transport: register access through a :class:`~wirespeed.hdl.platform.uart_bridge.UartAxiLiteBridge`
on a board with no CPU, over its USB-UART.

``Offload`` ─▶ :class:`UartTransport` ─▶ ``port.write``/``port.read`` (pyserial ``Serial``, or any object with those)
─▶ USB-UART ─▶ ``UartAxiLiteBridge`` ─▶ AXI4-Lite ─▶ the core's register bank

Each access is one request and one response (``docs/uart-bridge.md``): 10 bytes on the line for a read (5 out, 5 back)
and 10 for a write (9 out, 1 back), so at most ``baud / 100`` accesses per second one at a time; block accesses are
pipelined (several requests per ``write``), which hides the USB round trip.
"""

from __future__ import annotations

import errno
import os
from typing import Iterable, Sequence

from ...hdl.platform.uart_bridge import (DEFAULT_BAUD, LINE_ERRORS, OP_READ, OP_WRITE, RX_FIFO_BYTES,
                                         STATUS_AXI_TIMEOUT, STATUS_BAD_OP, STATUS_FRAMING, STATUS_INCOMPLETE,
                                         STATUS_OKAY, STATUS_OVERRUN)
from ..errors import BusError, DeviceNotFound, TransportError
from ...hdl.bus.regmap import RESP_NAMES
from .base import Transport, check_access

__all__ = ["UartTransport", "open_uart", "parse_uart_spec", "encode_request", "PYSERIAL_REQUIREMENT",
           "DEFAULT_BAUD", "DEFAULT_TIMEOUT_S"]

#: What to install for ``open_uart`` (the only place the transport needs pyserial).
PYSERIAL_REQUIREMENT = "pyserial==3.5"
#: Port read timeout: far above one response (≤ 5 characters + the USB latency timer) and above the bridge's
#: request timeout (10 ms), so draining the line after an error also outlasts a half-received request.
DEFAULT_TIMEOUT_S = 0.25

_LINE_ERROR_TEXT = {
    STATUS_BAD_OP: "the bridge saw an unknown op byte",
    STATUS_FRAMING: "the bridge saw a framing error (baud mismatch or line noise)",
    STATUS_INCOMPLETE: "the bridge timed out waiting for the rest of the request",
    STATUS_OVERRUN: "the bridge's receive FIFO overflowed",
}


def encode_request(op: str, address: int, value: int = 0) -> bytes:
    """The request bytes of one access: ``op`` is ``"read"`` or ``"write"``."""
    if op == "read":
        return bytes([OP_READ]) + address.to_bytes(4, "little")
    return bytes([OP_WRITE]) + address.to_bytes(4, "little") + value.to_bytes(4, "little")


class UartTransport(Transport):
    """Register access through a UART-to-AXI4-Lite bridge.

    Parameters
    ----------
    port :
        Anything with ``write(bytes)`` and ``read(n) -> bytes``, where ``read`` returns fewer than ``n`` bytes when its
        timeout expires (pyserial's ``Serial``). ``reset_input_buffer()`` is used when present; ``close()`` is called
        by :meth:`close` when ``owns_port``.
    size : int
        The register window in bytes. Addresses beyond the bridge's ``addr_width`` answer DECERR on the bus anyway.
    owns_port : bool
        Close ``port`` with the transport.
    name : str
        The device, for messages.

    Notes
    -----
    A SLVERR/DECERR (or EXOKAY) response raises :class:`BusError`; a missing, short or garbled response, a line error
    reported by the bridge, or an AXI timeout raises :class:`TransportError`. After anything but a bus error the line
    is drained (reads until one returns nothing, which outlasts the bridge's request timeout) so the next access
    starts on a request boundary.

    :meth:`read_block`/:meth:`write_block` send up to :data:`RX_FIFO_BYTES` of requests per ``write`` and then read
    their responses. When one of them answers a bus error, the rest of that batch has still been executed; the first
    bus error is raised once all its responses are in. A transport error is raised at once (after the drain).
    """

    scheme = "uart"

    def __init__(self, port, size: int = 1 << 32, owns_port: bool = False, name: str = "uart"):
        self.port = port
        self.size = size
        self.owns_port = owns_port
        self.name = name
        self._closed = False
        #: Accesses completed (for throughput figures).
        self.accesses = 0

    # -- access ---------------------------------------------------------------------------------------------------

    def _live(self):
        if self._closed:
            raise TransportError(f"uart transport on {self.name} is closed")
        return self.port

    def read32(self, address: int) -> int:
        return self._batch([("read", address, 0)])[0]

    def write32(self, address: int, value: int) -> None:
        self._batch([("write", address, value)])

    def read_block(self, address: int, count: int) -> list[int]:
        if count < 0:
            raise TransportError(f"word count {count} is negative")
        return self._pipelined([("read", address + 4 * i, 0) for i in range(count)])

    def write_block(self, address: int, values: Sequence[int] | Iterable[int]) -> None:
        self._pipelined([("write", address + 4 * i, v) for i, v in enumerate(values)])

    def _pipelined(self, accesses) -> list:
        for op, address, value in accesses:      # everything is checked before anything is sent
            check_access(address, self.size, value if op == "write" else None)
        out, batch, used = [], [], 0
        for access in accesses:
            need = 5 if access[0] == "read" else 9
            if batch and used + need > RX_FIFO_BYTES:
                out += self._batch(batch)
                batch, used = [], 0
            batch.append(access)
            used += need
        if batch:
            out += self._batch(batch)
        return out

    def _batch(self, accesses) -> list:
        """Send ``accesses`` in one write, read their responses; raise the first failure after the last response."""
        port = self._live()
        for op, address, value in accesses:
            check_access(address, self.size, value if op == "write" else None)
        port.write(b"".join(encode_request(op, address, value) for op, address, value in accesses))
        results, failure = [], None
        for op, address, _ in accesses:
            try:
                results.append(self._response(port, op, address))
                self.accesses += 1
            except BusError as e:
                failure = failure or e
                results.append(None)
            except TransportError as e:
                # The line is out of step: whatever else is in flight is lost with it.
                self._resync(port)
                raise e
        if failure is not None:
            raise failure
        return results

    def _response(self, port, op: str, address: int):
        what = f"uart {op} at 0x{address:08x} on {self.name}"
        status = port.read(1)
        if len(status) != 1:
            raise TransportError(f"{what}: no response within the port's timeout (is the board configured, and the "
                                 f"bridge at the same baud rate?)")
        status = status[0]
        if status in LINE_ERRORS:
            raise TransportError(f"{what}: {_LINE_ERROR_TEXT[status]} (status 0x{status:02x})")
        if status > STATUS_AXI_TIMEOUT:
            raise TransportError(f"{what}: garbled response (status byte 0x{status:02x})")
        data = 0
        if op == "read":
            raw = port.read(4)
            if len(raw) != 4:
                raise TransportError(f"{what}: short response ({1 + len(raw)} of 5 bytes within the port's timeout)")
            data = int.from_bytes(raw, "little")
        if status == STATUS_AXI_TIMEOUT:
            raise TransportError(f"{what}: the AXI4-Lite target did not answer (bridge timeout; is the core "
                                 f"connected to the bridge?)")
        if status != STATUS_OKAY:
            raise BusError(op, address, RESP_NAMES[status])
        return data

    def _resync(self, port) -> None:
        """Discard whatever the bridge still sends, until the line stays quiet for a whole read timeout."""
        for _ in range(1024):
            if not port.read(64):
                break
        reset = getattr(port, "reset_input_buffer", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.owns_port:
                self.port.close()

    def __repr__(self) -> str:
        return f"<UartTransport {self.name}{' closed' if self._closed else ''}>"


def parse_uart_spec(spec: str, baud: int | None = None) -> tuple[str, int]:
    """``(device, baud)`` from ``[uart:]<device>[@<baud>]``.

    ``<device>`` is a serial device path (``/dev/ttyUSB1``, ``COM3``) or a pyserial URL (``socket://host:port``,
    ``rfc2217://host:port``, ``loop://``). A trailing ``@<digits>`` is the baud rate; otherwise ``baud``, or
    :data:`DEFAULT_BAUD`. Giving both, differently, is an error.
    """
    text = str(spec)
    if text.startswith("uart:"):
        text = text[len("uart:"):]
    device, at, rate = text.rpartition("@")
    if not at or not rate.isdigit():
        device, rate = text, ""
    if not device:
        raise TransportError(f"uart URI {spec!r} names no device: uart:/dev/ttyUSB0[@baud]")
    if rate:
        spec_baud = int(rate)
        if baud is not None and baud != spec_baud:
            raise TransportError(f"uart URI {spec!r} says {spec_baud} baud but baud={baud} was passed")
        baud = spec_baud
    baud = DEFAULT_BAUD if baud is None else baud
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise TransportError(f"uart baud rate {baud!r} is not a positive integer")
    return device, baud


def open_uart(spec: str, baud: int | None = None, timeout: float = DEFAULT_TIMEOUT_S, **options) -> UartTransport:
    """Open the bridge on a serial port with pyserial, for the URI ``uart:<device>[@<baud>]`` (see
    :func:`parse_uart_spec`). ``options`` go to ``serial.serial_for_url`` (e.g. ``rtscts=True``).

    Raises
    ------
    TransportError
        pyserial is not installed (naming the package), a bad URI, permission denied, or the port cannot be opened.
    DeviceNotFound
        The device does not exist.
    """
    device, baud = parse_uart_spec(spec, baud)
    try:
        import serial
    except ImportError:
        raise TransportError(f"the uart transport needs pyserial: pip install '{PYSERIAL_REQUIREMENT}'") from None
    is_url = "://" in device
    if not is_url and not os.path.exists(device) and not device.upper().startswith("COM"):
        raise DeviceNotFound(f"serial device {device} does not exist (is the board plugged in? `ls /dev/ttyUSB*`)")
    try:
        port = serial.serial_for_url(device, baudrate=baud, timeout=timeout, write_timeout=max(timeout, 1.0),
                                     **options)
    except serial.SerialException as e:
        code = getattr(e, "errno", None)
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise DeviceNotFound(f"serial device {device} is not there: {e}") from None
        if code in (errno.EACCES, errno.EPERM):
            raise TransportError(f"permission denied opening {device}: add your user to the group that owns it "
                                 f"(dialout or uucp) or add a udev rule") from None
        raise TransportError(f"cannot open serial port {device} at {baud} baud: {e}") from None
    except ValueError as e:      # a bad option or baud rate
        raise TransportError(f"cannot open serial port {device} at {baud} baud: {e}") from None
    reset = getattr(port, "reset_input_buffer", None)
    if reset is not None:
        reset()
    return UartTransport(port, owns_port=True, name=f"{device}@{baud}")
