"""Seeded HTTP/1.1 request traffic for the offload pipeline's demo, bench and tests.

``random.Random(seed)`` ─▶ generators here ─▶ request packets ─▶ the parser (model, ``"sim"`` or hardware)

Every function takes the ``rng`` it draws from and nothing else random, so a seed reproduces a packet exactly.

- :func:`realistic`: what an AI API gateway sees: OpenAI- and Anthropic-style calls with JSON bodies, and GETs.
- :func:`worst_case`: the densest header block for a W-byte datapath: short lines, delimiters in every lane.
- :func:`mutate`: small corruptions of a packet (byte flips, truncation, stray CR/LF/SP/TAB/NUL, repeated lines).
- :func:`smuggling`: the framing attacks and grammar violations the parser must flag.
- :func:`random_bytes`: noise, some of it shaped like HTTP.
- :func:`mix`: a stream of all of the above.
"""

from __future__ import annotations

import json
import random
import string

__all__ = ["build_request", "realistic", "worst_case", "mutate", "smuggling", "random_bytes", "mix",
           "SMUGGLING_KINDS", "valid_request_strategy"]

_BASE62 = string.ascii_letters + string.digits
_KEY_ALPHABET = _BASE62 + "-_"
_TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
_WORDS = ("the", "model", "token", "stream", "latency", "gateway", "request", "summarise", "explain", "why", "how",
          "a", "list", "of", "three", "ideas", "for", "code", "review", "haiku", "about", "FPGAs", "caching", "JSON")


def build_request(method: bytes, target: bytes, headers, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    """Serialise a request: ``headers`` is a list of ``(name, value)`` bytes pairs, written as given.

    Each pair becomes ``name:value\\r\\n`` with no space added, so a caller controls OWS exactly.
    """
    lines = [method + b" " + target + b" " + version]
    lines += [name + b":" + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _token(rng: random.Random, n: int, alphabet: str = _BASE62) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _case(rng: random.Random, name: str) -> str:
    """Header names arrive in any case: as written, lower, upper, or mixed."""
    r = rng.random()
    if r < 0.55:
        return name
    if r < 0.8:
        return name.lower()
    if r < 0.9:
        return name.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in name)


def _ows(rng: random.Random) -> tuple[str, str]:
    """Optional whitespace around a field value: mostly one SP before, sometimes none, tabs or trailing WS."""
    before = rng.choices(["", " ", "  ", "\t", " \t"], weights=[10, 75, 5, 5, 5])[0]
    after = rng.choices(["", " ", "\t", " \t "], weights=[90, 5, 3, 2])[0]
    return before, after


def _serialise(rng: random.Random, request_line: str, headers, body: bytes) -> bytes:
    out = [request_line]
    for name, value in headers:
        before, after = _ows(rng)
        out.append(f"{_case(rng, name)}:{before}{value}{after}")
    return ("\r\n".join(out) + "\r\n\r\n").encode() + body


def _chat_body(rng: random.Random, anthropic: bool) -> bytes:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 60)))
    messages = [{"role": "user", "content": words}]
    if rng.random() < 0.3:
        messages.insert(0, {"role": "assistant" if anthropic else "system", "content": "You are terse."})
    if anthropic:
        body = {"model": rng.choice(["claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022",
                                     "claude-3-opus-20240229"]),
                "max_tokens": rng.choice([256, 1024, 4096]), "messages": messages}
    else:
        body = {"model": rng.choice(["gpt-4o", "gpt-4o-mini", "o1-mini", "gpt-4-turbo"]), "messages": messages}
        if rng.random() < 0.5:
            body["max_tokens"] = rng.choice([64, 256, 1024])
    if rng.random() < 0.4:
        body["stream"] = True
    if rng.random() < 0.3:
        body["temperature"] = round(rng.random(), 2)
    return json.dumps(body, separators=rng.choice([(",", ":"), (", ", ": ")])).encode()


def _openai_auth(rng: random.Random) -> list:
    key = rng.choice(["sk-", "sk-proj-", "sk-svcacct-"]) + _token(rng, rng.choice([48, 64, 132]), _KEY_ALPHABET)
    headers = [("Authorization", f"Bearer {key}")]
    if rng.random() < 0.3:
        headers.append(("OpenAI-Organization", "org-" + _token(rng, 24)))
    if rng.random() < 0.2:
        headers.append(("OpenAI-Project", "proj_" + _token(rng, 24)))
    return headers


def _anthropic_auth(rng: random.Random) -> list:
    headers = [("x-api-key", "sk-ant-api03-" + _token(rng, 93, _KEY_ALPHABET) + "AA"),
               ("anthropic-version", "2023-06-01")]
    if rng.random() < 0.2:
        headers.append(("anthropic-beta", rng.choice(["prompt-caching-2024-07-31",
                                                      "max-tokens-3-5-sonnet-2024-07-15"])))
    return headers


def _client_headers(rng: random.Random, anthropic: bool) -> list:
    headers = [("User-Agent", rng.choice(["OpenAI/Python 1.54.3", "python-httpx/0.27.2", "openai-node/4.67.0",
                                          "anthropic-python/0.39.0", "curl/8.5.0", "litellm/1.52.0"]))]
    if rng.random() < 0.8:
        headers.append(("Accept", "application/json"))
    if rng.random() < 0.5:
        headers.append(("Accept-Encoding", "gzip, deflate"))
    if rng.random() < 0.5:
        headers.append(("Connection", "keep-alive"))
    if rng.random() < 0.5:
        headers.append(("x-request-id", "%08x-%04x-%04x-%04x-%012x" % tuple(rng.getrandbits(b)
                                                                            for b in (32, 16, 16, 16, 48))))
    if not anthropic and rng.random() < 0.4:
        headers += [("X-Stainless-Lang", "python"), ("X-Stainless-Package-Version", "1.54.3"),
                    ("X-Stainless-Runtime", "CPython"), ("X-Stainless-Retry-Count", str(rng.randrange(3)))]
    if rng.random() < 0.15:
        headers.append(("X-Forwarded-For", ".".join(str(rng.randrange(1, 255)) for _ in range(4))))
    return headers


def realistic(rng: random.Random, api_key: str | None = None, session_id: str | None = None,
              kind: str | None = None, token_estimate: int | None = None) -> bytes:
    """One well-formed request as an AI API gateway sees it.

    OpenAI-style ``POST /v1/chat/completions`` or ``/v1/embeddings`` (``Authorization: Bearer sk-…``),
    Anthropic-style ``POST /v1/messages`` (``x-api-key``, ``anthropic-version``), or ``GET /v1/models``; JSON bodies
    with an exact ``Content-Length``; header names in random case; random optional whitespace; header order partly
    shuffled. ``api_key`` replaces the random key (a known tenant), ``session_id`` adds an ``x-session-id`` header,
    ``kind`` (chat, messages, embeddings, models) fixes the endpoint, ``token_estimate`` adds the
    ``x-token-estimate`` header a gateway sets (the limiter's reset cost source); without them the draws are unchanged.
    """
    if kind is None:
        kind = rng.choices(["chat", "messages", "embeddings", "models"], weights=[45, 35, 8, 12])[0]
    anthropic = kind == "messages" or (kind == "models" and rng.random() < 0.4)
    host = "api.anthropic.com" if anthropic else "api.openai.com"
    auth = _anthropic_auth(rng) if anthropic else _openai_auth(rng)
    if api_key is not None:
        auth[0] = ("x-api-key", api_key) if anthropic else ("Authorization", f"Bearer {api_key}")
    if session_id is not None:
        auth.append(("x-session-id", session_id))
    if token_estimate is not None:
        auth.append(("x-token-estimate", str(token_estimate)))
    client = _client_headers(rng, anthropic)
    if kind == "models":
        target = "/v1/models" + rng.choice(["", "", "", "?limit=20", "/" + rng.choice(["gpt-4o", "claude-3-opus"])])
        request_line, body, framing = f"GET {target} HTTP/1.1", b"", []
    else:
        if kind == "embeddings":
            body = json.dumps({"model": "text-embedding-3-small",
                               "input": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(1, 40)))}).encode()
        else:
            body = _chat_body(rng, anthropic)
        path = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "embeddings": "/v1/embeddings"}[kind]
        request_line = f"POST {path} HTTP/1.1"
        framing = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    rest = auth + client + framing
    rng.shuffle(rest)
    # Clients put Host first almost always; keep it there most of the time.
    headers = [("Host", host)] + rest if rng.random() < 0.9 else rest[:2] + [("Host", host)] + rest[2:]
    return _serialise(rng, request_line, headers, body)


def worst_case(rng: random.Random, w: int, header_bytes: int = 8192) -> bytes:
    """A valid request whose header block is exactly ``header_bytes`` long and made of the shortest lines.

    Lines like ``a:b\\r\\n`` (4 to 7 bytes, one-byte names, optional WS) put a colon, CR or LF in every one of the W
    lanes of a beat, over and over: the densest work a W-byte datapath can get. ``w`` is recorded in the request
    line so a packet says what it was built for; the line lengths are random, so every lane offset occurs.
    """
    if header_bytes < 64:
        raise ValueError(f"header_bytes must be at least 64, got {header_bytes}")
    head = f"GET /w{w} HTTP/1.1\r\nHost: h\r\n".encode()
    out = [head]
    remaining = header_bytes - len(head) - 2
    names = _TCHARS.encode()
    values = bytes(range(0x21, 0x7F))
    while remaining > 12:
        name = bytes([rng.choice(names)])
        form = rng.randrange(4)
        if form == 0:
            line = name + b":\r\n"
        elif form == 1:
            line = name + b":" + bytes([rng.choice(values)]) + b"\r\n"
        elif form == 2:
            line = name + b": " + bytes([rng.choice(values)]) + b"\r\n"
        else:
            line = name + rng.choice([b":\t", b": ", b":  "]) + bytes([rng.choice(values)]) + b" \r\n"
        out.append(line)
        remaining -= len(line)
    out.append(b"z:" + bytes(rng.choice(values) for _ in range(remaining - 4)) + b"\r\n")
    out.append(b"\r\n")
    packet = b"".join(out)
    assert len(packet) == header_bytes
    return packet


def _header_end(packet: bytes) -> int:
    end = packet.find(b"\r\n\r\n")
    return len(packet) if end < 0 else end + 4


def mutate(rng: random.Random, packet: bytes) -> bytes:
    """``packet`` with 1 to 3 small corruptions, aimed at its header block.

    Byte flips, truncation, an inserted CR, LF, SP, TAB or NUL, a deleted or replaced byte, or a repeated header
    line.
    """
    data = bytearray(packet)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not data:
            break
        span = _header_end(bytes(data))
        pos = rng.randrange(max(span, 1))
        op = rng.choice(["flip", "truncate", "insert", "insert", "delete", "replace", "repeat_line"])
        if op == "flip":
            data[pos % len(data)] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = rng.choice([b"\r", b"\n", b" ", b"\t", b"\x00"])
        elif op == "delete":
            del data[pos % len(data)]
        elif op == "replace":
            data[pos % len(data)] = rng.randrange(256)
        else:
            block = bytes(data[:span])
            starts = [i + 2 for i in range(len(block) - 1) if block[i:i + 2] == b"\r\n"]
            if len(starts) >= 2:
                i = rng.randrange(len(starts) - 1)
                line = block[starts[i]:starts[i + 1]]
                data[starts[i + 1]:starts[i + 1]] = line
    return bytes(data)


#: The variants :func:`smuggling` draws from.
SMUGGLING_KINDS = ("cl_and_te", "te_and_cl", "cl_mismatch", "cl_repeat", "cl_list", "cl_sign", "cl_huge", "cl_empty",
                   "te_twice", "te_list", "te_other", "obs_fold", "ws_before_colon", "bare_lf", "bare_lf_request_line",
                   "bare_cr", "nul_in_value", "duplicate_host", "missing_host", "http10_te", "version_other",
                   "leading_crlf", "space_in_target", "double_sp_request_line")


def smuggling(rng: random.Random, kind: str | None = None) -> bytes:
    """A request built to confuse framing or to break the strict grammar (one of :data:`SMUGGLING_KINDS`).

    Content-Length with Transfer-Encoding, differing, repeated or listed Content-Lengths, repeated or unknown codings,
    obs-fold, whitespace before a colon, bare LF or CR, NUL in a value, repeated or missing Host, and request-line
    oddities. Some are valid HTTP that other parsers read differently (``cl_repeat``, ``cl_huge``, ``http10_te``).
    """
    kind = kind or rng.choice(SMUGGLING_KINDS)
    body = b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: internal\r\n\r\n"
    host = (b"Host", b" " + rng.choice([b"api.openai.com", b"api.anthropic.com", b"gw.local"]))
    auth = (b"Authorization", b" Bearer sk-" + _token(rng, 32).encode())
    cl = (b"Content-Length", b" %d" % len(body))
    te = (b"Transfer-Encoding", b" chunked")
    method, target, version = b"POST", b"/v1/chat/completions", b"HTTP/1.1"
    headers = [host, auth]
    if kind == "cl_and_te":
        headers += [cl, te]
    elif kind == "te_and_cl":
        headers += [te, cl]
    elif kind == "cl_mismatch":
        headers += [cl, (b"Content-Length", b" %d" % (len(body) + rng.randrange(1, 9)))]
    elif kind == "cl_repeat":
        headers += [cl, (b"Content-Length", rng.choice([b" %d", b" 0%d", b" 000%d"]) % len(body))]
    elif kind == "cl_list":
        headers += [(b"Content-Length", b" %d, %d" % (len(body), len(body)))]
    elif kind == "cl_sign":
        headers += [(b"Content-Length", rng.choice([b" +%d", b" -%d", b" 0x%x", b" %d.0"]) % len(body))]
    elif kind == "cl_huge":
        headers += [(b"Content-Length", b" " + b"9" * rng.randrange(20, 40))]
    elif kind == "cl_empty":
        headers += [(b"Content-Length", rng.choice([b"", b" ", b" \t"]))]
    elif kind == "te_twice":
        headers += [te, te]
    elif kind == "te_list":
        headers += [(b"Transfer-Encoding", rng.choice([b" gzip, chunked", b" chunked, identity", b" chunked,"]))]
    elif kind == "te_other":
        headers += [(b"Transfer-Encoding", rng.choice([b" identity", b" xchunked", b" chunke", b" chunked\x0b"]))]
    elif kind == "obs_fold":
        headers += [(b"X-Note", b" first\r\n second"), cl]
    elif kind == "ws_before_colon":
        headers += [(rng.choice([b"Transfer-Encoding ", b"Transfer-Encoding\t", b"Host "]),
                     b" chunked" if rng.random() < 0.5 else b" evil"), cl]
    elif kind == "bare_lf":
        headers += [(b"X-A", b" 1\nTransfer-Encoding: chunked"), cl]
    elif kind == "bare_lf_request_line":
        return b"GET / HTTP/1.1\nHost: a\r\n\r\n"
    elif kind == "bare_cr":
        headers += [(b"X-A", b" 1\rTransfer-Encoding: chunked"), cl]
    elif kind == "nul_in_value":
        headers += [(b"X-A", b" a\x00b"), cl]
    elif kind == "duplicate_host":
        headers += [(b"Host", b" evil.example"), cl]
    elif kind == "missing_host":
        headers = [auth, cl]
    elif kind == "http10_te":
        version = b"HTTP/1.0"
        headers += [te]
    elif kind == "version_other":
        version = rng.choice([b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/1.10"])
        headers += [cl]
    elif kind == "leading_crlf":
        return b"\r\n" + build_request(method, target, headers + [cl], body)
    elif kind == "space_in_target":
        target = b"/v1/chat completions"
        headers += [cl]
    elif kind == "double_sp_request_line":
        method, target = rng.choice([(b"POST ", target), (b"POST", target + b" ")])
        headers += [cl]
    else:
        raise ValueError(f"unknown smuggling kind {kind!r}; one of {SMUGGLING_KINDS}")
    return build_request(method, target, headers, body, version)


#: The variants :func:`policy_probe` draws from.
POLICY_KINDS = ("upgrade", "connect", "absolute_form", "asterisk_form", "authority_form", "other_method",
                "lower_case_method", "trace", "allowed")


def policy_probe(rng: random.Random, kind: str | None = None) -> bytes:
    """A well-formed request that the request policy (``docs/pipeline.md``) looks at: an ``Upgrade`` line (``h2c``,
    ``websocket``, any case), ``CONNECT`` with an authority-form target, absolute-form and asterisk-form targets, a
    method outside the default allowlist (an unknown token, a lower-case one, ``TRACE``), or an allowed request with
    ``Connection: Upgrade`` but no Upgrade line (one of :data:`POLICY_KINDS`)."""
    kind = kind or rng.choice(POLICY_KINDS)
    host = rng.choice(["api.openai.com", "api.anthropic.com", "gw.local"])
    headers = [("Host", host), ("Authorization", "Bearer sk-" + _token(rng, 24))]
    method = rng.choice(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"])
    target = rng.choice(["/v1/models", "/v1/chat/completions", "/", "/v1/messages?beta=true"])
    if kind == "upgrade":
        value = rng.choice(["h2c", "websocket", "h2c, websocket", "", "HTTP/2.0"])
        headers.insert(rng.randrange(len(headers) + 1), (_case(rng, "Upgrade"), value))
        if rng.random() < 0.7:
            headers.append(("Connection", "Upgrade, HTTP2-Settings" if value == "h2c" else "Upgrade"))
        if value == "h2c":
            headers.append(("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"))
    elif kind == "connect":
        method, target = "CONNECT", f"{host}:443"
        headers[0] = ("Host", f"{host}:443")
    elif kind == "absolute_form":
        target = rng.choice(["http", "https", "HTTP"]) + f"://{host}{target}"
    elif kind == "asterisk_form":
        method, target = "OPTIONS", "*"
    elif kind == "authority_form":
        target = f"{host}:{rng.choice([80, 443, 8080])}"
    elif kind == "other_method":
        method = rng.choice(["BREW", "PROPFIND", "MKCOL", "PRI", "QUERY", "X" + _token(rng, 6, _BASE62[:26])])
    elif kind == "lower_case_method":
        method = method.lower()
    elif kind == "trace":
        method = "TRACE"
    elif kind == "allowed":
        headers.append(("Connection", rng.choice(["keep-alive", "Upgrade"])))
        headers.append((_case(rng, "Upgrade-Insecure-Requests"), "1"))
    else:
        raise ValueError(f"unknown policy kind {kind!r}; one of {POLICY_KINDS}")
    return _serialise(rng, f"{method} {target} HTTP/1.1", headers, b"")


_HTTPISH = (b"GET", b"POST", b" ", b"/", b"/v1/models", b"?", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\r", b"\n",
            b":", b": ", b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"chunked", b"Authorization",
            b"Bearer ", b"x-api-key", b"0", b"12", b"a", b"\t", b"\x00", b"\x7f", b"\xff")


def random_bytes(rng: random.Random) -> bytes:
    """Noise: uniform bytes, or a random string of HTTP-shaped pieces (which gets further into the grammar)."""
    r = rng.random()
    if r < 0.4:
        return rng.randbytes(rng.randrange(0, 200))
    pieces = b"".join(rng.choice(_HTTPISH) for _ in range(rng.randrange(1, 40)))
    if r < 0.7:
        return b"GET / HTTP/1.1\r\n" + pieces
    return pieces


def mix(rng: random.Random, n: int, weights: dict | None = None):
    """Yield ``n`` packets, drawn by ``weights`` (a dict of generator name to weight) from every generator here.

    The default is mostly :func:`realistic` traffic with a share of each kind of bad input, and of requests the
    request policy looks at (:func:`policy_probe`).
    """
    weights = weights or {"realistic": 64, "mutate": 12, "smuggling": 8, "worst_case": 2, "random_bytes": 8,
                          "policy": 6}
    names = list(weights)
    chosen = rng.choices(names, weights=[weights[k] for k in names], k=n)
    for name in chosen:
        if name == "realistic":
            yield realistic(rng)
        elif name == "mutate":
            yield mutate(rng, realistic(rng))
        elif name == "smuggling":
            yield smuggling(rng)
        elif name == "worst_case":
            yield worst_case(rng, rng.choice([4, 8, 16]), rng.randrange(64, 2048))
        elif name == "random_bytes":
            yield random_bytes(rng)
        elif name == "policy":
            yield policy_probe(rng)
        else:
            raise ValueError(f"unknown generator {name!r}")


def valid_request_strategy(extra_names=()):
    """A hypothesis strategy of valid requests (every method form, both versions, every framing the parser accepts,
    Bearer and x-api-key keys, OWS, any header-name case), for property tests of the model and the RTL.

    ``extra_names`` are header names to mix in (e.g. the configured extra slots). It imports hypothesis, a test
    dependency, only when called.
    """
    from hypothesis import strategies as st

    from ...hdl.parser.layouts import BUILTIN_NAMES, METHODS

    extras = [n for n in extra_names if n]
    vchar_no_q = st.sampled_from([c for c in range(0x21, 0x7F) if c != ord("?")])
    field_vchar = st.sampled_from([*range(0x21, 0x7F), *range(0x80, 0x100)])
    ows = st.sampled_from([b"", b" ", b"\t", b" \t", b"  "])
    word = st.lists(field_vchar, min_size=1, max_size=12).map(bytes)
    content = st.builds(lambda words, sep: sep.join(words), st.lists(word, max_size=4),
                        st.sampled_from([b" ", b"\t", b" \t "]))
    value_st = st.builds(lambda a, v, b: a + v + b, ows, content, ows)
    token = st.text(_TCHARS, min_size=1, max_size=12).map(str.encode)

    def cased(name: bytes):
        return st.sampled_from([name, name.lower(), name.upper(), name.title()])

    @st.composite
    def requests(draw):
        method = draw(st.one_of(st.sampled_from(list(METHODS)), token))
        target = b"/" + bytes(draw(st.lists(vchar_no_q, max_size=30)))
        if draw(st.booleans()):
            target += b"?" + bytes(draw(st.lists(st.sampled_from(range(0x21, 0x7F)), max_size=20)))
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
        lines = []
        if version == b"HTTP/1.1" or draw(st.booleans()):
            lines.append((draw(cased(b"Host")), draw(value_st)))
        framing = draw(st.sampled_from(["none", "cl", "cl_twice", "te"]))
        if framing.startswith("cl"):
            digits = str(draw(st.integers(0, 10**20 - 1))).encode()
            for _ in range(2 if framing == "cl_twice" else 1):
                lines.append((draw(cased(b"Content-Length")), draw(ows) + digits + draw(ows)))
        elif framing == "te":
            lines.append((draw(cased(b"Transfer-Encoding")), draw(ows) + draw(cased(b"chunked")) + draw(ows)))
        for _ in range(draw(st.integers(0, 2))):
            key = bytes(draw(st.lists(st.sampled_from(range(0x21, 0x7F)), min_size=1, max_size=20)))
            value = draw(st.one_of(st.just(b"Bearer " + key), st.just(b"bearer  " + key), value_st))
            lines.append((draw(cased(b"Authorization")), draw(ows) + value.strip(b" \t") + draw(ows)))
        for _ in range(draw(st.integers(0, 2))):
            lines.append((draw(cased(b"X-Api-Key")), draw(value_st)))
        names = st.one_of(token, st.sampled_from(extras)) if extras else token
        for name in draw(st.lists(names, max_size=6)):
            if name.lower() not in BUILTIN_NAMES:
                lines.append((name, draw(value_st)))
        lines = draw(st.permutations(lines))
        return build_request(method, target, lines, body=draw(st.binary(max_size=10)), version=version)

    return requests()
