"""The parser's name matcher (hdl/parser/names.py) against its reference and the model.

- the byte codes tell every tchar apart, case-folded, and the table's lookups, ANDed, are name equality;
- the reference (``reference_matches``) against the bit-exact parser model: committed lines, Host, Content-Length,
  Transfer-Encoding, the API-key headers and the extra slots;
- the RTL against the reference in Amaranth's simulator, W = 4/8/16, fed the reference step's token beats (random
  states in lanes past ``n_valid``): at full rate with the exact latency, and under random valid/ready backpressure
  with ``x_update`` between packets changing the extra names; after the last refresh the table must be exactly
  ``name_table`` of the last names (and slots with a length outside 1..32 stay empty). Traffic: ``traffic.mix``,
  ``traffic.worst_case`` and packets built to stress it;
- one short run behind the real ``Tokenizer``.
"""

import random

import pytest
from amaranth.sim import Simulator

from support.pysim import Chain
from support.streams import random_pauses
from wirespeed.hdl.bus.packet import pack_beats
from wirespeed.hdl.parser.classify import TCHARS, ByteClass, LaneFeatures, class_of
from wirespeed.hdl.parser.layouts import BUILTIN_NAMES, EXTRA_NAMES_RESET, EXTRA_SLOTS, KeySource
from wirespeed.hdl.parser.names import (COLON_CODE, FILL_CYCLES, N_BUILTIN, N_NAMES, NAME_LATENCY, NONE_CODE,
                                        NameBeat, NameMatcher, name_code, name_table, reference_matches)
from wirespeed.hdl.parser.tokenizer import Tok, TokenBeat, Tokenizer, next_state
from wirespeed.host.models.parser import ParserConfig, parse
from wirespeed.host.tools import traffic

SEED = 20261207

N32 = b"x-abcdefghijklmnopqrstuvwxyz0123"          # 32 bytes, the longest name a slot holds
N31 = b"x-tenant-quota-remaining-tokens"            # 31 bytes
SYMBOLS = b"!#$%&'*+-.^_`|~09"
#: Names that appear in ``traffic.realistic``.
EXTRAS_TRAFFIC = (b"user-agent", b"x-request-id", b"openai-organization", b"anthropic-version")
#: Short names (two can end in one beat), the longest ones, a prefix and an extension of built-ins.
EXTRAS_EDGE = (b"a", N32, N31, b"hosts")
#: An empty slot, a built-in name again, a prefix of one, and every tchar symbol.
EXTRAS_ODD = (None, b"host", b"content-lengt", SYMBOLS)
assert len(N32) == 32 and len(N31) == 31


# -- the codes and the table ------------------------------------------------------------------------------------------

def test_name_code_tells_tchars_apart():
    lower = sorted({bytes([c]).lower()[0] for c in TCHARS} | {ord(":")})
    codes = [name_code(c) for c in lower]
    assert len(set(codes)) == len(codes)
    assert all(name_code(c) == name_code(bytes([c]).lower()[0]) for c in TCHARS)
    assert NONE_CODE not in codes and COLON_CODE == name_code(ord(":")) and max(codes) < 64


def _table_match(name: bytes, table) -> int:
    """What the hardware computes for one name: the AND of its bytes' lookups and its colon's."""
    vec = (1 << N_NAMES) - 1
    for pos, byte in enumerate(name):
        vec &= table[name_code(byte) | pos << 6] if pos < 32 else 0
    return vec & table[COLON_CODE | (len(name) % 32) << 6]


def test_table_lookups_are_name_equality():
    rng = random.Random(SEED)
    tchars = bytes(sorted(TCHARS))
    for extras in (EXTRAS_TRAFFIC, EXTRAS_EDGE, EXTRAS_ODD, ()):
        table = name_table(extras)
        names = list(BUILTIN_NAMES) + [n for n in extras if n] + [N32, N32 + b"z", N32[:-1] + b"Z", N31 + b"s",
                                                                  N32 * 2, N32 * 2 + b"host", b"x" * 64 + b"host"]
        names += [n[:cut] for n in list(names) for cut in (1, len(n) - 1) if cut] + [n + b"-" for n in names]
        names += [bytes(rng.choice(tchars) for _ in range(rng.randrange(1, 70))) for _ in range(300)]
        for name in names:
            for variant in (name, name.upper(), bytes(c ^ 0x20 if rng.random() < 0.5 and chr(c).isalpha() else c
                                                      for c in name)):
                want = reference_matches(b"GET / HTTP/1.1\r\n" + variant + b":v\r\n", extras)
                assert _table_match(variant, table) == list(want.values())[0], (extras, variant)


# -- the reference against the model ----------------------------------------------------------------------------------

def _stress_packet(rng: random.Random, extras) -> bytes:
    """Many short lines whose names are the extra names, built-in names and their near misses, in mixed case."""
    known = [n for n in extras if n] + list(BUILTIN_NAMES)
    near = ([n[:-1] for n in known if len(n) > 1] + [n + b"s" for n in known] + [b"y" + n[1:] for n in known]
            + [b"hos", b"hosts", N32, N32 + b"z", N31, N32 * 2, N32 * 3, N32 * 2 + b"a", b"x" * 64 + b"host"])
    lines, used = [], set()
    for _ in range(rng.randrange(4, 40)):
        name = rng.choice(known if rng.random() < 0.6 else near)
        key = name.lower()
        if key in (b"host", b"transfer-encoding"):
            if key in used:                       # a second one is an error: keep the rest of the packet checked
                continue
            used.add(key)
        value = {b"host": b" h", b"content-length": b" 0", b"transfer-encoding": b" chunked"}.get(
            key, rng.choice([b"", b"1", b" v", b"\tab c", b":" * rng.randrange(3)]))
        name = bytes(c ^ 0x20 if chr(c).isalpha() and rng.random() < 0.4 else c for c in name)
        lines.append(name + b":" + value)
    packet = b"GET /s HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    if rng.random() < 0.15:                       # a packet cut mid-line: the next must start cleanly
        packet = packet[:rng.randrange(16, len(packet))]
    return packet


def test_reference_agrees_with_model():
    rng = random.Random(SEED + 1)
    checked = 0
    for extras in (EXTRAS_TRAFFIC, EXTRAS_EDGE, EXTRAS_ODD):
        cfg = ParserConfig(extras=extras)
        packets = list(traffic.mix(rng, 150)) + [_stress_packet(rng, extras) for _ in range(60)]
        for packet in packets:
            desc = parse(packet, cfg)
            if not desc.complete:
                continue
            checked += 1
            vecs = list(reference_matches(packet, extras, desc.header_len).values())
            seen = [any(v >> i & 1 for v in vecs) for i in range(N_NAMES)]
            assert len(vecs) == desc.header_lines
            assert seen[0] == desc.host_present
            assert seen[1] == desc.cl_present
            assert seen[2] == desc.chunked                 # complete: a TE line was a valid "chunked"
            if desc.key_source == KeySource.AUTHORIZATION:
                assert seen[3]
            assert (desc.key_source != KeySource.NONE) >= seen[4]
            assert seen[5] == desc.upgrade
            assert [seen[N_BUILTIN + i] for i in range(EXTRA_SLOTS)] == [bool(desc.extra_present >> i & 1)
                                                                for i in range(EXTRA_SLOTS)]
    assert checked > 400


# -- the RTL ----------------------------------------------------------------------------------------------------------

def _token_beats(packet: bytes, width: int, rng: random.Random) -> list[int]:
    """The packet as TokenBeat values: the reference step's states and the bytes' classes (``class_of``); random
    states and classes in lanes past ``n_valid``, random other lane features (the unit only passes them on)."""
    layout = TokenBeat(width)
    first_at, state_at, feat_at = layout["first"].offset, layout["state"].offset, layout["feat"].offset
    cls_bits = ByteClass.size
    feat_rest = LaneFeatures(width).size - cls_bits * width
    states, s = [], Tok.METHOD
    for b in packet:
        states.append(s)
        s = next_state(s, b)
    beats = []
    for n, beat in enumerate(pack_beats(packet, width)):
        chunk = packet[n * width:(n + 1) * width]
        lanes = [(st, _class_bits(b)) for st, b in zip(states[n * width:(n + 1) * width], chunk)]
        lanes += [(rng.randrange(len(Tok)), rng.getrandbits(cls_bits)) for _ in range(width - len(lanes))]
        feat = sum(c << (cls_bits * k) for k, (_, c) in enumerate(lanes)) | rng.getrandbits(feat_rest) << (
            cls_bits * width)
        beats.append(beat | (n == 0) << first_at | sum(st << (state_at + 3 * k) for k, (st, _) in enumerate(lanes))
                     | feat << feat_at)
    return beats


def _class_bits(byte: int) -> int:
    classes = class_of(byte)
    return sum(classes[name] << ByteClass[name].offset for name in ByteClass.members)


def _name_ports(extras) -> tuple[int, list[int]]:
    """``x_name`` and ``x_len`` for up to 4 slots, each None, a name, or ``(name, x_len)`` to force the length."""
    slots = [n if isinstance(n, tuple) else (n or b"", len(n or b"")) for n in extras]
    slots += [(b"", 0)] * (EXTRA_SLOTS - len(slots))
    return sum(int.from_bytes(n, "little") << (256 * i) for i, (n, _) in enumerate(slots)), [ln for _, ln in slots]


def _simulate(dut, feed, schedule, in_p, out_p, rng):
    """Run ``schedule`` through ``dut``: packets (``feed`` turns one into payloads), ``("extras", names)`` (set the
    name ports and pulse ``x_update``, with ``valid`` low) and ``("idle", cycles)`` (offer nothing).

    Returns the accept cycle of each beat, ``(cycle, payload)`` of each output beat, how many cycles ``ready`` stayed
    low after each pulse (a pulse cut short by the next one counts with it), and the table at the end.
    """
    events = []
    for item in schedule:
        events += [item] if isinstance(item, tuple) else [("beat", b) for b in feed(item)]
    n_beats = sum(1 for kind, _ in events if kind == "beat")
    in_pause, out_pause = random_pauses(rng, in_p), random_pauses(rng, out_p)
    accepted, outputs, holds, table = [], [], [], []
    matcher = dut.parts[-1] if isinstance(dut, Chain) else dut

    async def bench(ctx):
        i, cycle, drain, held, wait = 0, 0, 0, None, 0
        while drain < 32:
            kind, value = events[i] if i < len(events) else (None, None)
            update = kind == "extras" and not wait
            if update:
                names, lens = _name_ports(value)
                ctx.set(matcher.x_name.as_value(), names)
                ctx.set(matcher.x_len.as_value(), sum(n << (6 * slot) for slot, n in enumerate(lens)))
                ctx.set(matcher.x_update, 1)
                i += 1
            elif kind == "idle":
                wait, i = value, i + 1
            offer = kind == "beat" and not wait and not next(in_pause)
            ctx.set(dut.i_stream.valid, offer)
            if offer:
                ctx.set(dut.i_stream.payload.as_value(), value)
            take = not next(out_pause)
            ctx.set(dut.o_stream.ready, take)
            _, _, in_ready, out_valid, out_payload = await ctx.tick().sample(
                dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload.as_value())
            ctx.set(matcher.x_update, 0)
            wait = max(wait - 1, 0)
            if held is not None and not update:  # from the cycle after the pulse: how long ready stays low
                if in_ready:
                    holds.append(held)
                    held = None
                else:
                    held += 1
            if update:
                held = held or 0
            if offer and in_ready:
                accepted.append(cycle)
                i += 1
            if take and out_valid:
                outputs.append((cycle, int(out_payload)))
            cycle += 1
            drain = drain + 1 if i == len(events) else 0
        table.extend(ctx.get(matcher.table[a]) for a in range(matcher.table.depth))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(accepted) == len(outputs) == n_beats
    return accepted, outputs, holds, table


def _check(width, schedule, outputs, token_beats=None, seed=None):
    """Every output beat: the token beat unchanged (if ``token_beats`` gives them), and the reference's matches
    before the packet's stop.

    Returns the most colons (names ending) seen in one beat."""
    tok_bits = NameBeat(width)["match"].offset
    n, extras, densest = 0, EXTRA_NAMES_RESET, 0              # the names at reset, until a schedule sets others
    for item in schedule:
        if isinstance(item, tuple):
            extras = item[1] if item[0] == "extras" else extras
            continue
        stop = min(parse(item, ParserConfig(extras=extras)).header_len, len(item))
        want = reference_matches(item, extras, stop)
        for index in range(len(pack_beats(item, width))):
            value = outputs[n][1]
            if token_beats is not None:
                assert value & ((1 << tok_bits) - 1) == token_beats(item)[index], (seed, n, "token beat changed")
            for k in range(width):
                at = index * width + k
                if at < stop:
                    got = value >> (tok_bits + N_NAMES * k) & ((1 << N_NAMES) - 1)
                    assert got == want.get(at, 0), (seed, extras, item[max(0, at - 40):at + 1], at, bin(got))
            densest = max(densest, sum(1 for k in range(width) if index * width + k in want))
            n += 1
    return densest


def _cut_at_colon(rng, width, extras) -> bytes:
    """A packet that ends at the colon of an extra name, in lane 0 of its last beat: the last beat's lookups count
    (later beats of a packet are usually its body, whose matches are don't-care)."""
    head = b"GET / HTTP/1.1\r\n" + rng.choice([n for n in extras if n]) + b":1\r\n"
    name = rng.choice([n for n in extras if n])
    fill = (1 - len(head) - len(b"p:\r\n:") - len(name)) % width
    return head + b"p:" + b"v" * fill + b"\r\n" + name + b":"


def _schedule(rng, width, extras_list, n_mix, n_stress):
    """Packets under each set of extra names in turn, an update before each set; before an update, a packet whose
    last beat matters."""
    schedule, previous = [], None
    for extras in extras_list:
        if previous is not None:
            schedule.append(_cut_at_colon(rng, width, previous))
        schedule.append(("extras", extras))
        previous = extras
        packets = list(traffic.mix(rng, n_mix)) + [_stress_packet(rng, extras) for _ in range(n_stress)]
        rng.shuffle(packets)
        schedule += packets
    return schedule


def _dense_packet(extras) -> bytes:
    """Four-byte lines ``n:\r\n`` aligned to 16 bytes, with a one-byte extra name: a name ends in every fourth lane."""
    short = next(n for n in extras if n and len(n) == 1)
    names = [short, b"b", short.upper(), short] * 20
    return b"GET / HTTP/1.1\r\n" + b"".join(n + b":\r\n" for n in names) + b"\r\n"


def _run(width, schedule, in_p, out_p, seed):
    """The schedule through a NameMatcher fed the reference's token beats; checks every beat (see ``_check``)."""
    rng, feed_rng, cache = random.Random(seed), random.Random(seed + 1), {}

    def token_beats(packet):
        if packet not in cache:
            cache[packet] = _token_beats(packet, width, feed_rng)
        return cache[packet]

    accepted, outputs, holds, table = _simulate(NameMatcher(width), token_beats, schedule, in_p, out_p, rng)
    densest = _check(width, schedule, outputs, token_beats, seed)
    return accepted, outputs, holds, table, densest


@pytest.mark.parametrize("width", [4, 8, 16])
def test_names_full_rate_and_latency(width):
    rng = random.Random(SEED + width)
    schedule = _schedule(rng, width, [EXTRAS_EDGE], 12, 24)
    schedule += [_dense_packet(EXTRAS_EDGE), traffic.worst_case(rng, width, 256)]
    accepted, outputs, holds, _, densest = _run(width, schedule, 0.0, 0.0, SEED)
    assert len(holds) == 1 and holds[0] <= FILL_CYCLES + NAME_LATENCY[width]
    start = accepted[0]
    assert accepted == list(range(start, start + len(accepted)))       # one beat per cycle, whatever the content
    assert [c for c, _ in outputs] == [a + NAME_LATENCY[width] for a in accepted]
    assert densest >= width // 4                                        # W/4 names ended in one beat


@pytest.mark.parametrize("width", [4, 8, 16])
def test_names_under_backpressure_and_updates(width):
    rng = random.Random(SEED * 3 + width)
    # A first refresh cut short by a second pulse, then three sets of names with packets under each.
    schedule = [("extras", EXTRAS_ODD), ("idle", 300)]
    schedule += _schedule(rng, width, [EXTRAS_TRAFFIC, EXTRAS_EDGE, EXTRAS_ODD], 5, 8)
    schedule.insert(len(schedule) // 2, traffic.worst_case(rng, width, 128))
    _, _, holds, table, _ = _run(width, schedule, 0.3, 0.4, SEED + 2)
    assert len(holds) == 3 and holds[0] > 300
    assert table == name_table(EXTRAS_ODD)


def test_refresh_disables_slots_with_bad_lengths():
    schedule = [("extras", ((N32, 33), (b"host", 63), (b"a", 0), N32)), b"GET / HTTP/1.1\r\nhost:\r\n\r\n"]
    _, _, holds, table = _simulate(NameMatcher(4), lambda p: _token_beats(p, 4, random.Random(0)), schedule,
                                   0.0, 0.0, random.Random(SEED))
    assert len(holds) == 1 and table == name_table((None, None, None, N32))


def test_names_after_tokenizer():
    width = 8
    rng = random.Random(SEED + 5)
    schedule = _schedule(rng, width, [EXTRAS_TRAFFIC], 4, 4)
    _, outputs, holds, _ = _simulate(Chain(Tokenizer(width), NameMatcher(width)), lambda p: pack_beats(p, width),
                                     schedule, 0.2, 0.2, rng)
    assert len(holds) == 1
    _check(width, schedule, outputs, seed=SEED + 5)


def test_reset_names_match_before_any_update():
    """At reset the table holds EXTRA_NAMES_RESET (slot 0: x-token-estimate, the limiter's reset cost source), and
    the name ports hold the same names, so the first refresh rewrites nothing that was matched."""
    from wirespeed.hdl.parser.parser_core import ParserCore
    matcher = NameMatcher(4)
    assert list(matcher.table.init) == name_table(EXTRA_NAMES_RESET)
    core = ParserCore(4)
    names, lens = _name_ports(EXTRA_NAMES_RESET)
    assert core.x_name.as_value().init == names and core.x_len.as_value().init == sum(
        n << (6 * slot) for slot, n in enumerate(lens))
    packet = b"POST / HTTP/1.1\r\nHost: a\r\nX-Token-Estimate: 7\r\n\r\n"
    _, outputs, _, _ = _simulate(matcher, lambda p: _token_beats(p, 4, random.Random(0)), [packet], 0.0, 0.0,
                                 random.Random(SEED))
    _check(4, [packet], outputs)
    assert reference_matches(packet, EXTRA_NAMES_RESET)[packet.index(b"X-Token-Estimate:") + 16] == 1 << len(
        BUILTIN_NAMES)
