"""The parser's path capture and route-prefix matcher (hdl/parser/routes.py) against the bit-exact model.

Behind the real ``Tokenizer`` and ``Events``, W = 4/8/16, in Amaranth's simulator: the prefix table is programmed
through the unit's ports (a ``pfx_commit`` pulse per entry, waiting for ``busy`` to fall), then packets flow; on
every packet's stop beat ``path_len``, ``route_match`` and ``route_class`` must be the model's
(``wirespeed.host.models.parser.parse`` with the same table and default class), and every beat must pass unchanged.
At full rate the latency is exact; under random valid/ready backpressure the table is re-programmed between two
streams and the second stream sees the new table. After programming, the lane tables must be ``mask_table``'s.

The table has entries that are prefixes of each other and of most ``traffic.mix`` paths (``/v1/``,
``/v1/models`` ...), equal-length ties (identical, and different), an invalid entry that would match everything,
prefixes of 32 bytes (one given a length above 32), a prefix holding '?', and later an empty prefix. Corner packets:
paths of 0, 1, 31, 32, 33 bytes starting in every lane, '?' right after the SP, errors, the limit and truncation
inside the target, no target at all, and long paths. Packets are cut a few beats after their stop (the body does not
matter here) to keep the simulation short.
"""

import random

import pytest
from amaranth.sim import Simulator

from support.pysim import Chain
from support.streams import random_pauses
from wirespeed.hdl.bus.packet import pack_beats
from wirespeed.hdl.parser.events import EVENTS_LATENCY, EventBeat, Events
from wirespeed.hdl.parser.layouts import PREFIX_BYTES, PREFIX_ENTRIES
from wirespeed.hdl.parser.routes import ROUTE_FILL_CYCLES, ROUTE_LATENCY, RouteBeat, RouteMatcher, mask_table
from wirespeed.hdl.parser.tokenizer import TOKENIZER_LATENCY, Tokenizer
from wirespeed.host.models.parser import ParserConfig, parse
from wirespeed.host.tools import traffic

SEED = 20261208

P31 = b"/a" + b"b" * 29
P32 = P31 + b"b"
P32C = P31 + b"c"
#: (index, bytes, pfx_len, class, valid): committed in this order.
TABLE_A = [
    (0, b"/v1/", 4, 1, 1),                      # a prefix of nearly every traffic path
    (1, b"/v1/chat/completions", 20, 2, 1),
    (2, b"/v1/models", 10, 3, 1),
    (3, b"/v1/models/", 11, 4, 1),              # "/v1/models/gpt-4o"; longer than entry 2
    (5, b"/v1/mo", 6, 6, 1),
    (9, b"/v1/mo", 6, 10, 1),                   # a tie with entry 5: the lower index wins
    (7, b"/v1/me", 6, 7, 1),                    # the same length, other bytes
    (8, b"/", 1, 9, 0),                         # invalid: would match every path
    (10, P32, 32, 12, 1),
    (12, P32C + b"\xff" * 8, 40, 13, 1),        # a length above 32 counts as 32; bytes past it are ignored
    (11, b"/q?", 3, 5, 1),                      # a path never holds '?'
    (13, b"/", 1, 14, 1),
    (14, b"/\x00", 2, 15, 1),                   # a byte no path holds
    (4, b"/v1/e", 5, 8, 1),
]
DEFAULT_A = 11
#: Re-programmed between two streams: an empty prefix (matches even a packet with no target), entry 1 dropped,
#: entry 13 with a new class, entry 5 longer.
TABLE_B = [
    (15, b"", 0, 6, 1),
    (1, b"/v1/chat/completions", 20, 2, 0),
    (13, b"/", 1, 0, 1),
    (5, b"/v1/mod", 7, 3, 1),
]
DEFAULT_B = 4


def _config(table, default_class, limit):
    """The model's configuration for the committed entries (as the register model builds it)."""
    prefixes = [None] * PREFIX_ENTRIES
    for index, prefix, length, cls, valid in table:
        prefixes[index] = (prefix[:min(length, PREFIX_BYTES)], cls) if valid else None
    return ParserConfig(max_header_bytes=limit, default_class=default_class, prefixes=tuple(prefixes))


def _corner_packets(width, limit):
    paths = [b"", b"/", P31, P32, P32 + b"b", P32C, P32C + b"d", P31[:-1], b"/v1/mo", b"/v1/models",
             b"/v1/models/", b"/v1/me", b"/q", b"/q?", b"/v1/e?x", b"/" + b"p" * 70]
    packets = []
    # Every start lane: methods of 1..W+1 bytes, each with the next path.
    for n in range(1, width + 2):
        path = paths[n % len(paths)]
        packets.append(b"M" * n + b" " + path + b"?q=1 HTTP/1.1\r\nhost: x\r\n\r\nbody")
        packets.append(b"GET " + paths[(n + 5) % len(paths)] + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    packets += [
        b"GET ?a=b HTTP/1.1\r\nhost: x\r\n\r\n",            # '?' right after the SP: an empty path
        b"GET ? HTTP/1.1\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",                           # an empty target (an error at its first byte)
        b"GET /v1/mo\x01dels HTTP/1.1\r\n\r\n",             # errors inside the target
        b"GET /v1/models\r\nhost: x\r\n\r\n",
        b"GET /v1/me\x7f HTTP/1.1\r\n\r\n",
        b"GET /v1/models?a?b HTTP/1.1\r\n\r\n",
        b"GET /v1/mod", b"GET /v1/models?li", b"GET ", b"GET", b"", b"G", b"GET " + P32,   # truncated
        b" / HTTP/1.1\r\n\r\n",                             # no target at all
        b"get\x00 /v1/models HTTP/1.1\r\n\r\n",
        b"GET /" + b"p" * (limit + 10),                     # the limit inside the target
        b"POST /v1/chat/completions" + b"x" * (limit - 20) + b" HTTP/1.1\r\n\r\n",
    ]
    return packets


def _cut(packet, config, width, rng):
    """The packet up to a few beats after its stop: what follows cannot change the path fields."""
    desc = parse(packet, config)
    return packet[:desc.header_len + rng.randrange(3 * width)]


def _stream(rng, width, limit, config, n_mix):
    packets = [_cut(p, config, width, rng) for p in traffic.mix(rng, n_mix)]
    packets += _corner_packets(width, limit)
    rng.shuffle(packets)
    return packets


def _commits(table):
    return [("commit", entry) for entry in table]


def _simulate(width, schedule, limit, rng):
    """Run ``schedule`` through Tokenizer, Events and RouteMatcher: packets, ``("commit", entry)``, ``("default",
    class)``, ``("wait",)`` (until ``busy`` falls), ``("idle", cycles)`` (offer nothing) and ``("pauses", in_p,
    out_p)`` (random valid/ready pauses from here on; none before the first). A commit waits for ``busy`` to fall
    and is pulsed with ``valid`` low; the beats after it are offered at once (the unit holds ``ready`` low).

    Returns the accept cycle of each beat, ``(cycle, payload)`` of each output beat, the cycles ``busy`` stayed high
    after each commit, and the lane tables at the end.
    """
    events = []
    for item in schedule:
        events += [item] if isinstance(item, tuple) else [("beat", b) for b in pack_beats(item, width)]
    n_beats = sum(1 for kind, *_ in events if kind == "beat")
    ev_unit, routes = Events(width), RouteMatcher(width)
    dut = Chain(Tokenizer(width), ev_unit, routes, sets=[(ev_unit.max_header_bytes, limit)])
    accepted, outputs, holds, tables = [], [], [], []

    async def bench(ctx):
        in_pause = out_pause = random_pauses(rng, 0.0)
        i, cycle, drain, held, idle = 0, 0, 0, None, 0
        while drain < 32 or (len(outputs) < n_beats and drain < 1000):
            busy = ctx.get(routes.busy)
            if i < len(events) and events[i][0] == "idle" and not idle:
                idle, i = events[i][1], i + 1
            while i < len(events) and events[i][0] in ("default", "pauses") and not idle:
                if events[i][0] == "default":
                    ctx.set(routes.default_class, events[i][1])
                else:
                    in_pause, out_pause = random_pauses(rng, events[i][1]), random_pauses(rng, events[i][2])
                i += 1
            if i < len(events) and events[i][0] == "wait" and not busy and not idle:
                i += 1
            kind, value = (events[i] + (None,))[:2] if i < len(events) else (None, None)
            pulse = kind == "commit" and not busy and not idle
            if pulse:
                index, prefix, length, cls, valid = value
                ctx.set(routes.pfx_data, int.from_bytes(prefix[:PREFIX_BYTES], "little"))
                ctx.set(routes.pfx_len, length)
                ctx.set(routes.pfx_class, cls)
                ctx.set(routes.pfx_valid, valid)
                ctx.set(routes.pfx_index, index)
                ctx.set(routes.pfx_commit, 1)
                i += 1
            offer = kind == "beat" and not idle and not next(in_pause)
            idle = max(idle - 1, 0)
            ctx.set(dut.i_stream.valid, offer)
            if offer:
                ctx.set(dut.i_stream.payload.as_value(), value)
            take = not next(out_pause)
            ctx.set(dut.o_stream.ready, take)
            _, _, in_ready, out_valid, out_payload = await ctx.tick().sample(
                dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload.as_value())
            if pulse:
                ctx.set(routes.pfx_commit, 0)
                # Scribble on the staging ports: the entry was latched at the pulse.
                ctx.set(routes.pfx_data, rng.getrandbits(8 * PREFIX_BYTES))
                ctx.set(routes.pfx_len, rng.randrange(64))
                assert ctx.get(routes.busy)
                held = 1
            elif held is not None:
                if ctx.get(routes.busy):
                    held += 1
                else:
                    holds.append(held)
                    held = None
            if offer and in_ready:
                accepted.append(cycle)
                i += 1
            if take and out_valid:
                outputs.append((cycle, int(out_payload)))
            cycle += 1
            drain = drain + 1 if i == len(events) and not busy else 0
        for mem in routes.tables:
            tables.append([ctx.get(mem[a]) for a in range(mem.depth)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(accepted) == len(outputs) == n_beats
    return accepted, outputs, holds, tables


def _check(width, schedule, limit, outputs, seed):
    """Every packet's beats come out unchanged; its stop beat carries the model's path fields. Returns how many
    packets matched a route."""
    layout, ev = RouteBeat(width), EventBeat(width)
    ev_at = layout["ev"].offset
    stop_at = ev_at + ev["stop"].offset
    beat_at, beat_bits = ev_at + ev["tok"].offset, 8 * width + width.bit_length() + 1
    len_at, match_at, class_at = (layout[n].offset for n in ("path_len", "route_match", "route_class"))
    table, default, n, matched = [], 0, 0, 0
    for item in schedule:
        if isinstance(item, tuple):
            if item[0] == "commit":
                table = [e for e in table if e[0] != item[1][0]] + [item[1]]
            elif item[0] == "default":
                default = item[1]
            continue
        config = _config(table, default, limit)
        want = parse(item, config)
        stops = []
        for beat in pack_beats(item, width):
            value = outputs[n][1]
            n += 1
            assert value >> beat_at & ((1 << beat_bits) - 1) == beat, (seed, item[:60], "beat changed")
            if value >> stop_at & 1:
                stops.append((value >> len_at & 0xFFFF, bool(value >> match_at & 1), value >> class_at & 0xF))
        assert stops == [(want.path_len, want.route_match, want.route_class)], (seed, item[:80], stops, want)
        matched += want.route_match
    assert n == len(outputs)
    return matched


def _reference_tables(width, table):
    prefixes = [None] * PREFIX_ENTRIES
    for index, prefix, length, cls, valid in table:
        prefixes[index] = prefix[:min(length, PREFIX_BYTES)] if valid else None
    return mask_table(width, prefixes)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_routes(width):
    """Table A programmed; a stream at full rate (exact latency, one beat per cycle); a stream under random
    backpressure; table B committed right behind it (its last beats, in the unit, see table A); a stream on table B
    under backpressure."""
    seed = SEED + width
    rng = random.Random(seed)
    limit = 64                                  # inside the longest corner targets, beyond the traffic's paths
    table_b = TABLE_A + TABLE_B
    config_a, config_b = _config(TABLE_A, DEFAULT_A, limit), _config(table_b, DEFAULT_B, limit)
    full_rate = _stream(rng, width, limit, config_a, 30)
    schedule = [("default", DEFAULT_A)] + _commits(TABLE_A) + [("wait",)] + full_rate
    latency = TOKENIZER_LATENCY[width] + EVENTS_LATENCY + ROUTE_LATENCY[width]
    schedule += [("idle", latency), ("pauses", 0.3, 0.4)] + _stream(rng, width, limit, config_a, 15)
    # Table B right behind that stream, once its last beats are inside the unit: they must see table A.
    schedule += [("pauses", 0.0, 0.0), ("idle", TOKENIZER_LATENCY[width] + EVENTS_LATENCY + 1)]
    schedule += _commits(TABLE_B) + [("default", DEFAULT_B)]    # the default is read as results leave
    schedule += [("pauses", 0.3, 0.4)] + _stream(rng, width, limit, config_b, 15)
    accepted, outputs, holds, tables = _simulate(width, schedule, limit, rng)

    # Every commit but table B's first finds the pipeline empty; that one waits for the beats in flight.
    fill = ROUTE_FILL_CYCLES[width]
    assert len(holds) == len(table_b) and holds[len(TABLE_A)] > fill, holds
    assert holds[:len(TABLE_A)] + holds[len(TABLE_A) + 1:] == [fill] * (len(table_b) - 1), holds
    assert tables == _reference_tables(width, table_b)
    assert _check(width, schedule, limit, outputs, seed) > 40
    n = sum(len(pack_beats(p, width)) for p in full_rate)
    start = accepted[0]
    assert accepted[:n] == list(range(start, start + n))                # one beat per cycle, whatever the content
    assert [c for c, _ in outputs[:n]] == [a + latency for a in accepted[:n]]


def test_commit_while_busy_is_ignored():
    """A pulse while ``busy`` is high changes nothing; the one before it is written whole."""
    width = 16
    dut = RouteMatcher(width)
    busy_cycles = []                            # from the second pulse's cycle

    async def bench(ctx):
        for index, prefix, cls in [(3, b"/v1/", 1), (4, b"/x", 2)]:
            ctx.set(dut.pfx_data, int.from_bytes(prefix, "little"))
            ctx.set(dut.pfx_len, len(prefix))
            ctx.set(dut.pfx_class, cls)
            ctx.set(dut.pfx_valid, 1)
            ctx.set(dut.pfx_index, index)
            ctx.set(dut.pfx_commit, 1)
            busy_cycles.append(ctx.get(dut.busy))
            await ctx.tick()
        ctx.set(dut.pfx_commit, 0)
        assert busy_cycles == [0, 1]
        busy_cycles.pop(0)
        while ctx.get(dut.busy):
            busy_cycles.append(1)
            await ctx.tick()
        assert [[ctx.get(mem[a]) for a in range(mem.depth)] for mem in dut.tables] == mask_table(
            width, [None, None, None, b"/v1/"])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(busy_cycles) == ROUTE_FILL_CYCLES[width]
