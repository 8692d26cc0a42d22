"""``UartTransport`` against a pure-Python reference responder of the bridge protocol, and ``open_uart``'s URI,
pyserial and device handling (no serial hardware, no pyserial needed)."""

from __future__ import annotations

import errno
import random
import sys
import types

import pytest

import wirespeed
from wirespeed.hdl.platform.uart_bridge import (DEFAULT_BAUD, OP_READ, OP_WRITE, RX_FIFO_BYTES, STATUS_AXI_TIMEOUT,
                                                STATUS_BAD_OP, STATUS_FRAMING, STATUS_INCOMPLETE, STATUS_OVERRUN)
from wirespeed.host.errors import BusError, DeviceNotFound, TransportError
from wirespeed.host.transports.model import ModelTransport
from wirespeed.host.driver.offload import Offload
from wirespeed.hdl.bus.regmap import DECERR, OKAY
from wirespeed.host.models.register_bank import RegisterBankModel
from wirespeed.hdl.bus.regmap import core_regmap
from wirespeed.host.transports.uart import (PYSERIAL_REQUIREMENT, UartTransport, encode_request, open_uart,
                                            parse_uart_spec)

SEED = 20261125


class BridgeResponder:
    """The bridge's protocol in Python, over any ``read32``/``write32`` target: a fake serial port.

    ``write`` parses requests and queues responses; ``read(n)`` returns what is queued (fewer bytes = the port's
    timeout). ``fault`` mangles the next response: ``"silent"`` (none), ``"short"`` (cut after one byte),
    ``"garble"`` (status 0x7F), ``"axi_timeout"``; ``line_error`` answers the next request with that status instead.
    """

    def __init__(self, target, addr_width: int = 15):
        self.target, self.addr_width = target, addr_width
        self.out = bytearray()
        self.pending = bytearray()
        self.fault = None
        self.line_error = None
        self.writes = []                # each write() call's bytes
        self.reads = 0
        self.drains = 0
        self.max_pending = 0

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        self.pending += data
        self.max_pending = max(self.max_pending, len(self.pending))
        while self.pending:
            op = self.pending[0]
            if op not in (OP_READ, OP_WRITE):
                del self.pending[0]
                self.out.append(STATUS_BAD_OP)
                continue
            size = 5 if op == OP_READ else 9
            if len(self.pending) < size:
                break
            request, self.pending = bytes(self.pending[:size]), self.pending[size:]
            self.out += self._execute(request)
        return len(data)

    def _execute(self, request: bytes) -> bytes:
        if self.line_error is not None:
            status, self.line_error = self.line_error, None
            return bytes([status])
        is_read = request[0] == OP_READ
        address = int.from_bytes(request[1:5], "little")
        fault, self.fault = self.fault, None
        data, status = 0, OKAY
        if fault == "axi_timeout":
            status = STATUS_AXI_TIMEOUT
        elif address >> self.addr_width:
            status = DECERR
        elif is_read:
            data, status = self.target.read(address)
        else:
            status = self.target.write(address, int.from_bytes(request[5:9], "little"))
        response = bytes([status]) + (data.to_bytes(4, "little") if is_read else b"")
        if fault == "silent":
            return b""
        if fault == "short":
            return response[:1 + is_read]
        if fault == "garble":
            return b"\x7f" + response[1:]
        return response

    def read(self, n: int) -> bytes:
        self.reads += 1
        out = bytes(self.out[:n])
        del self.out[:n]
        if not out:
            self.drains += 1
        return out

    def close(self):
        self.closed = True


class RamTarget(dict):
    """Every address is a read/write word."""

    def read(self, address):
        return self.get(address, 0), OKAY

    def write(self, address, value):
        self[address] = value
        return OKAY


@pytest.fixture
def bank():
    return RegisterBankModel(core_regmap())


@pytest.fixture
def port(bank):
    return BridgeResponder(bank)


@pytest.fixture
def uart(port):
    return UartTransport(port)


def addr(name: str) -> int:
    return core_regmap()[name].address


def test_request_encoding():
    assert encode_request("read", 0x1234) == bytes([OP_READ, 0x34, 0x12, 0, 0])
    assert encode_request("write", 0x20, 0xDEADBEEF) == bytes([OP_WRITE, 0x20, 0, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE])


def test_round_trips_and_one_write_per_access(uart, port, bank):
    rng = random.Random(SEED)
    for _ in range(200):
        value = rng.getrandbits(32)
        uart.write32(addr("id.scratch"), value)
        assert uart.read32(addr("id.scratch")) == value, f"seed {SEED}"
    assert uart.read32(addr("id.magic")) == bank.read(addr("id.magic"))[0]
    assert len(port.writes) == 401 and uart.accesses == 401


def test_offload_over_uart_equals_model():
    with Offload(UartTransport(BridgeResponder(ModelTransport().model)), "uart:fake", clock="manual") as dev, \
            wirespeed.open("model", clock="manual") as model:
        assert dev.info() == model.info()


def test_blocks_are_pipelined_within_the_rx_fifo(uart, port, bank):
    base = addr("id.magic")
    words = uart.read_block(base, 8)
    assert words == [bank.read(base + 4 * i)[0] for i in range(8)]
    # 8 reads of 5 bytes: more than RX_FIFO_BYTES, so two writes, each within the bridge's FIFO.
    assert [len(w) for w in port.writes] == [30, 10]
    assert port.max_pending <= RX_FIFO_BYTES
    ram = BridgeResponder(RamTarget())
    uart = UartTransport(ram)
    values = list(range(1, 11))
    uart.write_block(0x100, values)
    assert [len(w) for w in ram.writes] == [27, 27, 27, 9]     # 3 writes of 9 bytes per batch
    assert uart.read_block(0x100, 10) == values
    assert uart.read_block(base, 0) == [] and uart.write_block(base, []) is None


def test_bus_errors(uart, port):
    regmap = core_regmap()
    hole = next(a for a in range(0, regmap.size, 4) if regmap.decode(a) is None)
    with pytest.raises(BusError) as e:
        uart.read32(hole)
    assert (e.value.op, e.value.address, e.value.resp) == ("read", hole, "DECERR")
    with pytest.raises(BusError) as e:
        uart.write32(addr("id.magic"), 1)
    assert e.value.resp == "SLVERR"
    with pytest.raises(BusError, match="DECERR"):
        uart.read32(1 << 20)
    # A bus error leaves the line in step: no drain, the next access works.
    assert port.drains == 0
    assert uart.read32(addr("id.scratch")) == 0


def test_bus_error_inside_a_block_is_raised_after_its_batch(uart, port, bank):
    regmap = core_regmap()
    scratch = addr("id.scratch")
    hole = next(a for a in range(scratch, regmap.size, 4) if regmap.decode(a) is None)
    with pytest.raises(BusError) as e:
        uart.read_block(hole - 4, 3)
    assert e.value.address == hole
    assert port.drains == 0 and not port.out      # every response of the batch was consumed


@pytest.mark.parametrize("fault, words", [
    ("silent", "no response within the port's timeout"),
    ("short", "short response"),
    ("garble", "garbled response"),
    ("axi_timeout", "did not answer"),
])
def test_broken_responses_raise_transport_error_and_resync(uart, port, fault, words):
    port.fault = fault
    with pytest.raises(TransportError, match=words):
        uart.read32(addr("id.scratch"))
    assert port.drains >= 1 or fault == "axi_timeout"
    uart.write32(addr("id.scratch"), 7)
    assert uart.read32(addr("id.scratch")) == 7


@pytest.mark.parametrize("status, words", [
    (STATUS_BAD_OP, "unknown op"), (STATUS_FRAMING, "framing error"), (STATUS_INCOMPLETE, "rest of the request"),
    (STATUS_OVERRUN, "overflowed"),
])
def test_line_errors_name_the_cause(uart, port, status, words):
    port.line_error = status
    with pytest.raises(TransportError, match=words):
        uart.write32(addr("id.scratch"), 1)
    assert port.drains == 1
    assert uart.read32(addr("id.scratch")) == 0     # the write never happened; the line is usable again


def test_stray_bytes_before_a_response_are_an_error_then_recover(uart, port):
    port.write(b"\x01\x02")                         # garbage from a previous session: two BAD_OP responses queued
    with pytest.raises(TransportError, match="unknown op"):
        uart.read32(addr("id.scratch"))
    assert not port.out
    assert uart.read32(addr("id.scratch")) == 0


def test_access_checks_and_close(uart, port):
    with pytest.raises(TransportError, match="aligned"):
        uart.read32(2)
    with pytest.raises(TransportError, match="32 bits"):
        uart.write32(0, 1 << 32)
    with pytest.raises(TransportError, match="32 bits"):
        uart.write_block(addr("id.scratch"), [1, -1])
    with pytest.raises(TransportError, match="negative"):
        uart.read_block(0, -1)
    assert port.writes == []                        # nothing reached the line
    small = UartTransport(port, size=0x100)
    with pytest.raises(TransportError, match="outside"):
        small.read32(0x100)
    owned = UartTransport(port, owns_port=True)
    owned.close()
    owned.close()
    assert port.closed
    with pytest.raises(TransportError, match="closed"):
        owned.read32(0)


# -- URIs and opening ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, baud, want", [
    ("/dev/ttyUSB0", None, ("/dev/ttyUSB0", DEFAULT_BAUD)),
    ("uart:/dev/ttyUSB1@1000000", None, ("/dev/ttyUSB1", 1_000_000)),
    ("/dev/ttyUSB1@1000000", 1_000_000, ("/dev/ttyUSB1", 1_000_000)),
    ("/dev/ttyUSB1", 921_600, ("/dev/ttyUSB1", 921_600)),
    ("COM3@115200", None, ("COM3", 115_200)),
    ("socket://localhost:7777", None, ("socket://localhost:7777", DEFAULT_BAUD)),
    ("/dev/serial/by-id/usb-FTDI@x-if01", None, ("/dev/serial/by-id/usb-FTDI@x-if01", DEFAULT_BAUD)),
])
def test_parse_uart_spec(spec, baud, want):
    assert parse_uart_spec(spec, baud) == want


@pytest.mark.parametrize("spec, baud, words", [
    ("", None, "names no device"), ("uart:@115200", None, "names no device"),
    ("/dev/ttyUSB0@9600", 115200, "9600 baud but baud=115200"), ("/dev/ttyUSB0", 0, "not a positive"),
])
def test_bad_uart_spec(spec, baud, words):
    with pytest.raises(TransportError, match=words):
        parse_uart_spec(spec, baud)


def test_missing_pyserial_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)        # makes `import serial` raise ImportError
    with pytest.raises(TransportError, match=f"pip install '{PYSERIAL_REQUIREMENT}'"):
        open_uart("/dev/ttyUSB0")


class FakeSerialException(OSError):
    pass


def fake_serial(monkeypatch, error=None):
    opened = []

    class Port(BridgeResponder):
        def __init__(self, url, **kwargs):
            if error is not None:
                raise error
            super().__init__(RegisterBankModel(core_regmap()))
            opened.append((url, kwargs))
            self.flushed = 0

        def reset_input_buffer(self):
            self.flushed += 1

    module = types.ModuleType("serial")
    module.SerialException = FakeSerialException
    module.serial_for_url = Port
    monkeypatch.setitem(sys.modules, "serial", module)
    return opened


def test_open_uart_with_pyserial(monkeypatch, tmp_path):
    opened = fake_serial(monkeypatch)
    device = tmp_path / "ttyUSB7"
    device.touch()
    with open_uart(f"uart:{device}@1000000", timeout=0.5) as t:
        assert opened[0][0] == str(device)
        assert opened[0][1]["baudrate"] == 1_000_000 and opened[0][1]["timeout"] == 0.5
        assert t.port.flushed == 1 and t.owns_port
        t.write32(addr("id.scratch"), 3)
        assert t.read32(addr("id.scratch")) == 3
    assert t.port.closed
    open_uart("loop://", rtscts=True).close()       # pyserial URLs skip the existence check
    assert opened[-1] == ("loop://", {"baudrate": DEFAULT_BAUD, "timeout": 0.25, "write_timeout": 1.0,
                                      "rtscts": True})


def test_missing_device(monkeypatch, tmp_path):
    fake_serial(monkeypatch)
    with pytest.raises(DeviceNotFound, match="does not exist"):
        open_uart(str(tmp_path / "ttyUSB9"))


@pytest.mark.parametrize("code, exc, words", [
    (errno.ENOENT, DeviceNotFound, "not there"), (errno.EACCES, TransportError, "dialout"),
    (errno.EBUSY, TransportError, "cannot open serial port"),
])
def test_open_errors_are_mapped(monkeypatch, tmp_path, code, exc, words):
    fake_serial(monkeypatch, FakeSerialException(code, "could not open port"))
    device = tmp_path / "ttyACM0"
    device.touch()
    with pytest.raises(exc, match=words):
        open_uart(str(device))
