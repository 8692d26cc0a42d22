"""The parser's field-value trackers (hdl/parser/values.py) against a pure-Python reference, and the reference against
the bit-exact parser model.

- ``reference_values``: at each value-ending CR before the model's stop, the record (trimmed length, digits, BCD,
  2^64 overflow, "chunked", Bearer and its token length) and the four lane masks;
- the reference against ``parse``: Host, Content-Length (value, overflow, or the error), Transfer-Encoding, the API key
  (source, length, and the fingerprint of the bytes the masks pick out), extra slot 0 as a number; on mixed traffic
  and on one-line packets built around edge values;
- the RTL (``Tokenizer`` → ``ValueTracker`` in Amaranth's simulator) against the reference, W = 4/8/16, at full rate
  (one beat per cycle, exact latency) and under random valid/ready backpressure, on mixed traffic, worst-case
  packets (a delimiter in every lane) and packets built to stress the trackers (digit counts around 20, values near
  2^64, WS runs across beat boundaries, "chunked" and Bearer variants, many short values per beat).
"""

import random
import re

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from support.pysim import packet_runs, run_streams
from wirespeed.hdl.bus.packet import ByteBeat, pack_beats
from wirespeed.hdl.parser.layouts import LEN_MAX, ErrorFlag, KeySource
from wirespeed.hdl.parser.tokenizer import TOKENIZER_LATENCY, Tok, Tokenizer, TokenBeat, next_state
from wirespeed.hdl.parser.values import (MASKS, VALUE_LATENCY, ValueBeat, ValueRecord, ValueSlot, ValueTracker,
                                        value_slots)
from wirespeed.host.keys import U64, fingerprint
from wirespeed.host.models.parser import ParserConfig, parse
from wirespeed.host.tools import traffic

SEED = 20261207
CR, WS = 0x0D, b" \t"
RECORD_FIELDS = ("len", "digits_ok", "bcd", "overflow", "chunked", "bearer", "token_len")
# The Authorization rule on a trimmed value (docs/parser.md), written out here rather than taken from the model.
BEARER = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr] +([^ \t]+)")
EXTRA = b"x-num"                                  # extra slot 0: read as a number by the model, never an error


# -- the reference ----------------------------------------------------------------------------------------------------

def _record(value: bytes, run: int) -> dict:
    """The record of one value (the bytes between the colon and the CR), which started at packet index ``run``."""
    t = value.strip(WS)
    digits_ok = all(0x30 <= c <= 0x39 for c in t)
    bearer = BEARER.fullmatch(t)
    return {
        "len": min(len(t), LEN_MAX), "digits_ok": digits_ok,
        "bcd": sum((c & 0xF) << 4 * i for i, c in enumerate(reversed(t[-20:]))) if digits_ok else None,
        "overflow": digits_ok and len(t) == 20 and int(t) > U64,
        "chunked": t.lower() == b"chunked",
        "bearer": bearer is not None, "token_len": min(len(bearer[1]), LEN_MAX) if bearer else 0,
        "run": run,
    }


def _marks(value: bytes, run: int, marks: dict) -> None:
    """Add the lane masks of a value's bytes (so far), which start at packet index ``run``."""
    words = 0
    for i, c in enumerate(value):
        nws = c not in WS
        if nws and (i == 0 or value[i - 1] in WS):
            words += 1
        if words >= 1:
            marks["val_byte"].add(run + i)
        if words >= 2:
            marks["tok_byte"].add(run + i)
        if nws:
            marks["val_keep"].add(run + i)
            if words >= 2:
                marks["tok_keep"].add(run + i)


def parsed_bytes(packet: bytes, desc) -> int:
    """How many leading bytes of ``packet`` the model parsed (where the tokenizer's states are exact)."""
    if desc.errors & ErrorFlag.header_too_large:
        return desc.header_len
    return min(len(packet), desc.stop_index(len(packet)) + 1)


def reference_values(packet: bytes, config: ParserConfig = ParserConfig()):
    """``(records, marks, limit)``: the record at each value-ending CR (by packet index) and the sets of packet
    indices in each lane mask, for the ``limit`` bytes the model parsed."""
    limit = parsed_bytes(packet, parse(packet, config))
    records, marks = {}, {key: set() for key in MASKS}
    state, run = Tok.METHOD, None
    for i in range(limit):
        b = packet[i]
        if state == Tok.VALUE:
            run = i if run is None else run
            if b == CR:
                records[i] = _record(packet[run:i], run)
                _marks(packet[run:i], run, marks)
                run = None
        state = next_state(state, b)
    if run is not None:
        _marks(packet[run:limit], run, marks)
    return records, marks, limit


def _picked(packet, marks, run, end, byte, keep):
    """The bytes of ``run..end`` from the first ``byte`` lane to the last ``keep`` lane (what a fingerprint takes)."""
    lanes = [i for i in range(run, end) if i in marks[byte]]
    kept = [i for i in range(run, end) if i in marks[keep]]
    return packet[lanes[0]:kept[-1] + 1] if kept else b""


def _bcd_value(bcd: int) -> int:
    return int("".join(str(bcd >> 4 * i & 0xF) for i in reversed(range(20))))


# -- packets ----------------------------------------------------------------------------------------------------------

def _ws(rng, most=6):
    return bytes(rng.choice(WS) for _ in range(rng.choice([0, 0, 1, 1, 2, rng.randrange(most + 1)])))


def _near_2_64(rng) -> bytes:
    """A 20-digit number agreeing with 2^64 up to a random digit (the compare's every position)."""
    two = str(1 << 64)
    p = rng.randrange(21)
    if p == 20:
        return two.encode()
    other = rng.choice([d for d in "0123456789" if d != two[p]])
    return (two[:p] + other + "".join(rng.choice("0123456789") for _ in range(19 - p))).encode()


def _token(rng, n):
    return bytes(rng.choice(b"abcXYZ019-._~+/=\x80\xff") for _ in range(n))


EDGE_VALUES = [
    b"", b"0", b"7", b"42", b"1" * 19, b"9" * 19, b"9" * 20, b"1" + b"0" * 19, b"1" * 21, b"0" * 21, b"0" * 20,
    str(U64).encode(), str(U64 + 1).encode(), str(U64 + 2).encode(), b"18446744073709551606",
    b"18446744073709552615", b"28446744073709551615", b"08446744073709551616", b"00000000000000000042", b"00042",
    b"1 2", b"12a", b"a12", b"-1", b"+1", b"1.0", b"1\t2",
    b"chunked", b"Chunked", b"CHUNKED", b"cHuNkEd", b"chunke", b"chunkedx", b"chunked x", b"xchunked", b"chunked,",
    b"chunk ed", b"bhunked",
    b"Bearer abc", b"bearer   tok-123", b"BEARER x", b"bEaReR Z", b"Bearer\tabc", b"Bearer \tabc", b"Bearer\t abc",
    b"Bearer abc\tdef", b"Bearer abc def", b"Bearer", b"Bearerabc", b"xBearer abc", b"Bearer: abc", b"Basic abc",
    b"Bearer a", b"Bearer  " + b"k" * 40, b"Bearer Bearer", b"Bearer bearer x", b"bearer\x80 x", b"Bearer \x80\xff",
    b"a b", b"a", b"\x80", b"x \t y", b"Bearer" + b" " * 20 + b"t",
]


def _stress_value(rng) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(EDGE_VALUES)
    if kind == 1:
        return bytes(rng.choice(b"0123456789") for _ in range(rng.choice([0, 1, 19, 20, 21, rng.randrange(26)])))
    if kind == 2:
        return _near_2_64(rng)
    if kind == 3:
        scheme = bytes(c ^ (0x20 * rng.randrange(2)) for c in b"bearer")
        return scheme + b" " * rng.randrange(1, 19) + _token(rng, rng.randrange(1, 30))
    if kind == 4:
        return bytes(c ^ (0x20 * rng.randrange(2)) for c in b"chunked")
    return bytes(rng.choice(b"ab \t:,\x80") for _ in range(rng.randrange(12)))


def stress_packet(rng) -> bytes:
    """A valid request whose field lines carry tracker edge cases, wrapped in random WS, some lines tiny."""
    lines = [b"GET /s HTTP/1.1\r\nHost: h\r\n"]
    for _ in range(rng.randrange(4, 30)):
        if rng.random() < 0.25:
            lines.append(rng.choice([b"a:1\r\n", b"b:\r\n", b"c: 2\r\n", b"d:\t\r\n", b"e:x \r\n"]))
            continue
        name = rng.choice([b"x", b"x-value", b"n1", b"A-Much-Longer-Field-Name"])
        lines.append(name + b":" + _ws(rng, 18) + _stress_value(rng) + _ws(rng, 18) + b"\r\n")
    return b"".join(lines) + b"\r\n"


def model_packet(rng, name: bytes) -> bytes:
    """One request with one field line of interest (after Host, or itself the Host line)."""
    value = _ws(rng, 4) + _stress_value(rng) + _ws(rng, 4)
    host = b"" if name == b"host" else b"Host: h\r\n"
    return b"GET / HTTP/1.1\r\n" + host + name + b":" + value + b"\r\n\r\n"


# -- the reference against the model ----------------------------------------------------------------------------------

def _check_against_model(packet, config):
    desc = parse(packet, config)
    records, marks, _ = reference_values(packet, config)
    committed = []                                  # (name, record, CR index): the lines the model committed
    for i in sorted(records)[:desc.header_lines]:
        line = packet[packet.rfind(b"\n", 0, i) + 1:i]
        committed.append((line.partition(b":")[0].lower(), records[i], i))

    def first(name):
        return next(((r, i) for n, r, i in committed if n == name), (None, None))

    def number(r):                                  # the Content-Length rule on a record
        if r["digits_ok"] and 1 <= r["len"] <= 20:
            return (U64, True) if r["overflow"] else (_bcd_value(r["bcd"]), False)
        return None

    r, i = first(b"host")
    assert desc.host_present == (r is not None)
    if r is not None:
        assert desc.host_len == r["len"]
        assert desc.host_fp == fingerprint(_picked(packet, marks, r["run"], i, "val_byte", "val_keep"))
    r, _ = first(b"content-length")
    if r is not None:
        want = number(r)
        if want is None:
            assert ErrorFlag.bad_content_length in desc.errors and not desc.cl_present
        else:
            assert (desc.cl_present, desc.content_length, desc.cl_overflow) == (True, *want)
    r, _ = first(b"transfer-encoding")
    assert desc.chunked == (r is not None and r["chunked"])
    auth = next(((r, i) for n, r, i in committed if n == b"authorization" and r["bearer"]), None)
    (xkey, xi) = first(b"x-api-key")
    if auth is not None:
        r, i = auth
        assert (desc.key_source, desc.key_len) == (KeySource.AUTHORIZATION, r["token_len"])
        assert desc.key_fp == fingerprint(_picked(packet, marks, r["run"], i, "tok_byte", "tok_keep"))
    elif xkey is not None:
        assert (desc.key_source, desc.key_len) == (KeySource.X_API_KEY, xkey["len"])
        assert desc.key_fp == fingerprint(_picked(packet, marks, xkey["run"], xi, "val_byte", "val_keep"))
    else:
        assert desc.key_source == KeySource.NONE
    r, i = first(EXTRA)
    if r is not None:
        want = number(r)
        assert (desc.extra_numeric, desc.extra_value) == ((True, want[0]) if want else (False, 0))
        assert desc.extra_fp[0] == fingerprint(_picked(packet, marks, r["run"], i, "val_byte", "val_keep"))
    return desc


def test_reference_examples():
    packet = b"GET / HTTP/1.1\r\nHost:  a b \r\nX: 0042\t\r\nA: bearer  t0k \r\nT: Chunked\r\nE:\r\n\r\n"
    records, marks, limit = reference_values(packet)
    assert limit == len(packet)
    got = [{k: r[k] for k in RECORD_FIELDS} for _, r in sorted(records.items())]
    assert got == [
        dict(len=3, digits_ok=False, bcd=None, overflow=False, chunked=False, bearer=False, token_len=0),
        dict(len=4, digits_ok=True, bcd=0x42, overflow=False, chunked=False, bearer=False, token_len=0),
        dict(len=11, digits_ok=False, bcd=None, overflow=False, chunked=False, bearer=True, token_len=3),
        dict(len=7, digits_ok=False, bcd=None, overflow=False, chunked=True, bearer=False, token_len=0),
        dict(len=0, digits_ok=True, bcd=0, overflow=False, chunked=False, bearer=False, token_len=0),
    ]
    host = packet.index(b"a b")
    assert sorted(marks["val_byte"] & set(range(host - 2, host + 5))) == list(range(host, host + 4))
    assert sorted(marks["val_keep"] & set(range(host - 2, host + 5))) == [host, host + 2]
    assert sorted(marks["tok_byte"] & set(range(host - 2, host + 5))) == [host + 2, host + 3]
    # Parsing stops at the bare LF: nothing after it is a record.
    assert sorted(reference_values(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\nC: 3\r\n\r\n")[0]) == [20]


def test_reference_agrees_with_the_model():
    rng = random.Random(SEED)
    config = ParserConfig(extras=(EXTRA,))
    names = [b"host", b"content-length", b"transfer-encoding", b"authorization", b"x-api-key", EXTRA]
    packets = list(traffic.mix(rng, 300)) + [model_packet(rng, rng.choice(names)) for _ in range(1500)]
    packets += [stress_packet(rng) for _ in range(40)]
    complete = sum(_check_against_model(p, config).complete for p in packets)
    assert complete > 1000, complete


# -- the RTL against the reference ------------------------------------------------------------------------------------

class _Chain(wiring.Component):
    """The tokenizer and the value trackers, as the parser chains them."""

    def __init__(self, width):
        self.width = width
        super().__init__({"i_stream": In(stream.Signature(ByteBeat(width))),
                          "o_stream": Out(stream.Signature(ValueBeat(width)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tokenizer = tokenizer = Tokenizer(self.width)
        m.submodules.values = values = ValueTracker(self.width)
        wiring.connect(m, wiring.flipped(self.i_stream), tokenizer.i_stream)
        wiring.connect(m, tokenizer.o_stream, values.i_stream)
        wiring.connect(m, values.o_stream, wiring.flipped(self.o_stream))
        return m


def _decoder(width):
    """A function from an output payload (int) to (beat bits, first, end bits, [(slot's CR bits, record dict)],
    {mask: bits})."""
    layout = ValueBeat(width)
    tok = layout["tok"]
    beat_at, beat_bits = tok.offset, TokenBeat(width)["beat"].width
    first_at = tok.offset + TokenBeat(width)["first"].offset
    slot_at, slot_size = layout["slot"].offset, ValueSlot(width).size
    cr_at, rec_at = ValueSlot(width)["cr"].offset, ValueSlot(width)["rec"].offset
    fields = [(name, ValueRecord[name].offset, (1 << ValueRecord[name].width) - 1)
              for name in ("end",) + RECORD_FIELDS]
    masks = [(name, layout[name].offset) for name in MASKS]
    full = (1 << width) - 1

    def decode(value):
        slots = []
        for i in range(value_slots(width)):
            sv = value >> (slot_at + i * slot_size)
            r = sv >> rec_at
            slots.append((sv >> cr_at & full, {name: r >> at & mask for name, at, mask in fields}))
        return (value >> beat_at & ((1 << beat_bits) - 1), value >> first_at & 1, value >> layout["end"].offset & full,
                slots, {name: value >> at & full for name, at in masks})
    return decode


def _check_rtl(width, cases):
    """Each ``(packets, in_p, out_p, seed)`` of ``cases`` through one simulation of the chain, one after the other,
    checked against the reference; returns each case's ``(accepted, outputs)``."""
    results = []
    for (packets, _, _, seed), (accepted, outputs) in zip(cases, run_streams(_Chain(width), packet_runs(width, cases))):
        _check_outputs(width, packets, outputs, seed)
        results.append((accepted, outputs))
    return results


def _check_outputs(width, packets, outputs, seed):
    beats = [pack_beats(p, width) for p in packets]
    assert len(outputs) == sum(map(len, beats)), seed
    decode = _decoder(width)
    n = 0
    for p, packet in enumerate(packets):
        records, marks, limit = reference_values(packet)
        for b, beat in enumerate(beats[p]):
            bits, first, ends, slots, got_marks = decode(outputs[n][1])
            assert (bits, first) == (beat, b == 0), (seed, p, b)
            lanes = range(min(width, limit - b * width))
            for k in lanes:
                i = b * width + k
                where = (seed, p, packet[max(0, i - 40):i + 1], i)
                for name in MASKS:
                    assert got_marks[name] >> k & 1 == (i in marks[name]), (name, where)
                assert ends >> k & 1 == (i in records), where
            # The slots: the beat's value-ending CRs in lane order (those before the stop are checked).
            crs = [k for k in lanes if b * width + k in records]
            assert len(crs) <= len(slots), (seed, p, b, crs)
            for (cr, rec), k in zip(slots, crs):
                i = b * width + k
                where = (seed, p, packet[max(0, i - 40):i + 1], i)
                assert rec["end"] == 1 and cr == 1 << k, (cr, where)
                want = records[i]
                got = {name: rec[name] for name in RECORD_FIELDS}
                assert got["len"] == want["len"] and got["digits_ok"] == want["digits_ok"], (got, want, where)
                assert (got["overflow"], got["chunked"], got["bearer"]) == (
                    want["overflow"], want["chunked"], want["bearer"]), (got, want, where)
                if want["digits_ok"]:
                    assert got["bcd"] == want["bcd"], (hex(got["bcd"]), hex(want["bcd"]), where)
                if want["bearer"]:
                    assert got["token_len"] == want["token_len"], (got, want, where)
            if limit >= (b + 1) * width:          # the whole beat is before the stop: no other slot is used
                assert all(rec["end"] == 0 and cr == 0 for cr, rec in slots[len(crs):]), (seed, p, b, slots)
            n += 1


def _packets(rng, width, n_mix, n_stress):
    packets = list(traffic.mix(rng, n_mix)) + [stress_packet(rng) for _ in range(n_stress)]
    packets.append(traffic.worst_case(rng, width, 64 * width))
    rng.shuffle(packets)
    return packets


# Sizes keep each run to a few seconds in the Python simulator (about 1, 2.5 and 5 ms per cycle at W = 4, 8, 16).
SIZES = {4: (12, 24), 8: (10, 20), 16: (6, 12)}


@pytest.mark.parametrize("width", [4, 8, 16])
def test_values_full_rate_then_under_backpressure(width):
    """At full rate (one beat per cycle, exact latency), then, in the same simulation once that has drained, under
    random valid/ready backpressure: building the simulator is most of the cost at W = 16 (support/pysim.py)."""
    full_seed, paused_seed = SEED + width, SEED * 3 + width
    n_mix, n_stress = SIZES[width]
    full = _packets(random.Random(full_seed), width, n_mix, n_stress)
    paused = _packets(random.Random(paused_seed), width, n_mix // 2, n_stress // 2)
    (accepted, outputs), _ = _check_rtl(width, [(full, 0.0, 0.0, full_seed), (paused, 0.3, 0.4, paused_seed)])
    assert accepted == list(range(len(accepted)))                   # one beat per cycle, whatever the content
    latency = TOKENIZER_LATENCY[width] + VALUE_LATENCY[width]
    assert [c for c, _ in outputs] == [a + latency for a in accepted]
