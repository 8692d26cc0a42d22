"""PynqTransport through the real ``pynq.MMIO`` (pynq 4.0.0) on a stand-in device backed by a bytearray."""

import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pynq = pytest.importorskip("pynq")
from pynq.pl_server.device import Device  # noqa: E402

from wirespeed.host.errors import DeviceNotFound, TransportError  # noqa: E402
from wirespeed.host.transports.pynq import VLNV, PynqTransport, find_core, mmio_transport  # noqa: E402

BASE = 0x4000_0000
WINDOW = 0x1000


class FakeDevice(Device):
    """A MEMORY_MAPPED pynq device whose physical memory is a bytearray starting at ``base``.

    ``pynq.MMIO`` calls ``mmap(base_addr, length)`` once and indexes the returned array by ``offset >> 2``, as it does
    with the ``uint32`` view of ``/dev/mem`` that the embedded device returns.
    """

    def __init__(self, base=BASE, size=2 * WINDOW):
        super().__init__("wirespeed-fake")
        self.capabilities = {"MEMORY_MAPPED": True}
        self.base = base
        self.memory = bytearray(size)
        self.mapped = []

    def mmap(self, base_addr, length):
        self.mapped.append((base_addr, length))
        return np.frombuffer(self.memory, np.uint32, length >> 2, base_addr - self.base)

    def word(self, address):
        return struct.unpack_from("<I", self.memory, address - self.base)[0]


class FakeOverlay:
    def __init__(self, ip_dict, device=None):
        self.ip_dict = ip_dict
        if device is not None:
            self.device = device


def core_desc(phys_addr=BASE, addr_range=WINDOW, vlnv=VLNV, **extra):
    return {"phys_addr": phys_addr, "addr_range": addr_range, "type": vlnv, "state": None, **extra}


IP_DICT = {
    "axi_dma_0": core_desc(BASE + WINDOW, 0x100, "xilinx.com:ip:axi_dma:7.1"),
    "wirespeed_0": core_desc(BASE, WINDOW, "wirespeed.dev:offload:wirespeed_core:1.3"),
}


@pytest.fixture
def device():
    return FakeDevice()


def test_from_mmio_round_trips_through_pynq_mmio(device):
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    assert isinstance(t.mmio, pynq.MMIO) and t.scheme == "pynq" and t.size == WINDOW
    assert device.mapped == [(BASE, WINDOW)]
    t.write32(0x10, 0x1234_5678)
    t.write32(WINDOW - 4, 0xFFFF_FFFF)
    assert t.read32(0x10) == 0x1234_5678
    assert type(t.read32(0x10)) is int
    assert t.read32(WINDOW - 4) == 0xFFFF_FFFF
    # The stores are in the device's memory, little-endian.
    assert device.memory[0x10:0x14] == bytes([0x78, 0x56, 0x34, 0x12])
    assert device.word(BASE + WINDOW - 4) == 0xFFFF_FFFF
    assert sum(device.memory) == 0x78 + 0x56 + 0x34 + 0x12 + 4 * 0xFF


def test_reads_what_the_device_holds(device):
    struct.pack_into("<I", device.memory, 0x20, 0xDEAD_BEEF)
    assert mmio_transport(BASE, WINDOW, device).read32(0x20) == 0xDEAD_BEEF


def test_window_need_not_start_at_the_device_base(device):
    t = PynqTransport.from_mmio(BASE + WINDOW, 0x100, device)
    t.write32(0xFC, 7)
    assert device.word(BASE + WINDOW + 0xFC) == 7
    with pytest.raises(TransportError, match="window"):
        t.write32(0x100, 0)


def test_numpy_and_enum_values_are_accepted(device):
    # pynq 4.0.0's MMIO.write refuses anything whose type is not exactly int; the transport converts.
    import enum

    class Bits(enum.IntEnum):
        GO = 3

    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    t.write32(0, np.uint32(0xABCD_0123))
    t.write32(4, Bits.GO)
    t.write32(8, True)
    assert device.word(BASE) == 0xABCD_0123 and device.word(BASE + 4) == 3 and device.word(BASE + 8) == 1


def test_blocks(device):
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    t.write_block(0x40, [1, 2, 0xFFFF_FFFF, 4])
    assert [device.word(BASE + 0x40 + 4 * i) for i in range(4)] == [1, 2, 0xFFFF_FFFF, 4]
    assert t.read_block(0x3C, 6) == [0, 1, 2, 0xFFFF_FFFF, 4, 0]
    assert all(type(v) is int for v in t.read_block(0x40, 4))
    assert t.read_block(0, 0) == []


def test_block_errors_write_nothing(device):
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    with pytest.raises(TransportError, match="32 bits"):
        t.write_block(0, [1, 2, -1])
    with pytest.raises(TransportError, match="window"):
        t.write_block(WINDOW - 4, [1, 2])
    with pytest.raises(TransportError, match="window"):
        t.read_block(WINDOW - 4, 2)
    assert not any(device.memory)


def test_register_rw_device_uses_word_loops():
    # An XRT-style device: no mapping, register reads and writes by call. Blocks must still go through it.
    class RegisterDevice(Device):
        def __init__(self):
            super().__init__("wirespeed-fake-rw")
            self.capabilities = {"REGISTER_RW": True}
            self.regs = {}

        def read_registers(self, address, length):
            return b"".join(struct.pack("<I", self.regs.get(address + i, 0)) for i in range(0, length, 4))

        def write_registers(self, address, data):
            for i in range(0, len(data), 4):
                self.regs[address + i] = struct.unpack_from("<I", data, i)[0]

    dev = RegisterDevice()
    t = PynqTransport.from_mmio(BASE, WINDOW, dev)
    t.write32(8, 0x55AA_55AA)
    t.write_block(0x20, [9, 10])
    assert dev.regs == {BASE + 8: 0x55AA_55AA, BASE + 0x20: 9, BASE + 0x24: 10}
    assert t.read32(8) == 0x55AA_55AA
    assert t.read_block(0x20, 2) == [9, 10]


@pytest.mark.parametrize("address", [1, 2, 6, -4])
def test_unaligned_or_negative(device, address):
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    with pytest.raises(TransportError, match="aligned"):
        t.read32(address)
    with pytest.raises(TransportError, match="aligned"):
        t.write32(address, 0)


@pytest.mark.parametrize("address", [WINDOW, WINDOW + 4])
def test_outside_window(device, address):
    # Without the check pynq would happily reach past the window: it does no bounds checking of its own.
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    with pytest.raises(TransportError, match="window"):
        t.read32(address)
    with pytest.raises(TransportError, match="window"):
        t.write32(address, 1)
    assert not any(device.memory)


@pytest.mark.parametrize("value", [-1, 1 << 32, 1.5, "1"])
def test_bad_values(device, value):
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    with pytest.raises(TransportError):
        t.write32(0, value)
    assert not any(device.memory)


def test_close_is_idempotent_and_final(device):
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    t.close()
    t.close()
    for access in (lambda: t.read32(0), lambda: t.write32(0, 1), lambda: t.read_block(0, 1),
                   lambda: t.write_block(0, [1]), lambda: t.mmio):
        with pytest.raises(TransportError, match="closed"):
            access()
    assert "closed" in repr(t)


def test_device_without_mmio_capability():
    class Bare(Device):
        def __init__(self):
            super().__init__("wirespeed-bare")

    with pytest.raises(TransportError, match="capabilities"):
        PynqTransport.from_mmio(BASE, WINDOW, Bare())


@pytest.mark.parametrize("length", [0, 6])
def test_bad_length(device, length):
    with pytest.raises(TransportError, match="multiple of 4"):
        PynqTransport.from_mmio(BASE, length, device)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, WINDOW // 4 - 1), st.integers(0, 0xFFFF_FFFF)), max_size=40),
       st.lists(st.integers(0, WINDOW // 4 - 1), max_size=20))
def test_random_round_trips_match_a_dict_model(writes, reads):
    device = FakeDevice()
    t = PynqTransport.from_mmio(BASE, WINDOW, device)
    model = {}
    for index, value in writes:
        t.write32(4 * index, value)
        model[index] = value
    for index in reads + [index for index, _ in writes]:
        assert t.read32(4 * index) == model.get(index, 0)
    assert [device.word(BASE + 4 * i) for i in range(WINDOW // 4)] == [model.get(i, 0) for i in range(WINDOW // 4)]


# -- overlays --------------------------------------------------------------------------------------------------------

def test_overlay_core_found_by_vlnv_ignoring_version(device):
    t = PynqTransport(None, overlay=FakeOverlay(dict(IP_DICT), device))
    assert t.ip_name == "wirespeed_0" and t.size == WINDOW
    assert device.mapped == [(BASE, WINDOW)]
    t.write32(0x30, 0xC0FF_EE00)
    assert device.word(BASE + 0x30) == 0xC0FF_EE00


def test_overlay_core_found_by_name(device):
    ip_dict = dict(IP_DICT, other=core_desc(BASE + 0x200, 0x200, "acme:misc:thing:1.0"))
    t = PynqTransport(None, ip_name="other", device=device, overlay=FakeOverlay(ip_dict))
    assert t.ip_name == "other"
    t.write32(0, 1)
    assert device.word(BASE + 0x200) == 1


def test_overlay_device_from_the_ip_description(device):
    ip_dict = {"core": core_desc(device=device)}
    t = PynqTransport(None, overlay=FakeOverlay(ip_dict))
    t.write32(4, 2)
    assert device.word(BASE + 4) == 2


def test_explicit_device_wins(device):
    other = FakeDevice()
    t = PynqTransport(None, device=device, overlay=FakeOverlay({"core": core_desc(device=other)}, other))
    t.write32(0, 3)
    assert device.word(BASE) == 3 and not any(other.memory)


def test_vlnv_match_needs_the_whole_name(device):
    ip_dict = {"near": core_desc(vlnv="wirespeed.dev:offload:wirespeed_core_lite:1.0"),
               "gpio": core_desc(vlnv="xilinx.com:ip:axi_gpio:2.0")}
    with pytest.raises(DeviceNotFound) as info:
        PynqTransport(None, device=device, overlay=FakeOverlay(ip_dict))
    message = str(info.value)
    assert "wirespeed.dev:offload:wirespeed_core:" in message
    assert "near (wirespeed.dev:offload:wirespeed_core_lite:1.0)" in message
    assert "gpio (xilinx.com:ip:axi_gpio:2.0)" in message


def test_unknown_ip_name_lists_the_ips(device):
    with pytest.raises(DeviceNotFound, match=r"'missing'.*axi_dma_0 \(xilinx.com:ip:axi_dma:7.1\).*wirespeed_0"):
        PynqTransport(None, ip_name="missing", device=device, overlay=FakeOverlay(IP_DICT))


def test_empty_overlay(device):
    with pytest.raises(DeviceNotFound, match="no IPs"):
        PynqTransport(None, device=device, overlay=FakeOverlay({}))


def test_core_without_register_window(device):
    with pytest.raises(TransportError, match="register window"):
        PynqTransport(None, device=device, overlay=FakeOverlay({"core": {"type": VLNV}}))


def test_find_core_returns_the_first_match():
    ip_dict = {"a": core_desc(vlnv="x:y:z:1.0"), "b": core_desc(BASE + 0x100), "c": core_desc(BASE + 0x200)}
    assert find_core(ip_dict) == ("b", ip_dict["b"])


def test_missing_bitfile_fails_before_pynq(tmp_path, monkeypatch):
    monkeypatch.setattr(pynq, "Overlay", lambda *a, **k: pytest.fail("pynq.Overlay called"))
    with pytest.raises(DeviceNotFound, match="nope.bit"):
        PynqTransport(tmp_path / "nope.bit")


def test_bitfile_is_loaded_as_an_overlay(tmp_path, monkeypatch, device):
    bitfile = tmp_path / "wirespeed.bit"
    bitfile.write_bytes(b"\0")
    loaded = []

    def overlay(path, device=None):
        loaded.append((path, device))
        return FakeOverlay(dict(IP_DICT), device)

    monkeypatch.setattr(pynq, "Overlay", overlay)
    t = PynqTransport(bitfile, device=device)
    assert loaded == [(str(bitfile), device)]
    assert t.overlay is not None and t.bitfile == bitfile
    t.write32(8, 9)
    assert device.word(BASE + 8) == 9


def test_overlay_load_failure_is_device_not_found(tmp_path, monkeypatch):
    bitfile = tmp_path / "wirespeed.bit"
    bitfile.write_bytes(b"\0")

    def overlay(path, device=None):
        raise RuntimeError("No Devices Found")

    monkeypatch.setattr(pynq, "Overlay", overlay)
    with pytest.raises(DeviceNotFound, match="No Devices Found"):
        PynqTransport(bitfile)


def test_missing_pynq_has_an_install_hint(tmp_path, monkeypatch):
    bitfile = tmp_path / "wirespeed.bit"
    bitfile.write_bytes(b"\0")
    # A None entry in sys.modules makes ``import pynq`` raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "pynq", None)
    with pytest.raises(DeviceNotFound, match=r"pip install 'wirespeed\[pynq\]'"):
        PynqTransport(bitfile)
    with pytest.raises(DeviceNotFound, match="pip install"):
        PynqTransport.from_mmio(BASE, WINDOW)
