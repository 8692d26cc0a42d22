"""``Offload.classify*``, ``stats`` and ``latency_histogram`` on the ``"model"`` URI: results, errors and threads.

The verdict rules themselves are checked end to end against the RTL (tests/rtl/test_pipeline*.py); here the driver's
contract: what it sends, the named errors it raises before touching the device, and that it is safe to share
between threads.
"""

import random
import threading

import pytest

import wirespeed
from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.host.tools import traffic
from wirespeed.host.errors import ConfigError, TransportError
from wirespeed.host.models.frontend import build_frame
from wirespeed.host.driver.submit import MAX_POLLS, bytes_to_send
from wirespeed.host.errors import FeatureMissing
from wirespeed.host.driver.verdict import Verdict

KEYS = [f"sk-test-{i:03d}" for i in range(8)]


def _configure(dev):
    dev.set_hash_key(bytes(range(40)))
    dev.pools.set(0, [1, 2, 3, 4], size=251)
    dev.routes.default(0, key="tenant")
    for key in KEYS:
        dev.tenants.add(key, requests_per_s=1_000_000, burst=1_000_000)       # tokens unlimited


def test_classify_forwards_a_known_tenant_and_names_every_field():
    with wirespeed.open("model", clock="manual") as dev:
        _configure(dev)
        req = traffic.realistic(random.Random(1), api_key=KEYS[0])
        v = dev.classify(req)
        assert isinstance(v, Verdict)
        assert (v.action, v.status, v.reason) == ("forward", 200, "ok")
        assert v.tenant is not None and v.pool == 0 and v.backend in (1, 2, 3, 4) and v.retry_after_s is None
        assert {"key_present", "tenant_found", "complete"} <= v.flags and "mmio" not in v.flags     # the stream
        assert 0 < v.latency_cycles < 1000 and 0 <= v.hash < 2**32
        assert dev.classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").status == 401      # no key, policy reject
        bad = dev.classify(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert (bad.action, bad.status, bad.reason) == ("reject", 400, "cl_and_te")
        assert "cl_and_te" in bad.flags and bad.tenant is None and bad.backend is None


def test_classify_many_equals_one_by_one():
    rng = random.Random(2)
    reqs = [traffic.realistic(rng, api_key=rng.choice(KEYS)) for _ in range(100)] + list(traffic.mix(rng, 100))
    with wirespeed.open("model", clock="manual") as a, wirespeed.open("model", clock="manual") as b:
        _configure(a)
        _configure(b)
        many = a.classify_many(reqs)
        single = [b.classify(r) for r in reqs]
    assert many == single


def test_only_the_header_block_is_sent():
    req = b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    assert bytes_to_send(req, 8192) == req[:-5]
    assert bytes_to_send(req, 10) == req[:11]                  # the byte at index 10 raises header_too_large
    assert bytes_to_send(b"GET / HTTP/1.1\r\n", 8192) == b"GET / HTTP/1.1\r\n"
    with wirespeed.open("model", clock="manual") as dev:
        _configure(dev)
        body = b"x" * 100_000                                  # far bigger than the submit window: not sent
        v = dev.classify(b"POST / HTTP/1.1\r\nHost: a\r\nx-api-key: " + KEYS[1].encode()
                         + b"\r\nContent-Length: 100000\r\n\r\n" + body)
        assert v.action == "forward"
        big = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"x-pad: " + b"a" * 9000 + b"\r\n\r\n"
        assert dev.classify(big).status == 431                 # past the default limit of 8192


def test_inline_frame_through_the_front_end():
    with wirespeed.open("model", clock="manual") as dev:
        _configure(dev)
        req = traffic.realistic(random.Random(3), api_key=KEYS[2])
        v = dev.classify_frame(build_frame(req, v6=True, dport=8080))
        assert v.action == "forward" and {"inline", "l4_valid"} <= v.flags
        assert dev.classify_frame(build_frame(req, dport=443)).reason == "port_not_served"
        assert dev.classify_frame(b"\xff" * 64).reason == "not_ip"


def test_errors_are_named_and_raised_before_any_write():
    with wirespeed.open("model", clock="manual") as dev:
        _configure(dev)
        before = dev.read_register("pipeline.submitted")
        with pytest.raises(ConfigError) as e:
            dev.classify_many([b"GET / HTTP/1.1\r\n\r\n", "not bytes"])
        assert e.value.field == "requests[1]"
        with pytest.raises(ConfigError, match="submit window"):
            dev.classify_frame(b"\0" * 20_000)
        assert dev.read_register("pipeline.submitted") == before
    with wirespeed.open("model", params=CoreParams(features=frozenset({"limiter"})), clock="manual") as dev:
        with pytest.raises(FeatureMissing):
            dev.classify(b"GET / HTTP/1.1\r\n\r\n")


def test_a_missing_verdict_raises_instead_of_hanging(record_bus):
    from wirespeed.host.transports.model import ModelTransport
    from wirespeed.host.driver.offload import Offload
    inner = ModelTransport()
    status = inner.model.regmap["pipeline.status"].address
    # The status register never counts a result: a stalled pipeline.
    dev = Offload(record_bus(inner, clear_bits={status: 0xFFFF}), "hiding", clock="manual")
    with pytest.raises(TransportError, match=f"no verdict after {MAX_POLLS}"):
        dev.classify(b"GET / HTTP/1.1\r\n\r\n")


def test_the_mmio_window_gives_the_same_verdicts_but_its_flag():
    rng = random.Random(5)
    reqs = [traffic.realistic(rng, api_key=rng.choice(KEYS)) for _ in range(50)] + list(traffic.mix(rng, 50))
    with wirespeed.open("model", clock="manual") as a, wirespeed.open("model", submit="mmio", clock="manual") as b:
        _configure(a)
        _configure(b)
        stream, mmio = a.classify_many(reqs), b.classify_many(reqs)
    assert all("mmio" in v.flags for v in mmio) and not any("mmio" in v.flags for v in stream)
    strip = [(v.action, v.status, v.reason, v.tenant, v.pool, v.backend, v.hash, v.flags - {"mmio"}) for v in stream]
    assert strip == [(v.action, v.status, v.reason, v.tenant, v.pool, v.backend, v.hash, v.flags - {"mmio"})
                     for v in mmio]
    with pytest.raises(ConfigError, match="submit"):
        wirespeed.open("model", submit="dma")


def test_results_left_by_another_driver_are_reported():
    with wirespeed.open("model", submit="mmio", clock="manual") as dev:
        dev.write_register("pipeline.submit_data", int.from_bytes(b"GET ", "little"))
        dev.write_register("pipeline.doorbell", 4)
        with pytest.raises(TransportError, match="already wait"):
            dev.classify(b"GET / HTTP/1.1\r\n\r\n")


def test_threads_share_one_offload():
    rng = random.Random(4)
    per_thread = [[traffic.realistic(rng, api_key=rng.choice(KEYS)) for _ in range(60)] for _ in range(4)]
    with wirespeed.open("model", clock="manual") as ref:
        _configure(ref)
        expected = [[ref.classify(r) for r in reqs] for reqs in per_thread]
    with wirespeed.open("model", clock="manual") as dev:
        _configure(dev)
        results, errors = [None] * 4, []

        def worker(i):
            try:
                out = []
                for k in range(0, 60, 7):
                    out += dev.classify_many(per_thread[i][k:k + 7])
                    dev.stats()
                results[i] = out
            except Exception as e:          # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        # Generous plans: the order requests reach the limiter does not change a verdict, and an isolated packet's
        # latency depends only on its bytes.
        assert results == expected
        assert dev.stats()["events"] == 240


def test_stats_and_histogram_count_every_verdict():
    with wirespeed.open("model", clock="manual") as dev:
        _configure(dev)
        rng = random.Random(5)
        verdicts = dev.classify_many([traffic.realistic(rng, api_key=KEYS[0]) for _ in range(30)]
                                     + [b"GET / HTTP/1.1\nHost: a\r\n\r\n"] * 5)
        stats = dev.stats(clear=True)
        assert stats["events"] == 35
        assert stats["actions"] == {"forward": 30, "reject": 5, "punt": 0}
        assert stats["reasons"]["ok"] == 30 and stats["reasons"]["bare_cr_lf"] == 5
        assert stats["errors"]["bare_cr_lf"] == 5
        hist = dev.latency_histogram()
        assert hist.count == 0                                  # cleared with the snapshot above
        assert stats["latency"]["max"] == max(v.latency_cycles for v in verdicts)
        assert stats["latency"]["sum"] == sum(v.latency_cycles for v in verdicts)


def test_fingerprint_key_is_secret_and_set_before_tenants():
    with wirespeed.open("model", clock="manual") as dev:
        dev.set_fingerprint_key(b"gateway secret")
        _configure(dev)
        fp = dev.tenants.fingerprint(KEYS[0])
        v = dev.classify(traffic.realistic(random.Random(6), api_key=KEYS[0]))
        assert v.action == "forward" and "tenant_found" in v.flags
        with pytest.raises(ConfigError, match="before adding tenants"):
            dev.set_fingerprint_key(b"another")
    with wirespeed.open("model", clock="manual") as plain:
        assert plain.tenants.fingerprint(KEYS[0]) != fp


def test_prepare_cuts_every_request_as_bytes_to_send():
    # prepare() inlines bytes_to_send (a bounded find): the same prefix for a header end before, at and past the
    # limit, none, cut requests, and bytes-like inputs.
    rng = random.Random(4)
    requests = []
    for size in range(170, 210):                            # the header end's last byte around index 200
        head = b"GET / HTTP/1.1\r\nx: " + b"a" * (size - 19)
        for tail in (b"\r\n\r\n", b"\r\n\r\nbody\r\n\r\n", b"\r\n", b"", b"\r\n\r"):
            requests.append(head + tail)
    requests += [r[:rng.randrange(len(r) + 1)] for r in requests[:50]]
    items = [(rng.choice([bytes, bytearray, memoryview])(r), False) for r in requests] + [(b"frame", True)]
    with wirespeed.open("model") as dev:
        dev.write_register("parser.limits.max_header_bytes", 200)
        prepared = dev._run(dev._submit_core().prepare(items))
    assert prepared == [(bytes_to_send(r, 200), False) for r in requests] + [(b"frame", True)]
    assert all(type(data) is bytes for data, _ in prepared)


def test_prepare_requests_is_prepare_without_the_tuples():
    # classify_many's path (prepare_requests): the same cuts, the same register read, the same error on the same
    # request, for bytes only and for a mix of bytes-like inputs.
    rng = random.Random(5)
    requests = [b"GET / HTTP/1.1\r\nx: " + b"a" * rng.randrange(150, 260) + rng.choice([b"\r\n\r\nbody", b"\r\n", b""])
                for _ in range(200)]
    mixed = [rng.choice([bytes, bytearray, memoryview])(r) for r in requests]
    with wirespeed.open("model") as dev:
        dev.write_register("parser.limits.max_header_bytes", 200)
        core = dev._submit_core()
        for batch in (requests, mixed, []):
            assert dev._run(core.prepare_requests(batch)) == [d for d, _ in dev._run(core.prepare(
                [(r, False) for r in batch]))]
        dev.write_register("parser.limits.max_header_bytes", 0xFFFF)
        limit = min(core.window_bytes - core.width, 0xFFFF)
        big = requests[:7] + [b"GET / HTTP/1.1\r\nx: " + b"a" * limit + b"\r\n\r\n"] + requests[7:]
        for batch in (big, [bytearray(r) for r in big]):
            with pytest.raises(ConfigError, match=r"requests\[7\].*fit the submit window"):
                dev._run(core.prepare_requests(batch))
            with pytest.raises(ConfigError, match=r"requests\[7\].*fit the submit window"):
                dev.classify_many(batch)


def test_decode_records_decodes_a_repeated_record_once():
    from wirespeed.host.driver.verdict import decode_records
    from wirespeed.host.models.pipeline import VerdictRecord
    a = VerdictRecord(tenant_valid=True, tenant=3, pool_valid=True, pool=1, backend_valid=True, backend=7, flags=5)
    b = VerdictRecord(tenant_valid=True, tenant=3, pool_valid=True, pool=1, backend_valid=True, backend=7, flags=5)
    label, tenant = (lambda pool, backend: f"{pool}:{backend}"), (lambda slot: slot + 100)
    got = decode_records([a, b, a], label, tenant)
    assert got == [Verdict.from_record(r, label, tenant) for r in (a, b, a)]
    assert got[0] is got[2] and got[0].backend == "1:7" and got[0].tenant == 103


def test_verdict_fields_are_in_from_records_order():
    # from_record passes the fields positionally: each must land in its own field, with its own value.
    import dataclasses
    from wirespeed.host.models.pipeline import VerdictRecord
    from wirespeed.hdl.pipeline.layouts import Action, Reason
    assert [f.name for f in dataclasses.fields(Verdict)] == ["action", "status", "reason", "tenant", "pool", "backend",
                                                             "retry_after_s", "flags", "hash", "latency_cycles"]
    rec = VerdictRecord(Action.REJECT, 429, Reason.RATE_LIMITED, True, 9, True, 2, True, 5, True, 1_500_000_000, 0b11,
                        0xDEADBEEF, 77)
    v = Verdict.from_record(rec, lambda pool, backend: f"{pool}/{backend}", lambda slot: slot * 10)
    assert v.as_dict() == {"action": "reject", "status": 429, "reason": "rate_limited", "tenant": 90, "pool": 2,
                           "backend": "2/5", "retry_after_s": 1.5, "flags": sorted(v.flags), "hash": 0xDEADBEEF,
                           "latency_cycles": 77}
    assert len(v.flags) == 2
    off = VerdictRecord(Action.FORWARD, 200, Reason.OK, False, 9, False, 2, False, 5, False, 7, 0, 1, 2)
    assert (Verdict.from_record(off).tenant, Verdict.from_record(off).pool, Verdict.from_record(off).backend,
            Verdict.from_record(off).retry_after_s) == (None, None, None, None)
