"""WirespeedDriver (pynq.DefaultIP) on a stand-in pynq Device whose registers are the bit-exact core model.

pynq.MMIO (REGISTER_RW device) ─▶ FakeDevice.read_registers/write_registers ─▶ CoreModel, so ``info()``,
``classify()`` and ``register_map`` run through the real pynq 4.0.0 code paths without a board.
"""

import struct

import numpy as np
import pytest

pynq = pytest.importorskip("pynq")
from pynq.overlay import _assign_drivers  # noqa: E402
from pynq.pl_server.device import Device  # noqa: E402
from pynq.registers import RegisterMap  # noqa: E402

from wirespeed.hdl.id.id_block import CoreParams  # noqa: E402
from wirespeed.host.transports import pynq as transport_pynq  # noqa: E402
from wirespeed.host.errors import IncompatibleBitstream  # noqa: E402
from wirespeed.host.models.device import CoreModel  # noqa: E402
from wirespeed.host.driver.offload import Offload  # noqa: E402
from wirespeed.host.driver.pynq_driver import VERDICT_BYTES, VLNV, WirespeedDriver  # noqa: E402
from wirespeed.host.tools.xilinx import BASE_ADDRESS, ip_registers
from wirespeed.host.xilinx_ip import vlnv

WINDOW = 0x8000
REQUEST = b"GET /v1/chat HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer k\r\n\r\n"


class ModelDevice(Device):
    """A REGISTER_RW pynq device: every 32-bit access at ``base + offset`` is one access of a :class:`CoreModel`."""

    def __init__(self, model, base=BASE_ADDRESS):
        super().__init__("wirespeed-model")
        self.capabilities = {"REGISTER_RW": True}
        self.model, self.base = model, base
        self.accesses = 0

    def read_registers(self, address, length):
        out = b""
        for i in range(0, length, 4):
            data, _ = self.model.read(address + i - self.base)
            self.accesses += 1
            out += struct.pack("<I", data)
        return out

    def write_registers(self, address, data):
        for i in range(0, len(data), 4):
            self.model.write(address + i - self.base, struct.unpack_from("<I", data, i)[0])
            self.accesses += 1


@pytest.fixture
def model():
    return CoreModel(CoreParams())


@pytest.fixture
def device(model):
    return ModelDevice(model)


def description(device, vlnv_=VLNV, **extra):
    return {"phys_addr": BASE_ADDRESS, "addr_range": WINDOW, "type": vlnv_, "device": device,
            "fullpath": "wirespeed_core_0", **extra}


def test_vlnv_is_the_packaged_one_and_the_transports():
    assert WirespeedDriver.bindto == [VLNV] == [vlnv()]
    # The transport finds the core by everything but the version.
    assert VLNV.rpartition(":")[0] == transport_pynq.VLNV.rpartition(":")[0]


def test_pynq_binds_the_driver_by_vlnv(device):
    ip = {"ip": {"wirespeed_core_0": description(device)}, "hierarchies": {}}
    _assign_drivers(ip, False, device)
    import wirespeed.host.driver.pynq_driver as mod
    assert ip["ip"]["wirespeed_core_0"]["driver"] is mod.WirespeedDriver


def test_info_through_pynq_mmio(device, model):
    drv = WirespeedDriver(description(device))
    assert isinstance(drv.mmio, pynq.MMIO)
    info = drv.info()
    assert info.magic == 0x57535044
    assert info.width_bytes == 8 and info.tenants == 4096 and info.maglev_size == 8192
    assert "submit" in info.features
    assert isinstance(drv.offload, Offload) and drv.offload is drv.offload
    assert device.accesses > 0
    # pynq's own MMIO sees the same registers.
    assert drv.mmio.read(0) == 0x57535044


def test_classify_through_pynq_mmio(device):
    drv = WirespeedDriver(description(device))
    verdict = drv.classify(REQUEST)
    # No tenants configured: the default policy decides; what matters is that the model answered through pynq.
    assert verdict.action in ("forward", "reject", "punt")
    assert "mmio" in verdict.flags and "complete" in verdict.flags
    bad = drv.classify(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n")
    assert bad.action == "reject" and bad.status == 400


def test_wrong_window_is_refused(model):
    # The IP's window points 4 KiB into the core: offset 0 is not the ID block, so the magic is wrong.
    shifted = ModelDevice(model, base=BASE_ADDRESS - 0x1000)
    drv = WirespeedDriver(description(shifted))
    with pytest.raises(IncompatibleBitstream, match="magic"):
        drv.offload


def test_register_map_from_the_packaged_registers(device):
    # What the .hwh gives pynq (registers from package_ip.tcl, i.e. ip_registers) builds a working register_map.
    regs = {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in ip_registers()}
    drv = WirespeedDriver(description(device, registers=regs))
    assert int(drv.register_map.id_magic) == 0x57535044
    assert int(drv.register_map.id_version.major) == 2
    assert isinstance(drv.register_map, RegisterMap)


class FakeDMA:
    """pynq's DMA API (sendchannel/recvchannel transfer + wait) over the model: MM2S bytes are classified as a
    lookaside packet from s_axis, the record comes back padded as the wrapper's m_axis_verdict sends it."""

    class Channel:
        def __init__(self):
            self.buffer = None
            self.done = []

        def transfer(self, buffer):
            self.buffer = buffer

        def wait(self):
            self.done.append(self.buffer)

    def __init__(self, model):
        self.model = model
        self.sendchannel, self.recvchannel = self.Channel(), self.Channel()
        outer = self

        def wait_send():
            FakeDMA.Channel.wait(outer.sendchannel)
            inline = self.model.regmap["pipeline.ctrl"].field("axis_inline")
            assert self.model.bank.value("pipeline.ctrl") & inline.mask == 0
            outcome = self.model.classify(outer.sendchannel.buffer.tobytes(), False, self.model.cycles, mmio=False)
            record = outcome.record.to_bits()
            outer.recvchannel.buffer[:] = np.frombuffer(record.to_bytes(VERDICT_BYTES, "little"), np.uint8)

        self.sendchannel.wait = wait_send


def test_classify_dma_with_fakes(device, model):
    drv = WirespeedDriver(description(device))
    dma = FakeDMA(model)
    allocated = []

    def allocate(shape, dtype):
        buf = np.zeros(shape, dtype)
        allocated.append(buf)
        return buf

    verdicts = drv.classify_dma([REQUEST, REQUEST + b"body bytes are not sent"], dma, allocate=allocate)
    mmio = drv.classify(REQUEST)
    assert len(verdicts) == 2
    for v in verdicts:
        assert (v.action, v.status, v.reason) == (mmio.action, mmio.status, mmio.reason)
        assert "mmio" not in v.flags and "complete" in v.flags
    # Only the header block went out, the same bytes both times.
    assert [b.tobytes() for b in dma.sendchannel.done] == [REQUEST, REQUEST]
    assert allocated[0].shape == (VERDICT_BYTES,)


def test_module_imports_and_refuses_without_pynq(monkeypatch):
    import importlib
    import sys

    import wirespeed.host.driver.pynq_driver as mod
    monkeypatch.setitem(sys.modules, "pynq", None)
    try:
        fresh = importlib.reload(mod)
        assert not fresh.HAVE_PYNQ
        from wirespeed.host.errors import DeviceNotFound
        with pytest.raises(DeviceNotFound, match="pip install"):
            fresh.WirespeedDriver({"phys_addr": 0, "addr_range": 4})
    finally:
        monkeypatch.undo()
        importlib.reload(mod)
