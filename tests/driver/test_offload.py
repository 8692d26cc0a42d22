"""The Offload driver (wirespeed.open) over the model, a uio: stand-in file, and error paths."""

import asyncio
import struct
import sys
import threading

import pytest

import wirespeed
from wirespeed.hdl.id.id_block import FEATURES, CoreParams, build_hash
from wirespeed.host.errors import (BusError, ConfigError, DeviceNotFound, IncompatibleBitstream, TransportError,
                                   WirespeedError)
from wirespeed.host.models.device import AXIL_ACCESS_CYCLES, CoreModel
from wirespeed.host.transports.model import ModelTransport
from wirespeed.host.driver.offload import AsyncOffload, DeviceInfo, Offload, OffloadCore, open_transport
from wirespeed.host.transports.base import AsyncTransport
from wirespeed.hdl.bus.regmap import core_regmap
from wirespeed.host.transports.mmap import SYSFS_ENV

REGMAP = core_regmap()
MAGIC = REGMAP["id.magic"].field("value").reset
MAJOR = REGMAP["id.version"].field("major").reset
MINOR = REGMAP["id.version"].field("minor").reset


def test_open_model_info_matches_core_params():
    p = CoreParams()
    with wirespeed.open("model") as dev:
        assert isinstance(dev, Offload)
        info = dev.info()
    assert isinstance(info, DeviceInfo)
    assert info.magic == MAGIC == 0x57535044
    assert info.version == (MAJOR, MINOR)
    assert info.build_hash == build_hash(p)
    assert info.features == frozenset(p.features)
    assert info.width_bytes == p.width_bytes
    assert info.tenants == p.tenants
    assert info.maglev_size == p.maglev_size
    assert info.clock_hz == p.clock_hz
    d = info.as_dict()
    assert d["magic"] == "0x57535044"
    assert d["version"] == f"{MAJOR}.{MINOR}"
    assert d["build_hash"] == f"0x{build_hash(p):08x}"


def test_open_model_with_other_params():
    p = CoreParams(width_bytes=16, tenants=1024, maglev_size=65538, clock_hz=250_000_000,
                   features=frozenset({"parser", "router", "limiter"}))
    with wirespeed.open("model", params=p) as dev:
        info = dev.info()
    assert (info.width_bytes, info.tenants, info.maglev_size, info.clock_hz) == (16, 1024, 65538, 250_000_000)
    # The parser, the limiter and the router make the whole pipeline: the front end and submit window come with it.
    assert info.features == {"parser", "router", "limiter", "frontend", "submit"}
    with pytest.raises(ValueError, match="parser supports"):
        CoreParams(width_bytes=32)
    with pytest.raises(ValueError, match="tenants"):
        CoreParams(tenants=1024, features=frozenset({"parser"}))     # a tenant count needs the limiter
    assert info.build_hash == build_hash(p) != build_hash(CoreParams())
    for feature in ("parser", "limiter", "router"):
        p1 = CoreParams(features=frozenset({feature}))
        with wirespeed.open("model", params=p1) as dev:
            assert dev.info().features == {feature}
    for feature in ("frontend", "submit"):
        with pytest.raises(ValueError, match="whole pipeline"):
            CoreParams(features=frozenset({"parser", feature}))


def test_default_uri_is_model():
    with wirespeed.open() as dev:
        assert dev.info().magic == MAGIC
        assert "model" in repr(dev)


def test_context_manager_closes():
    with wirespeed.open("model") as dev:
        dev.write_register("id.scratch", 0xCAFE)
        assert dev.read_register("id.scratch") == 0xCAFE
        assert dev.read_register("id.version.major") == MAJOR
    with pytest.raises(TransportError):
        dev.info()
    with pytest.raises(TransportError):
        dev.read_register("id.scratch")
    with pytest.raises(TransportError):
        dev.write_register("id.scratch", 1)
    dev.close()  # idempotent


def test_close_without_context_manager():
    dev = wirespeed.open("model")
    dev.close()
    with pytest.raises(TransportError):
        dev.read_register("id.magic")


def test_write_register_checks_range_before_access():
    with wirespeed.open("model") as dev:
        cycles = dev.transport.model.cycles
        with pytest.raises(ConfigError):
            dev.write_register("id.scratch", 1 << 32)
        with pytest.raises(ConfigError):
            dev.write_register("id.magic", 0)
        assert dev.transport.model.cycles == cycles


# -- incompatible cores ----------------------------------------------------------------------------------------------

def _assert_closed(t):
    with pytest.raises(TransportError):
        t.read32(REGMAP["id.scratch"].address)


@pytest.mark.parametrize("magic", [0, 0xFFFF_FFFF, MAGIC ^ 1, MAGIC >> 8])
def test_wrong_magic(magic, record_bus):
    t = record_bus(ModelTransport(), stuck={REGMAP["id.magic"].address: magic})
    with pytest.raises(IncompatibleBitstream, match="magic"):
        Offload(t, "model")
    _assert_closed(t)


@pytest.mark.parametrize("major", [0, MAJOR + 1, 0xFFFF])
def test_wrong_major(major, record_bus):
    version = REGMAP["id.version"]
    t = record_bus(ModelTransport(), stuck={version.address: major << version.field("major").lsb})
    with pytest.raises(IncompatibleBitstream, match="major"):
        Offload(t, "model")
    _assert_closed(t)


def test_newer_minor_is_accepted(record_bus):
    version = REGMAP["id.version"]
    t = record_bus(ModelTransport(), stuck={version.address: MAJOR << version.field("major").lsb | 7})
    with Offload(t, "model") as dev:
        assert dev.info().version == (MAJOR, 7)


def test_error_types():
    assert issubclass(IncompatibleBitstream, WirespeedError)
    assert issubclass(ConfigError, ValueError)
    assert OffloadCore().magic == MAGIC and OffloadCore().major == MAJOR


# -- URIs ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["bogus:x", "bogus", "", "MODEL", "http://example.com"])
def test_unknown_scheme(uri):
    with pytest.raises(DeviceNotFound) as exc:
        wirespeed.open(uri)
    assert "model" in str(exc.value)  # lists the schemes


@pytest.mark.parametrize("uri", ["pynq:", "uio:", "pci:"])
def test_scheme_without_target(uri):
    with pytest.raises(TransportError):
        open_transport(uri)
    with pytest.raises(TransportError):
        wirespeed.open(uri)


@pytest.mark.parametrize("uri, options, field, value", [
    ("model", {"bogus": 1}, "options", "bogus"),
    ("software", {"submit": "mmio"}, "options", "submit"),       # the software path has no submit window
    ("model", {"params": 3}, "params", 3),
    ("software", {"params": "x"}, "params", "x"),
])
def test_an_option_the_transport_does_not_take_is_a_config_error(uri, options, field, value):
    with pytest.raises(ConfigError) as exc:
        wirespeed.open(uri, **options)
    assert exc.value.field == field and exc.value.value == value


def test_a_frame_that_is_not_bytes_is_named_frame():
    with wirespeed.open("model") as dev:
        with pytest.raises(ConfigError) as exc:
            dev.classify_frame("x")
        assert exc.value.field == "frame" and exc.value.value == "str"


def test_a_bad_hash_key_is_named_without_showing_it():
    with wirespeed.open("model") as dev:
        with pytest.raises(ConfigError) as exc:
            dev.set_hash_key(b"my-secret-key")
        assert exc.value.field == "key" and "my-secret" not in str(exc.value) and "13 bytes" in str(exc.value)


@pytest.mark.parametrize("uri", [None, 3, b"model", ["model"]])
def test_uri_that_is_not_a_str_is_a_config_error(uri):
    for call in (wirespeed.open, open_transport):
        with pytest.raises(ConfigError) as exc:
            call(uri)
        assert exc.value.field == "uri" and exc.value.value == uri
        assert str(exc.value).startswith(f"uri={uri!r} is invalid") and "model" in str(exc.value)


@pytest.mark.parametrize("uri", ["model:foo", "model:", "sim:x", "sim:"])
def test_model_and_sim_take_no_argument(uri):
    # Refused before anything is built: "sim" would compile the harness first.
    for call in (wirespeed.open, open_transport):
        with pytest.raises(ConfigError, match="takes no argument") as exc:
            call(uri)
        assert exc.value.field == "uri" and repr(uri) in str(exc.value)
    with wirespeed.open("model", submit="mmio") as dev:          # options are the way to configure them
        assert dev.transport.classify_stream is None


def test_uio_missing_device(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSFS_ENV, str(tmp_path))
    with pytest.raises(DeviceNotFound):
        wirespeed.open(f"uio:{tmp_path}/uio7")


# -- bus errors ------------------------------------------------------------------------------------------------------

def test_bus_errors_and_their_counter():
    with wirespeed.open("model") as dev:
        t = dev.transport
        assert dev.read_register("id.bus_errors") == 0
        with pytest.raises(BusError) as exc:
            t.read32(REGMAP.size)
        assert exc.value.resp == "DECERR" and exc.value.op == "read" and exc.value.address == REGMAP.size
        with pytest.raises(BusError) as exc:
            t.write32(REGMAP.size + 4, 1)
        assert exc.value.resp == "DECERR"
        with pytest.raises(BusError) as exc:
            t.write32(REGMAP["id.magic"].address, 0x1234)
        assert exc.value.resp == "SLVERR" and exc.value.op == "write"
        assert dev.info().magic == MAGIC  # the write changed nothing
        assert dev.read_register("id.bus_errors") == 3
        # a hole inside the map decodes to nothing too
        holes = [a for a in range(0, REGMAP.size, 4) if REGMAP.decode(a) is None]
        for a in holes:
            with pytest.raises(BusError) as exc:
                t.read32(a)
            assert exc.value.resp == "DECERR"
        assert dev.read_register("id.bus_errors") == 3 + len(holes)
        # and unaligned access is the transport's own error, not a bus error
        with pytest.raises(TransportError):
            t.read32(2)
        assert dev.read_register("id.bus_errors") == 3 + len(holes)


# -- threads ---------------------------------------------------------------------------------------------------------

def test_threads_share_one_offload():
    threads_n, rounds = 4, 500
    dev = wirespeed.open("model")
    model = dev.transport.model
    accesses_at_open = model.cycles // AXIL_ACCESS_CYCLES
    assert accesses_at_open * AXIL_ACCESS_CYCLES == model.cycles
    written = {tid: [(tid + 1) << 24 | i << 4 | 0xA for i in range(rounds)] for tid in range(threads_n)}
    everything = {v for vs in written.values() for v in vs}
    assert len(everything) == threads_n * rounds
    bad, errors = [], []
    start = threading.Barrier(threads_n)

    def worker(tid):
        try:
            start.wait()
            for value in written[tid]:
                dev.write_register("id.scratch", value)
                got = dev.read_register("id.scratch")
                if got not in everything:
                    bad.append((tid, value, got))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(tid,)) for tid in range(threads_n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert not bad, bad[:5]
    expected_accesses = accesses_at_open + threads_n * rounds * 2
    assert model.cycles == expected_accesses * AXIL_ACCESS_CYCLES
    assert dev.read_register("id.scratch") in {vs[-1] for vs in written.values()}
    assert dev.read_register("id.bus_errors") == 0
    dev.close()


# -- uio: stand-in ---------------------------------------------------------------------------------------------------

def _register_image(model: CoreModel) -> bytes:
    words = []
    for address in range(0, REGMAP.size, 4):
        hit = REGMAP.decode(address)
        words.append(model.bank.read(address)[0] if hit else 0)
    return struct.pack(f"<{len(words)}I", *words)


def test_uio_stand_in_decodes_the_same_info(tmp_path, monkeypatch):
    sysfs = tmp_path / "sysfs"
    sysfs.mkdir()
    monkeypatch.setenv(SYSFS_ENV, str(sysfs))
    params = CoreParams(width_bytes=16, tenants=4096, maglev_size=252, features=frozenset({"limiter", "router"}))
    image = _register_image(CoreModel(params))
    assert len(image) == REGMAP.size
    dev_path = tmp_path / "uio0"
    dev_path.write_bytes(image)

    with wirespeed.open("model", params=params) as model_dev:
        expected = model_dev.info()
    with wirespeed.open(f"uio:{dev_path}") as dev:
        assert dev.transport.size == REGMAP.size
        assert dev.info() == expected
        dev.write_register("id.scratch", 0xFEED_F00D)
        assert dev.read_register("id.scratch") == 0xFEED_F00D
    # the store reached the file at the scratch register's address
    scratch = REGMAP["id.scratch"].address
    assert struct.unpack_from("<I", dev_path.read_bytes(), scratch)[0] == 0xFEED_F00D
    with pytest.raises(TransportError):
        dev.info()


def test_uio_stand_in_with_wrong_magic_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSFS_ENV, str(tmp_path / "empty"))
    dev_path = tmp_path / "uio3"
    dev_path.write_bytes(bytes(REGMAP.size))
    with pytest.raises(IncompatibleBitstream):
        wirespeed.open(f"uio:{dev_path}")


def test_offload_serialises_transport_access(record_bus):
    # Every access sleeps inside the transport, giving another thread the chance to enter if the driver allows it.
    t = record_bus(ModelTransport(), yield_inside=True)
    dev = Offload(t, "model")
    errors = []

    def worker(tid):
        try:
            for i in range(200):
                dev.write_register("id.scratch", tid << 16 | i)
                dev.read_register("id.scratch")
                dev.read_register("id.uptime_cycles")  # a two-word read that must not interleave
                if i % 50 == 0:
                    dev.info()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(tid,)) for tid in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors
    assert t.overlaps == 0, f"{t.overlaps} accesses overlapped another thread's"
    dev.close()


# -- arguments a gateway can get wrong: a named ConfigError before any access ----------------------------------------

class AsyncModelTransport(AsyncTransport):
    """The model behind the async transport contract, as a cocotb testbench's would be."""

    def __init__(self):
        self.sync = ModelTransport()

    async def read32(self, address):
        return self.sync.read32(address)

    async def write32(self, address, value):
        self.sync.write32(address, value)


@pytest.mark.parametrize("name, hint", [("nope.x", "blocks .*limiter"), ("id.scrach", "did you mean id.scratch"),
                                        ("id.version.majr", "did you mean id.version.major"), (None, "must be")])
def test_unknown_register_names(name, hint):
    with wirespeed.open("model") as dev:
        cycles = dev.transport.model.cycles
        for call in (lambda: dev.read_register(name), lambda: dev.write_register(name, 1)):
            with pytest.raises(ConfigError, match=hint) as exc:
                call()
            assert exc.value.field == "name" and exc.value.value == name and repr(name) in str(exc.value)
        assert dev.transport.model.cycles == cycles

    async def on_async():
        dev = await AsyncOffload.open(AsyncModelTransport())
        for call in (dev.read_register(name), dev.write_register(name, 1)):
            with pytest.raises(ConfigError, match=hint):
                await call
    asyncio.run(on_async())


REQUEST = b"GET /v1/chat HTTP/1.1\r\nHost: api\r\nx-api-key: k\r\n\r\n"


@pytest.mark.parametrize("requests", [REQUEST, bytearray(REQUEST), memoryview(REQUEST), REQUEST.decode()])
def test_classify_many_of_one_request_asks_for_a_list(requests):
    with wirespeed.open("model") as dev:
        with pytest.raises(ConfigError, match="must be a list of requests") as exc:
            dev.classify_many(requests)
        assert exc.value.field == "requests" and str(exc.value).startswith("requests=")
        assert "GET /v1/chat" in str(exc.value) and f"length {len(REQUEST)}" in str(exc.value)
        assert dev.classify_many([REQUEST])[0] == dev.classify(REQUEST)

    async def on_async():
        dev = await AsyncOffload.open(AsyncModelTransport())
        with pytest.raises(ConfigError, match="must be a list of requests"):
            await dev.classify_many(requests)
        with pytest.raises(ConfigError, match="request='str'"):
            await dev.classify(REQUEST.decode())
        assert (await dev.classify_many(iter([REQUEST])))[0].status == 401       # any iterable; no tenants: 401
    asyncio.run(on_async())


def test_classify_many_of_a_non_iterable_and_classify_of_a_str():
    with wirespeed.open("model") as dev:
        with pytest.raises(ConfigError, match="iterable") as exc:
            dev.classify_many(None)
        assert exc.value.field == "requests" and "requests=None" in str(exc.value)
        with pytest.raises(ConfigError, match="encode a str") as exc:
            dev.classify(REQUEST.decode())
        assert exc.value.field == "request"
        with pytest.raises(ConfigError) as exc:
            dev.classify_many([REQUEST, 7])
        assert exc.value.field == "requests[1]"


@pytest.mark.parametrize("secret, shown", [("gateway secret", "'<str>'"), (7, "'<int>'"), (None, "'<NoneType>'"),
                                           (b"", "b''")])
def test_fingerprint_key_is_bytes_like_the_hash_key(secret, shown):
    with wirespeed.open("model") as dev:
        dev.routes, dev.tenants                                   # their first use reads the device's parameters
        cycles = dev.transport.model.cycles
        with pytest.raises(ConfigError) as exc:
            dev.set_fingerprint_key(secret)
        assert exc.value.field == "secret" and str(exc.value).startswith(f"secret={shown} is invalid")
        if isinstance(secret, str):
            assert secret not in str(exc.value)                  # a secret is never echoed
        with pytest.raises(ConfigError) as exc:
            dev.set_hash_key("x" * 40)
        assert exc.value.field == "key"
        assert dev.transport.model.cycles == cycles
        dev.set_fingerprint_key(bytearray(b"gateway secret"))
