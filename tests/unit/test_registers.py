"""Sans-IO register access (wirespeed.host.driver.registers) over the bus model (RegisterBankModel) and the core
model."""

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirespeed.host.errors import BusError, ConfigError
from wirespeed.host.models.device import AXIL_ACCESS_CYCLES
from wirespeed.host.transports.model import ModelTransport
from wirespeed.hdl.bus.regmap import DECERR, OKAY, RESP_NAMES, SLVERR
from wirespeed.host.models.register_bank import RegisterBankModel
from wirespeed.host.driver.registers import Read, ReadBlock, RegisterFile, Registers, Write, WriteBlock, arun, run
from wirespeed.hdl.bus.regmap import FieldKind, compile_rdl, core_regmap, regmap_from_node
from wirespeed.host.transports.base import AsyncTransport, Transport

TEST_RDL = """
addrmap regs_test {
    default regwidth = 32;
    default accesswidth = 32;

    reg {
        field { sw = rw; hw = r; } a[7:0] = 0xA5;
        field { sw = rw; hw = r; } b[19:8] = 0x123;
        field { sw = r; hw = na; } k[23:20] = 0x9;
        field { sw = rw; hw = r; } c[31:24] = 0x5C;
    } ctrl @ 0x00;

    reg {
        field { sw = rw; hw = r; } value[31:0] = 0;
    } scratch @ 0x04;

    reg {
        field { sw = r; hw = w; } lo[15:0];
        field { sw = r; hw = na; } ver[31:24] = 0x42;
    } status @ 0x08;

    reg {
        desc = "Write-only key next to a readable field; gap at [15:8].";
        field { sw = w; hw = r; } key[7:0] = 0x11;
        field { sw = rw; hw = r; } mode[23:16] = 0x3;
        field { sw = w; hw = r; singlepulse; } go[31:31] = 0;
    } keyed @ 0x0C;

    reg {
        field { sw = rw; hw = r; } only[11:4] = 0;
    } sparse @ 0x10;

    reg {
        regwidth = 64;
        field { sw = r; hw = na; counter; } count[63:0] = 0;
    } cnt64 @ 0x18;

    reg {
        regwidth = 64;
        field { sw = rw; hw = r; } lo[39:0] = 0x123456789A;
        field { sw = rw; hw = r; } hi[63:40] = 0xABCDEF;
    } wide @ 0x20;

    reg {
        field { sw = rw; hw = na; counter; } load[15:0] = 0;
        field { sw = rw; hw = r; } tag[31:24] = 0;
    } loadable @ 0x28;

    external mem {
        mementries = 8;
        memwidth = 32;
        sw = rw;
    } table @ 0x40;

    external mem {
        mementries = 4;
        memwidth = 32;
        sw = r;
    } rom @ 0x60;
};
"""


@pytest.fixture(scope="module")
def regmap(tmp_path_factory):
    path = tmp_path_factory.mktemp("rdl") / "regs_test.rdl"
    path.write_text(TEST_RDL)
    return regmap_from_node(compile_rdl([path], "regs_test"))


class BankTransport(Transport):
    """A synchronous transport over a RegisterBankModel that records every access."""

    scheme = "bank"

    def __init__(self, bank: RegisterBankModel, on_read=None):
        self.bank = bank
        self.log: list[tuple] = []
        self.on_read = on_read

    def read32(self, address):
        self.log.append(("r", address))
        data, resp = self.bank.read(address)
        if self.on_read:
            self.on_read(address)
        if resp != OKAY:
            raise BusError("read", address, RESP_NAMES[resp])
        return data

    def write32(self, address, value):
        self.log.append(("w", address, value))
        resp = self.bank.write(address, value)
        if resp != OKAY:
            raise BusError("write", address, RESP_NAMES[resp])

    @property
    def writes(self):
        return [e for e in self.log if e[0] == "w"]


class AsyncBankTransport(AsyncTransport):
    def __init__(self, bank: RegisterBankModel):
        self.sync = BankTransport(bank)

    async def read32(self, address):
        await asyncio.sleep(0)
        return self.sync.read32(address)

    async def write32(self, address, value):
        await asyncio.sleep(0)
        self.sync.write32(address, value)


@pytest.fixture
def bank(regmap):
    return RegisterBankModel(regmap)


@pytest.fixture
def t(bank):
    return BankTransport(bank)


@pytest.fixture
def regs(regmap):
    return Registers(regmap)


def addr(regmap, name):
    return regmap[name].address


# -- reads and field read-modify-write --------------------------------------------------------------------------------

def test_reset_values_read_back(regs, t, regmap):
    assert run(regs.read("ctrl"), t) == 0x5C_9_123_A5
    assert run(regs.read("ctrl.b"), t) == 0x123
    assert run(regs.read("ctrl.k"), t) == 0x9
    assert run(regs.read("status.ver"), t) == 0x42
    assert run(regs.read("wide"), t) == 0xABCDEF_123456789A
    assert run(regs.read("wide.hi"), t) == 0xABCDEF
    # write-only key reads 0, mode reads its reset, the pulse reads 0
    assert run(regs.read("keyed"), t) == 0x3 << 16


def test_field_write_preserves_other_fields(regs, t, bank, regmap):
    run(regs.write("ctrl.b", 0xFED), t)
    assert run(regs.read("ctrl.a"), t) == 0xA5
    assert run(regs.read("ctrl.b"), t) == 0xFED
    assert run(regs.read("ctrl.c"), t) == 0x5C
    assert run(regs.read("ctrl.k"), t) == 0x9
    run(regs.write("ctrl.a", 0), t)
    run(regs.write("ctrl.c", 0xFF), t)
    assert run(regs.read("ctrl"), t) == 0xFF_9_FED_00
    assert bank.value("ctrl") == 0xFF_9_FED_00


def test_field_write_is_read_then_write(regs, t, regmap):
    a = addr(regmap, "ctrl")
    run(regs.write("ctrl.b", 1), t)
    assert t.log == [("r", a), ("w", a, 0x5C_9_001_A5)]


def test_sole_writable_field_is_written_without_a_read(regs, t, regmap):
    a = addr(regmap, "sparse")
    run(regs.write("sparse.only", 0xAB), t)
    assert t.log == [("w", a, 0xAB << 4)]
    assert run(regs.read("sparse"), t) == 0xAB << 4


def test_whole_register_write(regs, t, regmap):
    run(regs.write("scratch", 0xDEAD_BEEF), t)
    assert run(regs.read("scratch"), t) == 0xDEAD_BEEF
    run(regs.write("ctrl", 0xFFFF_FFFF), t)
    # k is const: reads its reset whatever was written
    assert run(regs.read("ctrl"), t) == 0xFF_9_FFF_FF


def test_64bit_write_low_then_high(regs, t, regmap):
    a = addr(regmap, "wide")
    run(regs.write("wide", 0x1122_3344_5566_7788), t)
    assert t.log == [("w", a, 0x5566_7788), ("w", a + 4, 0x1122_3344)]
    assert run(regs.read("wide"), t) == 0x1122_3344_5566_7788
    # A field across the word boundary: RMW over both words.
    t.log.clear()
    run(regs.write("wide.lo", 0xFF_0000_0001), t)
    assert run(regs.read("wide"), t) == 0x1122_33FF_0000_0001


@pytest.mark.parametrize("name, value", [
    ("ctrl.a", 256), ("ctrl.a", -1), ("ctrl.b", 1 << 12), ("scratch", 1 << 32), ("wide", 1 << 64),
    ("wide.hi", 1 << 24), ("ctrl.a", 1.0), ("ctrl.a", "1"), ("scratch", None),
])
def test_out_of_range_raises_before_any_access(regs, t, name, value):
    with pytest.raises(ConfigError) as exc:
        run(regs.write(name, value), t)
    assert t.log == [], "an access happened before the ConfigError"
    assert exc.value.field == name and exc.value.value == value
    # the generator itself raises on its first step: no operation is ever yielded
    with pytest.raises(ConfigError):
        next(regs.write(name, value))


@pytest.mark.parametrize("name", ["status", "status.lo", "status.ver", "ctrl.k", "cnt64", "cnt64.count"])
def test_read_only_target_raises(regs, t, name):
    with pytest.raises(ConfigError, match="read-only"):
        run(regs.write(name, 0), t)
    assert t.log == []


def test_unknown_names(regs, t):
    # A ConfigError naming the name, with the closest names the map holds as the hint, before any access.
    for call, name, hint in [(regs.read, "nope", "blocks"), (regs.read, "ctrl.nope", "did you mean ctrl"),
                             (regs.read, "scratc", "did you mean scratch"), (regs.read, "ctrl.bb", "ctrl.b"),
                             (regs.read, "table", "memory"), (regs.read_mem, "ctrl", "not a memory"),
                             (regs.read_mem, "tabel", "did you mean table"), (regs.read, 7, "must be")]:
        with pytest.raises(ConfigError, match=hint) as exc:
            run(call(name), t)
        assert exc.value.field == "name" and exc.value.value == name and repr(name) in str(exc.value)
    with pytest.raises(ConfigError, match="did you mean scratch"):
        run(regs.write("scratc", 1), t)
    assert t.log == []


def test_bus_errors_propagate(regmap, t, bank):
    # A write to a register without sw-writable fields is SLVERR (the Registers layer refuses it first).
    with pytest.raises(BusError) as exc:
        t.write32(addr(regmap, "status"), 1)
    assert exc.value.resp == "SLVERR"
    with pytest.raises(BusError) as exc:
        t.read32(0x14)  # hole
    assert exc.value.resp == "DECERR"
    assert bank.write(regmap.size, 0) == DECERR
    assert bank.write(addr(regmap, "rom"), 1) == SLVERR
    assert bank.mem["rom"] == [0] * 4


# -- 64-bit reads ----------------------------------------------------------------------------------------------------

def test_64bit_read_is_low_then_high(regs, t, regmap):
    a = addr(regmap, "cnt64")
    run(regs.read("cnt64"), t)
    assert t.log == [("r", a), ("r", a + 4)]
    t.log.clear()
    run(regs.read("cnt64.count"), t)
    assert t.log == [("r", a), ("r", a + 4)]
    # a block read through the default read_block is also in address order
    assert [op for op in [next(regs.read("cnt64"))]] == [ReadBlock(a, 2)]


def test_latch_returns_high_half_from_the_low_read(regmap, bank):
    a = addr(regmap, "cnt64")
    bank.incr("cnt64.count", 0xFFFF_FFFF)
    low, _ = bank.read(a)
    bank.incr("cnt64.count")  # carries into the high word between the two reads
    high, _ = bank.read(a + 4)
    assert (high << 32 | low) == 0xFFFF_FFFF
    # a fresh low read re-latches
    low, _ = bank.read(a)
    high, _ = bank.read(a + 4)
    assert (high << 32 | low) == 1 << 32


def test_latched_read_through_registers_with_increments_between(regs, regmap, bank):
    bank.incr("cnt64.count", 0xFFFF_FFFF)
    # the counter ticks after every bus read, so it carries into the high word between the low and the high read
    t = BankTransport(bank, on_read=lambda address: bank.incr("cnt64.count"))
    a = addr(regmap, "cnt64")
    first = run(regs.read("cnt64"), t)
    assert t.log == [("r", a), ("r", a + 4)]
    assert first == 0xFFFF_FFFF  # not the torn 0x1_FFFF_FFFF
    second = run(regs.read("cnt64"), t)
    assert second == (1 << 32) + 1  # the low read of the second access sees both increments
    assert bank.value("cnt64") == (1 << 32) + 3


def test_model_latch_on_uptime_across_a_carry():
    t = ModelTransport()
    regs = Registers(t.model.regmap)
    # the low read ticks to 2**32 - 1; the high read ticks past the carry
    t.model.cycles = 2**32 - 1 - AXIL_ACCESS_CYCLES
    assert run(regs.read("id.uptime_cycles"), t) == 2**32 - 1
    assert t.model.cycles == 2**32 - 1 + AXIL_ACCESS_CYCLES
    assert run(regs.read("id.uptime_cycles"), t) == 2**32 - 1 + 2 * AXIL_ACCESS_CYCLES


# -- memories --------------------------------------------------------------------------------------------------------

def test_mem_round_trip(regs, t, regmap, bank):
    run(regs.write_mem("table", 2, [1, 2, 0xFFFF_FFFF]), t)
    assert bank.mem["table"] == [0, 0, 1, 2, 0xFFFF_FFFF, 0, 0, 0]
    assert run(regs.read_mem("table", 0, 8), t) == [0, 0, 1, 2, 0xFFFF_FFFF, 0, 0, 0]
    assert run(regs.read_mem("table", 3), t) == [2]
    assert run(regs.read_mem("table", 8, 0), t) == []
    assert next(regs.write_mem("table", 7, [5])) == WriteBlock(addr(regmap, "table") + 28, (5,))


@pytest.mark.parametrize("index, count", [(-1, 1), (8, 1), (7, 2), (0, 9), (0, -1)])
def test_read_mem_bounds(regs, t, index, count):
    with pytest.raises(ConfigError):
        run(regs.read_mem("table", index, count), t)
    assert t.log == []


@pytest.mark.parametrize("index, values", [(-1, [1]), (8, [1]), (6, [1, 2, 3]), (0, [0] * 9),
                                           (0, [1 << 32]), (0, [-1]), (0, [1, 2.0])])
def test_write_mem_bounds_and_values(regs, t, bank, index, values):
    with pytest.raises(ConfigError):
        run(regs.write_mem("table", index, values), t)
    assert t.log == []
    assert bank.mem["table"] == [0] * 8


# -- run vs arun -----------------------------------------------------------------------------------------------------

def script(regs):
    """A mix of operations; returns the list of results."""
    out = []
    out.append((yield from regs.read("ctrl")))
    yield from regs.write("ctrl.b", 0x777)
    yield from regs.write("scratch", 0x0BAD_CAFE)
    out.append((yield from regs.read("scratch")))
    yield from regs.write("wide", 0x0102_0304_0506_0708)
    out.append((yield from regs.read("wide")))
    out.append((yield from regs.read("wide.hi")))
    yield from regs.write_mem("table", 1, [9, 8, 7])
    out.append((yield from regs.read_mem("table", 0, 5)))
    yield from regs.write("loadable.tag", 0x33)
    out.append((yield from regs.read("loadable")))
    out.append((yield from regs.read("ctrl")))
    return out


def test_arun_matches_run(regmap, regs):
    sync_bank, async_bank = RegisterBankModel(regmap), RegisterBankModel(regmap)
    sync_t, async_t = BankTransport(sync_bank), AsyncBankTransport(async_bank)
    expected = run(script(regs), sync_t)
    got = asyncio.run(arun(script(regs), async_t))
    assert got == expected
    assert expected[1] == 0x0BAD_CAFE and expected[4] == [0, 9, 8, 7, 0]
    assert async_t.sync.log == sync_t.log
    assert async_bank.state == sync_bank.state and async_bank.mem == sync_bank.mem


def test_arun_propagates_config_error(regs, regmap):
    t = AsyncBankTransport(RegisterBankModel(regmap))
    with pytest.raises(ConfigError):
        asyncio.run(arun(regs.write("ctrl.a", 1 << 8), t))
    assert t.sync.log == []


def test_run_rejects_non_ops():
    def bad():
        yield "not an op"
    with pytest.raises(TypeError):
        run(bad(), None)
    with pytest.raises(TypeError):
        asyncio.run(arun(bad(), None))


# -- the core model through ModelTransport ---------------------------------------------------------------------------

def test_core_registers_over_model_transport():
    t = ModelTransport()
    rf = RegisterFile(core_regmap(), t)
    assert rf.read("id.magic") == 0x57535044
    assert rf.read("id.version.major") == core_regmap()["id.version"].field("major").reset
    rf.write("id.scratch", 0x1234_5678)
    assert rf.read("id.scratch") == 0x1234_5678
    with pytest.raises(ConfigError):
        rf.write("id.magic", 1)
    with pytest.raises(ConfigError):
        rf.write("id.scratch", 1 << 32)
    with pytest.raises(ConfigError):
        rf.write("id.bus_errors", 0)
    assert rf.read("id.bus_errors") == 0
    dump = rf.dump()
    assert dump["id.magic"] == 0x57535044 and dump["id.scratch"] == 0x1234_5678
    # Every register with a readable field (write-only ones such as limiter.clock_ctrl have nothing to show).
    assert set(dump) == {r.name for r in core_regmap().registers if any(f.sw_readable for f in r.fields)}
    assert "limiter.clock_ctrl" not in dump and "limiter.clock_now" in dump


def test_register_file_dump_skips_read_side_effects(regmap, bank):
    rf = RegisterFile(regmap, BankTransport(bank))
    dump = rf.dump()
    assert "ctrl" in dump and "wide" in dump
    assert dump["wide"] == 0xABCDEF_123456789A


# -- byte strobes: the bus model against an independent reference ---------------------------------------------------

STROBE_TARGETS = ("ctrl", "scratch", "keyed", "sparse", "wide", "loadable", "table", "status", "rom")


def lane_mask(strb: int) -> int:
    mask = 0
    for lane in range(4):
        if strb & (1 << lane):
            mask |= 0xFF << (8 * lane)
    return mask


class Reference:
    """Per-word store of the test map, written from the field list with no help from the model."""

    def __init__(self, regmap):
        self.regmap = regmap
        self.words = {}  # address -> (stored, writable_mask, readable_mask)
        self.pulses = {}
        for reg in regmap.registers:
            stored = 0
            writable = readable = 0
            for f in reg.fields:
                bits = ((1 << f.width) - 1) << f.lsb
                if f.kind in (FieldKind.STORAGE, FieldKind.COUNTER, FieldKind.CONST):
                    stored |= f.reset << f.lsb
                if f.sw_writable and f.kind is not FieldKind.PULSE:
                    writable |= bits
                if f.sw_readable:
                    readable |= bits
            for w in range(reg.words):
                self.words[reg.address + 4 * w] = [(stored >> 32 * w) & 0xFFFF_FFFF, (writable >> 32 * w) & 0xFFFF_FFFF,
                                                   (readable >> 32 * w) & 0xFFFF_FFFF, reg]
        for mem in regmap.memories:
            for i in range(mem.entries):
                self.words[mem.address + 4 * i] = [0, 0xFFFF_FFFF if mem.sw_writable else 0,
                                                   0xFFFF_FFFF if mem.sw_readable else 0, mem]

    def write(self, address, data, strb):
        entry = self.words[address]
        stored, writable, _, node = entry
        if writable == 0 and not any(f.kind is FieldKind.PULSE for f in getattr(node, "fields", ())):
            return SLVERR
        lanes = lane_mask(strb)
        entry[0] = (stored & ~(lanes & writable)) | (data & lanes & writable)
        for f in getattr(node, "fields", ()):
            if f.kind is FieldKind.PULSE:
                word_lsb = f.lsb - 32 * ((address - node.address) // 4)
                for b in range(f.width):
                    bit = word_lsb + b
                    if 0 <= bit < 32 and (data & lanes) >> bit & 1:
                        key = (f"{node.name}.{f.name}", b)
                        self.pulses[key] = self.pulses.get(key, 0) + 1
        return OKAY

    def read(self, address):
        stored, _, readable, _ = self.words[address]
        return stored & readable


def _target_words(regmap, name):
    node = regmap[name]
    n = node.words if hasattr(node, "words") else node.entries
    return [node.address + 4 * i for i in range(n)]


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_strobed_writes_match_a_reference(regmap, data):
    bank = RegisterBankModel(regmap)
    ref = Reference(regmap)
    n_ops = data.draw(st.integers(1, 40), label="n_ops")
    for _ in range(n_ops):
        target = data.draw(st.sampled_from(STROBE_TARGETS), label="target")
        words = _target_words(regmap, target)
        if data.draw(st.booleans(), label="is_write"):
            address = data.draw(st.sampled_from(words), label="address")
            value = data.draw(st.integers(0, 0xFFFF_FFFF), label="value")
            strb = data.draw(st.integers(0, 0xF), label="strb")
            assert bank.write(address, value, strb) == ref.write(address, value, strb), (target, hex(address))
        else:
            # read a whole target low word first (the 64-bit read contract)
            got = [bank.read(a) for a in words]
            assert got == [(ref.read(a), OKAY) for a in words], target
    # finally every word of every target agrees
    for target in STROBE_TARGETS:
        words = _target_words(regmap, target)
        assert [bank.read(a)[0] for a in words] == [ref.read(a) for a in words], target
    assert dict(bank.pulses) == ref.pulses
    # write-only bits are stored even though they read 0
    keyed = regmap["keyed"]
    assert bank.value("keyed") & keyed.field("key").mask == ref.words[keyed.address][0] & keyed.field("key").mask


@pytest.mark.parametrize("name", ["keyed.mode", "keyed.go"])
def test_field_write_next_to_write_only_field_is_refused(regs, t, bank, name):
    """A read-modify-write would read the write-only key as 0 and wipe it: refuse before any access."""
    run(regs.write("keyed", 0x0003_0011), t)
    t.log.clear()
    with pytest.raises(ConfigError, match="write-only"):
        run(regs.write(name, 1), t)
    assert t.log == []
    assert bank.state["keyed"] & 0xFF == 0x11


def test_write_only_field_itself_can_be_written_by_field(regs, t, bank):
    run(regs.write("keyed", 0x0003_0011), t)
    run(regs.write("keyed.key", 0x77), t)
    assert bank.state["keyed"] & 0x00FF_00FF == 0x0003_0077


def test_the_register_bank_refuses_a_64_bit_register_that_straddles_two_read_slots(tmp_path):
    from wirespeed.hdl.bus.regbank import RegisterBank
    rdl = tmp_path / "odd.rdl"
    rdl.write_text("addrmap odd { reg { field { sw = rw; hw = r; } a[31:0]; } r32 @ 0x0;\n"
                   "reg { regwidth = 64; accesswidth = 32; field { sw = rw; hw = r; } b[63:0]; } r64 @ 0x4; };\n")
    regmap = regmap_from_node(compile_rdl([rdl], "odd"))
    assert regmap.registers[1].address == 4 and regmap.registers[1].words == 2
    with pytest.raises(ValueError, match=r"r64 at 0x4 is 2 words.*aligned to 8 bytes"):
        RegisterBank(regmap, 12)
    RegisterBank(core_regmap(), 15)     # every register of the core's map is 32-bit, or 64-bit aligned
