"""The gateway's ``json_loads`` (orjson where it reads alike) against ``json.loads``: the same value, of the same
types, or the same failure, on edge cases and on generated bodies."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirespeed.host.gateway import server
from wirespeed.host.gateway.server import json_loads

EDGES = [
    b'{"a":1,"a":2}', b"NaN", b"[Infinity,-Infinity]", b"1e400", b"-1e400", b"123456789012345678901234567890",
    b"-9223372036854775809", b"18446744073709551615", b"18446744073709551616", b'{"max_tokens":100000000000000000000}',
    b'"\\ud800"', b'"\\ud83d\\ude00"', b'\xef\xbb\xbf{"a":1}', '{"a":1}'.encode("utf-16"),
    '{"a":1}'.encode("utf-32-le"), b'{"a":"\xff"}', b"[1,]", b'{"a":1}x', b' {"a" : 1 } ', b"\t[]\n", b"-0",
    b"-0.0", b"0.1", b"1E2", b'"\x01"', b"", b"null", b'"a\\u0000b"', b"1.7976931348623157e309", b"5e-324",
    b"1e-400", b"0.12345678901234567890123", b'{"n": 1.5, "max_tokens": 8.0}',
    json.dumps({"messages": [{"role": "user", "content": "x" * 20000}], "max_tokens": 10 ** 20}).encode(),
]


def outcome(loads, data: bytes):
    try:
        return "ok", repr(loads(data))          # repr: 1 and 1.0, nan and nan, -0.0 and 0.0 told apart
    except ValueError:
        return "error", None


@pytest.mark.parametrize("data", EDGES, ids=range(len(EDGES)))
def test_json_loads_reads_every_edge_case_as_json_does(data):
    assert outcome(json_loads, data) == outcome(json.loads, data)


values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=800, deadline=None)
@given(values, st.booleans())
def test_json_loads_reads_generated_bodies_as_json_does(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(json_loads, data) == outcome(json.loads, data)


def test_a_small_plain_body_is_read_by_orjson_and_a_large_one_by_json(monkeypatch):
    calls = []
    monkeypatch.setattr(server.json, "loads", lambda data: calls.append(len(data)) or {})
    small = b'{"model":"gpt-4o-mini","max_tokens":8,"messages":[{"role":"user","content":"Say hi."}]}'
    assert json_loads(small)["max_tokens"] == 8 and calls == []
    large = b'{"x":"' + b"y" * server._ORJSON_MAX_BYTES + b'"}'
    json_loads(large)
    assert calls == [len(large)]
