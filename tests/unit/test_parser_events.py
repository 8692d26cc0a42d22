"""The parser's stop and request-line unit (hdl/parser/events.py), behind the tokenizer, against the bit-exact model.

For every packet, the unit's stop (the beat, ``header_len``, the error flag, ``complete``), its committed lines before
the stop, and the method and version must be the model's (``wirespeed.host.models.parser.parse``). Rules the commit
stage decides (duplicate Host, Content-Length, Transfer-Encoding, and the block checks) are not this unit's: for
packets the model stops on one of those, the unit must stop no sooner. W = 4/8/16, full rate with the exact latency,
and random valid/ready backpressure.
"""

import random

import pytest
from amaranth.lib import data

from support.pysim import Chain, run_stream
from support.streams import random_pauses
from wirespeed.hdl.bus.packet import pack_beats
from wirespeed.hdl.parser.events import EVENTS_LATENCY, EventBeat, Events
from wirespeed.hdl.parser.layouts import ErrorFlag, Method, Version
from wirespeed.hdl.parser.tokenizer import TOKENIZER_LATENCY, Tokenizer
from wirespeed.host.models.parser import ParserConfig, parse
from wirespeed.host.tools import traffic

SEED = 20261206
COMMIT_RULES = (ErrorFlag.duplicate_host | ErrorFlag.bad_content_length | ErrorFlag.cl_mismatch
                | ErrorFlag.bad_transfer_encoding)
BLOCK_RULES = ErrorFlag.missing_host | ErrorFlag.cl_and_te


def _packets(rng, width, limit):
    packets = list(traffic.mix(rng, 70))
    packets += [traffic.worst_case(rng, width, 300)]
    # The request line's corners: empty method/target, short/long/odd versions, every method, bare CR/LF.
    for method in [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
                   b"get", b"PATCHX", b"OPTIONSX", b"M"]:
        packets.append(method + b" /a?b HTTP/1.1\r\nhost: x\r\n\r\n")
    for line in [b" / HTTP/1.1", b"GET  HTTP/1.1", b"GET / HTTP/1.0", b"GET / HTTP/1.", b"GET / HTTP/1.11",
                 b"GET / HTTP/2.0", b"GET / HTTP/1.1 ", b"GET / HTTP/1\n1", b"GET / HTTP/1.1\rX", b"GET /\r HTTP/1.1",
                 b"GET\t/ HTTP/1.1", b"GET / http/1.1", b"GET / ", b"GET /", b""]:
        packets.append(line + b"\r\nhost: x\r\n\r\n")
    packets += [b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 3 + b" fold\r\n\r\n", b"GET / HTTP/1.1\r\nho st: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nhost : x\r\n\r\n", b"GET / HTTP/1.1\r\n:x\r\n\r\n",
                b"GET / HTTP/1.1\r\na:\x7f\r\n\r\n",
                b"GET / HTTP/1.1\r\na:b\n\r\n", b"GET / HTTP/1.1\r\n\r\r\n", b"GET / HTTP/1.1\r\nhost: x\r\n\r\nBODY"]
    # Limits: a block exactly at the limit, one byte over, the limit inside the request line.
    ok = b"GET /p HTTP/1.1\r\nhost: h\r\n\r\n"
    packets += [ok[:limit] + b"x" * 3, ok.ljust(limit, b"y"), b"G" * (limit + 5)]
    return packets


def _expected(packet, config):
    desc = parse(packet, config)
    return desc


def _run(width, in_p, out_p, seed):
    rng = random.Random(seed)
    limit = rng.choice([27, 29, 64, 8192])
    config = ParserConfig(max_header_bytes=limit)
    packets = _packets(rng, width, limit)
    beats = [beat for p in packets for beat in pack_beats(p, width)]
    events = Events(width)
    dut = Chain(Tokenizer(width), events, sets=[(events.max_header_bytes, limit)])
    accepted, outputs = run_stream(dut, beats, random_pauses(rng, in_p), random_pauses(rng, out_p))
    assert len(outputs) == len(beats)
    layout = EventBeat(width)
    views = iter(data.Const(layout, v) for _, v in outputs)
    checked = 0
    for n, packet in enumerate(packets):
        want = parse(packet, config)
        stops, lines, method, version = [], 0, Method.NONE, Version.NONE
        for i in range(max(1, -(-len(packet) // width))):
            view = next(views)
            if not stops:
                lines += bin(int(view.commit)).count("1")
            if int(view.method_set):
                method = Method(view.method)
            if int(view.version_set):
                version = Version(view.version)
            if int(view.stop):
                stops.append((int(view.header_len), ErrorFlag(int(view.errors)), bool(view.complete)))
        assert len(stops) == 1, (n, packet, stops)
        header_len, errors, complete = stops[0]
        where = (n, packet[:80], want)
        assert (method, version) == (want.method, want.version), where
        if want.errors & COMMIT_RULES:
            assert header_len >= want.header_len, where
            continue
        assert (header_len, errors, complete) == (want.header_len, want.errors & ~BLOCK_RULES, want.complete), where
        assert lines == want.header_lines, where
        checked += 1
    assert checked > 0.8 * len(packets)
    return accepted, outputs


@pytest.mark.parametrize("width", [4, 8, 16])
def test_events_full_rate_and_latency(width):
    accepted, outputs = _run(width, 0.0, 0.0, SEED + width)
    assert accepted == list(range(len(accepted)))
    latency = TOKENIZER_LATENCY[width] + EVENTS_LATENCY
    assert [c for c, _ in outputs] == [a + latency for a in accepted]


@pytest.mark.parametrize("width", [4, 8, 16])
def test_events_under_backpressure(width):
    _run(width, 0.3, 0.4, SEED * 7 + width)
