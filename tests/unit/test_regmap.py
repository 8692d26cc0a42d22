"""RegMap from SystemRDL (wirespeed.hdl.bus.regmap): the core map's layout, address decode, and field-kind
derivation."""

import pytest

from wirespeed.hdl.bus.regmap import (BUS_WIDTH_BITS, FieldKind, Memory, RegMap, RegMapError, Register, compile_rdl,
                                      core_regmap, regmap_from_node)


@pytest.fixture(scope="module")
def core() -> RegMap:
    return core_regmap()


def spans(regmap: RegMap):
    """(start, end, node) byte ranges of every register and memory."""
    out = [(r.address, r.address + r.words * 4, r) for r in regmap.registers]
    out += [(m.address, m.address + m.size, m) for m in regmap.memories]
    return sorted(out, key=lambda s: s[0])


def compile_text(tmp_path, text: str, top: str = "top", name: str = "t.rdl") -> RegMap:
    path = tmp_path / name
    path.write_text(text)
    return regmap_from_node(compile_rdl([path], top))


# -- the core map ---------------------------------------------------------------------------------------------------

def test_core_map_compiles_and_has_registers(core):
    assert isinstance(core, RegMap)
    assert core.registers, "the core map has no registers"
    assert all(isinstance(r, Register) for r in core.registers)
    assert all(r.width in (32, 64) for r in core.registers)
    # Names are unique and every one resolves back to its node.
    names = [n.name for n in (*core.registers, *core.memories)]
    assert len(names) == len(set(names))
    for node in (*core.registers, *core.memories):
        assert core[node.name] is node
        assert node.name in core
    assert "id.no_such_register" not in core
    with pytest.raises(KeyError):
        core["id.no_such_register"]


def test_core_addresses_are_word_aligned(core):
    for reg in core.registers:
        assert reg.address % 4 == 0, reg.name
    for mem in core.memories:
        assert mem.address % 4 == 0, mem.name


def test_core_registers_do_not_overlap(core):
    ranges = spans(core)
    for (s0, e0, n0), (s1, e1, n1) in zip(ranges, ranges[1:]):
        assert e0 <= s1, f"{n0.name} [{s0:#x},{e0:#x}) overlaps {n1.name} [{s1:#x},{e1:#x})"


def test_id_block_sits_at_offset_zero(core):
    # Architectural: the driver finds the core by reading the magic at offset 0 of the window.
    assert core["id.magic"].address == 0
    assert core.decode(0)[0] is core["id.magic"]
    # And the ID block is the first thing in the map.
    assert min(s for s, _, _ in spans(core)) == 0


def test_id_magic_and_version_resets(core):
    assert core["id.magic"].field("value").reset == 0x57535044
    assert core["id.magic"].field("value").kind is FieldKind.CONST
    assert core["id.version"].field("major").reset >= 1
    assert core["id.scratch"].field("value").kind is FieldKind.STORAGE
    assert core["id.bus_errors"].width == 64
    assert core["id.bus_errors"].field("count").kind is FieldKind.COUNTER
    assert not core["id.bus_errors"].sw_writable
    assert core["id.uptime_cycles"].field("cycles").kind is FieldKind.HW_VALUE


def test_decode_every_word_of_every_register(core):
    for reg in core.registers:
        for word in range(reg.words):
            for byte in range(4):
                hit = core.decode(reg.address + 4 * word + byte)
                assert hit is not None, (reg.name, word, byte)
                node, index = hit
                assert node is reg and index == word, (reg.name, word, byte, hit)


def test_decode_holes_and_beyond_the_map_are_none(core):
    covered = set()
    for start, end, _ in spans(core):
        covered.update(range(start, end, 4))
    holes = [a for a in range(0, core.size, 4) if a not in covered]
    for a in holes:
        assert core.decode(a) is None, f"hole {a:#x} decodes to {core.decode(a)}"
    for a in (core.size, core.size + 4, core.size + 3, 2 * core.size, 0x10_0000, 0xFFFF_FFFC):
        assert core.decode(a) is None, hex(a)
    # The core's ID block has a hole between scratch and the 64-bit counters; make sure the check above ran.
    assert holes, "expected at least one hole in the core map"


def test_size_is_a_minimal_power_of_two_covering_the_map(core):
    size = core.size
    assert size >= 4 and size & (size - 1) == 0
    end = max(e for _, e, _ in spans(core))
    assert end <= size
    assert size == 4 or size // 2 < end, f"size {size:#x} is not the smallest power of two >= {end:#x}"


def test_submap_id(core):
    sub = core.submap("id")
    assert sub.registers == tuple(r for r in core.registers if r.path[0] == "id")
    assert core.submap("limiter").registers and all(r.address >= 0x1000 for r in core.submap("limiter").registers)
    assert all(r.path[0] == "id" for r in sub.registers)
    assert sub["id.magic"].address == 0
    assert sub.name.endswith(".id")
    # A prefix must match whole path components, not a string prefix.
    assert core.submap("i").registers == ()
    assert core.submap("id.magic").registers == (core["id.magic"],)


# -- field kinds from a small map ------------------------------------------------------------------------------------

KINDS_RDL = """
addrmap top {
    default regwidth = 32;
    default accesswidth = 32;

    reg {
        field { sw = r; hw = na; } k[7:0] = 0x5A;
        field { sw = rw; hw = r; } s[15:8] = 0x12;
        field { sw = w; hw = r; } wo[23:16] = 0x34;
        field { sw = r; hw = w; } live[27:24];
        field { sw = w; hw = r; singlepulse; } go[28:28] = 0;
        field { sw = rw; hw = r; singlepulse; } kick[29:29] = 0;
    } mix @ 0x0;

    reg {
        field { sw = r; hw = na; counter; } cnt[15:0] = 3;
        field { sw = r; hw = na; counter; rclr; } ev[31:16];
    } counters @ 0x4;

    reg {
        field { sw = rw; hw = na; counter; } load[31:0];
    } loadable @ 0x8;

    reg {
        regwidth = 64;
        field { sw = rw; hw = r; } lo[39:0] = 0x123456789A;
        field { sw = r; hw = w; } hi[63:40];
    } wide @ 0x10;

    reg {
        field { sw = w; hw = r; } key[31:0];
    } key @ 0x18;

    external mem {
        mementries = 16;
        memwidth = 32;
        sw = rw;
    } table @ 0x40;

    external mem {
        mementries = 4;
        memwidth = 32;
        sw = r;
    } rom @ 0x80;
};
"""


@pytest.fixture
def kinds(tmp_path) -> RegMap:
    return compile_text(tmp_path, KINDS_RDL)


def test_field_kinds(kinds):
    mix = kinds["mix"]
    k, s, wo, live, go, kick = (mix.field(n) for n in ("k", "s", "wo", "live", "go", "kick"))
    assert (k.kind, k.sw_readable, k.sw_writable, k.reset) == (FieldKind.CONST, True, False, 0x5A)
    assert (s.kind, s.sw_readable, s.sw_writable, s.reset) == (FieldKind.STORAGE, True, True, 0x12)
    assert (wo.kind, wo.sw_readable, wo.sw_writable, wo.reset) == (FieldKind.STORAGE, False, True, 0x34)
    assert (live.kind, live.sw_readable, live.sw_writable) == (FieldKind.HW_VALUE, True, False)
    assert (go.kind, go.sw_readable, go.sw_writable) == (FieldKind.PULSE, False, True)
    # sw=rw singlepulse still reads 0: not readable.
    assert (kick.kind, kick.sw_readable, kick.sw_writable) == (FieldKind.PULSE, False, True)
    assert (s.lsb, s.width, s.msb, s.mask) == (8, 8, 15, 0xFF00)
    assert (live.lsb, live.width, live.mask) == (24, 4, 0x0F00_0000)
    assert mix.sw_writable and not mix.read_side_effects
    # reset: const, storage (including write-only) and counters; not hw values or pulses.
    assert mix.reset == 0x5A | 0x12 << 8 | 0x34 << 16

    cnt, ev = kinds["counters"].field("cnt"), kinds["counters"].field("ev")
    assert (cnt.kind, cnt.rclr, cnt.sw_writable, cnt.reset) == (FieldKind.COUNTER, False, False, 3)
    assert (ev.kind, ev.rclr, ev.sw_readable) == (FieldKind.COUNTER, True, True)
    assert kinds["counters"].read_side_effects
    assert not kinds["counters"].sw_writable
    assert kinds["counters"].reset == 3

    load = kinds["loadable"].field("load")
    assert (load.kind, load.sw_writable, load.sw_readable) == (FieldKind.COUNTER, True, True)

    wide = kinds["wide"]
    assert (wide.width, wide.words, wide.address) == (64, 2, 0x10)
    assert wide.field("lo").mask == (1 << 40) - 1
    assert wide.field("hi").kind is FieldKind.HW_VALUE and wide.field("hi").lsb == 40
    assert wide.reset == 0x123456789A

    key = kinds["key"].field("key")
    assert (key.kind, key.sw_readable, key.sw_writable) == (FieldKind.STORAGE, False, True)


def test_memories(kinds):
    table, rom = kinds["table"], kinds["rom"]
    assert isinstance(table, Memory) and isinstance(rom, Memory)
    assert (table.address, table.entries, table.width, table.size) == (0x40, 16, BUS_WIDTH_BITS, 64)
    assert (table.sw_readable, table.sw_writable) == (True, True)
    assert (rom.sw_readable, rom.sw_writable, rom.size) == (True, False, 16)
    assert kinds.decode(0x40) == (table, 0)
    assert kinds.decode(0x40 + 4 * 15 + 3) == (table, 15)
    assert kinds.decode(0x80) == (rom, 0) and kinds.decode(0x8C) == (rom, 3)
    assert kinds.decode(0x7C) == (table, 15)
    assert kinds.decode(0x90) is None
    assert kinds.decode(0x1C) is None  # between key and the table
    assert kinds.decode(0x14) == (kinds["wide"], 1)
    assert kinds.size == 0x100  # end 0x90 rounds up to 0x100
    assert [r.name for r in kinds.registers] == ["mix", "counters", "loadable", "wide", "key"]


def test_nested_paths(tmp_path):
    m = compile_text(tmp_path, """
        addrmap inner { reg { field { sw = rw; hw = r; } v[31:0]; } a @ 0x0; };
        addrmap top {
            inner blk @ 0x100;
            regfile { reg { field { sw = r; hw = w; } v[31:0]; } b @ 0x4; } rf @ 0x200;
        };""")
    assert m["blk.a"].address == 0x100
    assert m["blk.a"].path == ("blk", "a")
    assert m["rf.b"].address == 0x204
    assert m.submap("blk").registers == (m["blk.a"],)
    assert m.size == 0x400


# -- what the register bank does not implement ----------------------------------------------------------------------

def _one_field(body: str) -> str:
    return ("addrmap top { default regwidth = 32; default accesswidth = 32; "
            f"reg {{ {body} }} rg @ 0x0; }};")


@pytest.mark.parametrize("text, match", [
    (_one_field("field { sw = rw; hw = r; hwclr; } f[7:0];"), "hwclr"),
    (_one_field("field { sw = r; hw = w; hwclr; } f[7:0];"), "hwclr"),
    (_one_field("field { sw = rw; hw = w; } f[7:0];"), "we"),
    (_one_field("field { sw = rw; hw = rw; } f[7:0];"), "we"),
    (_one_field("field { sw = r; hw = w; rclr; } f[7:0];"), "rclr"),
    (_one_field("field { sw = rw; hw = r; rclr; } f[7:0];"), "rclr"),
    ("addrmap top { external mem { mementries = 4; memwidth = 16; sw = rw; } m @ 0x0; };", "memwidth"),
    ("addrmap top { reg { regwidth = 16; field { sw = rw; hw = r; } f[15:0]; } rg @ 0x0; };", "32 or 64"),
], ids=["hwclr-storage", "hwclr-hwvalue", "hw-w-no-we", "hw-rw-no-we", "rclr-hwvalue", "rclr-storage",
        "memwidth16", "regwidth16"])
def test_unsupported_is_a_regmap_error(tmp_path, text, match):
    with pytest.raises(RegMapError, match=match) as exc:
        compile_text(tmp_path, text)
    # The message names the node.
    assert "top." in str(exc.value)


def test_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken_block.rdl"
    path.write_text("addrmap top { reg { field { sw = rw hw = r; } f[3:0]; } rg @ 0x0; };")
    with pytest.raises(RegMapError) as exc:
        compile_rdl([path], "top")
    assert str(path) in str(exc.value)
    # Not a raw compiler exception leaking through.
    assert type(exc.value) is RegMapError


def test_unknown_top_is_a_regmap_error(tmp_path):
    path = tmp_path / "ok.rdl"
    path.write_text(_one_field("field { sw = rw; hw = r; } f[7:0];"))
    with pytest.raises(RegMapError):
        compile_rdl([path], "not_top")
