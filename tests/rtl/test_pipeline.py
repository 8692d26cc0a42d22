"""The whole core on Verilator, through its AXI-Stream ports, against the bit-exact model.

DUT: ``WirespeedCore`` (default ``CoreParams``): the driver configures it over AXI4-Lite (``AsyncOffload``) exactly
as the model is configured (``Offload`` on ``"model"``).

- ``axis_backpressure``: lookaside requests, then Ethernet frames (inline mode), under random gaps on ``s_axis`` and
  random backpressure on ``m_axis`` and ``m_verdict``. Every packet leaves ``m_axis`` unchanged (no beat lost or
  duplicated), its ``tlast`` beat carries its verdict in ``tuser``, ``m_verdict`` carries the same records in order,
  and each record equals the model's for that packet (all fields but ``latency_cycles``, which backpressure
  stretches; the plans are generous, so time does not change a decision). The request policy's registers are
  random (each check allow, reject with a random status, or punt; a random method allowlist), and a share of the
  packets are policy probes (Upgrade lines, CONNECT, absolute-, authority- and asterisk-form, other methods).
- ``cycle_counts``: valid and ready held high: one beat per cycle end to end, and each verdict exactly
  ``DECISION_LATENCY_CYCLES`` (≤ 16) cycles after the beat holding the last header byte (lookaside), at most 16
  inline.
- ``rss_vectors``: frames carrying the Microsoft RSS verification tuples (IPv4 and IPv6 with TCP) route with the
  published Toeplitz hashes, through the front end.
- ``punt_reasons``: inline, a frame for every reason the core punts (each front-end reason, a header block that
  spans segments, one over the limit, an unknown tenant under ``unknown_policy = punt``) gets that reason, on
  ``m_verdict`` and through ``classify_frame``, and leaves ``m_axis`` unchanged.
- ``bad_tkeep``: beats with a hole in ``tkeep``, or partial before ``tlast``, punt their packet (``bad_tkeep``)
  and pass unchanged; the packets around them are unaffected.
- ``reset_mid_packet``: a reset in the middle of a frame; afterwards the core, reconfigured, passes traffic
  correctly.
"""

import os
import random

import pytest

from wirespeed.hdl.id.id_block import CoreParams
from wirespeed.hdl.core.top import WirespeedCore
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("PIPELINE_SEED", "20261125"))


def _run(test, **parameters):
    # design_key: one elaboration for the six testcases (and the one the sim transport's core_verilog makes).
    run_cocotb(lambda: WirespeedCore(CoreParams()), toplevel="wirespeed_core", test_file=__file__, testcase=test,
               parameters={"seed": SEED, **parameters}, design_key=CoreParams())


@pytest.mark.rtl
@pytest.mark.parametrize("inline", [False, True], ids=["lookaside", "inline"])
def test_pipeline_axis_backpressure(inline):
    _run("axis_backpressure", inline=inline, packets=600)


@pytest.mark.rtl
def test_pipeline_cycle_counts():
    _run("cycle_counts", packets=300)


@pytest.mark.rtl
def test_pipeline_rss_vectors():
    _run("rss_vectors")


@pytest.mark.rtl
def test_pipeline_every_punt_reason_inline():
    _run("punt_reasons")


@pytest.mark.rtl
def test_pipeline_bad_tkeep():
    _run("bad_tkeep")


@pytest.mark.rtl
def test_pipeline_reset_mid_packet():
    _run("reset_mid_packet", packets=100)


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    from cocotb.triggers import ClockCycles
    from support import testbench
    from support.streams import AxisBeat, StreamSink, StreamSource, random_pauses

    from wirespeed.hdl.pipeline.offload_pipeline import DECISION_LATENCY_CYCLES
    from wirespeed.host.tools import traffic
    from wirespeed.host.models.frontend import (FrontEndConfig, build_frame, configure_ops, ethernet_frame, ipv4_packet,
                                                ipv6_packet, random_frame, tcp_segment)
    from wirespeed.host.transports.model import ModelTransport
    from wirespeed.host.driver.offload import AsyncOffload, Offload
    from wirespeed.host.driver.registers import arun, run
    from wirespeed.host.rss import MS_RSS_KEY, RSS_VECTORS
    from wirespeed.host.driver.verdict import Verdict
    from wirespeed.host.driver.policy import ACTIONS, CHECKS, METHOD_NAMES
    from wirespeed.host.models.pipeline import VerdictRecord

    W = 8

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, seed_env="PIPELINE_SEED")
            self.source = StreamSource(self, "s_axis", axis=True)
            self.sink = StreamSink(self, "m_axis", axis=True)
            self.vsink = StreamSink(self, "m_verdict", axis=True)
            self.model = Offload(ModelTransport(CoreParams()), "model", clock="manual")

        async def configure(self, rng, inline: bool, ports=(80, 8080), random_policy: bool = False):
            """The same configuration on the RTL (AsyncOffload) and the model (Offload); returns known keys.
            ``random_policy``: random request-policy registers (else the defaults)."""
            dev = await AsyncOffload.open(self.transport)
            key = bytes(rng.getrandbits(8) for _ in range(40))
            await dev.routes.set_hash_key(key)
            self.model.routes.set_hash_key(key)
            for target in (dev, self.model):
                calls = [("pools", "set", (0, list(range(20, 28))), {"size": 509}),
                         ("pools", "set", (1, [7, 8, 9]), {"size": 251}),
                         ("pools", "set", (2, []), {"size": 251}),
                         ("routes", "default", (0,), {"key": "tenant"}),
                         ("routes", "add", ("/v1/messages", 1), {"key": "header:x-session-id"}),
                         ("routes", "add", ("/v1/embeddings", 2), {}),
                         ("routes", "add", ("/v1/chat/", 0), {"key": "l4"})]
                for face, method, args, kwargs in calls:
                    result = getattr(getattr(target, face), method)(*args, **kwargs)
                    if target is dev:
                        await result
            keys = ["sk-" + "%040x" % rng.getrandbits(160) for _ in range(12)]
            for k in keys:
                rates = dict(requests_per_s=1_000_000, burst=1_000_000)                 # tokens unlimited
                await dev.tenants.add(k, **rates)
                self.model.tenants.add(k, **rates)
                assert dev.tenants.slot(k) == self.model.tenants.slot(k)     # the same placement
            await dev.tenants.configure(cost_source="content_length")
            self.model.tenants.configure(cost_source="content_length")
            config = FrontEndConfig.serving(*ports)
            await arun(configure_ops(dev.core.regs, config, "frontend."), self.transport)
            run(configure_ops(self.model.core.regs, config, "frontend."), self.model.transport)
            await dev.write_register("pipeline.ctrl.axis_inline", int(inline))
            if random_policy:
                for check in CHECKS:
                    action, status = rng.choice(ACTIONS), rng.randrange(400, 600)
                    await dev.policy.set(check, action, status)
                    self.model.policy.set(check, action, status)
                methods = [name for name in METHOD_NAMES if rng.random() < 0.7]
                await dev.policy.allow_methods(methods)
                self.model.policy.allow_methods(methods)
                assert await dev.policy.get() == self.model.policy.get()
            self.dev = dev
            return keys

        def expect(self, packet: bytes, inline: bool) -> VerdictRecord:
            core = self.model.transport.model
            return core.classify(packet, inline, core.cycles, mmio=False).record

    def packets(rng, keys, n, inline):
        out = []
        for _ in range(n):
            r = rng.random()
            if r < 0.7:
                req = traffic.realistic(rng, api_key=rng.choice(keys) if rng.random() < 0.8 else None,
                                        session_id=f"s{rng.randrange(9)}" if rng.random() < 0.3 else None)
            elif r < 0.8:
                req = traffic.policy_probe(rng)
            else:
                req = next(traffic.mix(rng, 1))
            req = req or b"x"             # AXI-S frames carry at least one byte
            out.append(random_frame(rng, req) if inline else req)
        return out

    def assert_same_verdict(got, want, what):
        """Every field but ``latency_cycles`` (which backpressure and interleaving stretch); records or Verdicts."""
        got = (Verdict.from_record(got) if isinstance(got, VerdictRecord) else got).as_dict()
        want = (Verdict.from_record(want) if isinstance(want, VerdictRecord) else want).as_dict()
        got["latency_cycles"] = want["latency_cycles"] = None
        assert got == want, f"{what} (seed {param('seed')}):\n rtl   {got}\n model {want}"

    def record_of(packet) -> VerdictRecord:
        """The record of one ``m_verdict`` transfer (``tdata``, through the layout's record)."""
        return VerdictRecord.from_bits(int.from_bytes(packet.data, "little"))

    def pause(rng, p):
        """Pauses with probability ``p`` from their own generator, so the traffic drawn from ``rng`` afterwards does
        not depend on how many cycles pass."""
        return random_pauses(random.Random(rng.getrandbits(64)), p)

    @cocotb.test()
    async def axis_backpressure(dut):
        rng = random.Random(param("seed"))
        inline = param("inline")
        tb = TB(dut)
        await tb.reset()
        keys = await tb.configure(rng, inline, random_policy=True)
        pkts = packets(rng, keys, param("packets"), inline)
        tb.source.set_pause_generator(pause(rng, 0.3))
        tb.sink.set_pause_generator(pause(rng, 0.4))
        tb.vsink.set_pause_generator(pause(rng, 0.5))
        for p in pkts:
            tb.source.send_packet(p)
        # The MMIO submit window meanwhile: the arbiter interleaves whole packets from both inputs.
        mmio_reqs = [traffic.realistic(rng, api_key=rng.choice(keys)) for _ in range(30)]
        mmio = await tb.dev.classify_many(mmio_reqs)
        for i, (req, got) in enumerate(zip(mmio_reqs, mmio)):
            # Decoded by the model's driver, so that the tenant is its id there, as on the RTL's.
            want = tb.model._verdicts([tb.model.transport.model.classify(req, False, 0).record])[0]
            assert_same_verdict(got, want, f"MMIO request {i}")
        for i, p in enumerate(pkts):
            out = await tb.sink.recv_packet()
            verdict = await tb.vsink.recv_packet()
            assert out.data == p, f"packet {i} changed on m_axis"
            tuser = [beat.value.tuser for beat in out.beats]
            rec = record_of(verdict)
            assert VerdictRecord.from_bits(tuser[-1]) == rec, f"packet {i}: tuser and m_verdict differ"
            assert all(u == 0 for u in tuser[:-1]), f"packet {i}: tuser set before the last beat"
            assert_same_verdict(rec, tb.expect(p, inline), f"packet {i} {p[:80]!r}")
        await ClockCycles(dut.clk, 50)
        assert tb.sink.empty() and tb.vsink.empty(), "extra output"
        stats = await tb.dev.stats()
        assert stats["events"] == len(pkts) + len(mmio_reqs)

    @cocotb.test()
    async def cycle_counts(dut):
        rng = random.Random(param("seed"))
        tb = TB(dut)
        await tb.reset()
        for inline in (False, True):
            keys = await tb.configure(rng, inline)
            pkts = packets(rng, keys, param("packets"), inline)
            # Valid held high, one beat per cycle, back to back; every output always ready.
            source = tb.source
            source.accepted.clear()
            first_beat, n_beats = [], 0             # each packet's first beat, an index into source.accepted
            for p in pkts:
                first_beat.append(n_beats)
                n_beats += source.send_packet(p)
            await tb.wait_until(lambda: len(tb.vsink) >= len(pkts) and source.idle,
                                what=f"verdicts for {len(pkts)} packets (inline={inline})")
            stalls = sum(beat.cycle - beat.offered for beat in source.accepted)
            assert stalls == 0, f"s_axis stalled {stalls} times with every output ready (inline={inline})"
            verdict_cycles = [(await tb.vsink.recv_packet()).last_cycle for _ in pkts]
            # Drain the egress copy.
            for _ in pkts:
                await tb.sink.recv_packet()
            worst = 0
            for pi, p in enumerate(pkts):
                core = tb.model.transport.model
                outcome = core.classify(p, inline, 0, mmio=False)
                payload_stop = outcome.descriptor.stop_index(
                    len(p) if not inline else max(1, len(p)))
                if inline:
                    if outcome.info.punt:
                        continue
                    stop_byte = outcome.info.payload_offset + min(payload_stop, len(p) - 1 -
                                                                   outcome.info.payload_offset)
                else:
                    stop_byte = payload_stop
                stop_beat = min(stop_byte // W, -(-len(p) // W) - 1)
                delay = verdict_cycles[pi] - source.accepted[first_beat[pi] + stop_beat].cycle
                worst = max(worst, delay)
                if not inline:
                    assert delay == DECISION_LATENCY_CYCLES, (pi, delay, p)
                # Inline, the realigner may hold the payload's final partial beat one cycle (docs/frontend.md).
                assert delay <= DECISION_LATENCY_CYCLES + 1 <= 16, (pi, delay, inline, p)
            dut._log.info("inline=%s: worst verdict delay after the stop beat: %d cycles", inline, worst)

    @cocotb.test()
    async def rss_vectors(dut):
        tb = TB(dut)
        await tb.reset()
        dev = await AsyncOffload.open(tb.transport)
        await dev.routes.set_hash_key(MS_RSS_KEY)
        await dev.pools.set(0, [1, 2, 3], size=251)
        await dev.routes.default(0, key="l4")
        ports = sorted({v["dport"] for v in RSS_VECTORS})
        await arun(configure_ops(dev.core.regs, FrontEndConfig.serving(*ports), "frontend."), tb.transport)
        await dev.write_register("pipeline.ctrl.axis_inline", 1)
        await dev.tenants.configure(unknown_policy="punt")
        request = b"GET /v1/models HTTP/1.1\r\nHost: a\r\nx-api-key: k\r\n\r\n"
        for v in RSS_VECTORS:
            frame = build_frame(request, v6=v["family"] == 6, src=v["src"], dst=v["dst"], sport=v["sport"],
                                dport=v["dport"])
            tb.source.send_packet(frame)
            rec = record_of(await tb.vsink.recv_packet())
            await tb.sink.recv_packet()
            verdict = Verdict.from_record(rec)
            assert "l4_valid" in verdict.flags, verdict
            assert verdict.hash == v["with_ports"], (v, hex(verdict.hash))
            # Lookaside through the submit window, the same frame: the same hash.
            assert (await dev.classify_frame(frame)).hash == v["with_ports"]

    @cocotb.test()
    async def reset_mid_packet(dut):
        rng = random.Random(param("seed"))
        tb = TB(dut)
        await tb.reset()
        keys = await tb.configure(rng, True)
        frame = build_frame(traffic.realistic(rng, api_key=keys[0]))
        # Half a frame (no tlast), then reset.
        half = [AxisBeat(int.from_bytes(frame[i:i + W], "little"), (1 << W) - 1, False)
                for i in range(0, len(frame) // 2, W)]
        tb.source.send_many(half)
        await ClockCycles(dut.clk, len(half))
        await tb.reset()
        await ClockCycles(dut.clk, 20)
        assert tb.vsink.empty(), "a verdict for the interrupted frame"
        tb.sink.clear()
        tb.model = Offload(ModelTransport(CoreParams()), "model", clock="manual")
        keys = await tb.configure(rng, True)
        pkts = packets(rng, keys, param("packets"), True)
        for p in pkts:
            tb.source.send_packet(p)
        for i, p in enumerate(pkts):
            out = await tb.sink.recv_packet()
            rec = record_of(await tb.vsink.recv_packet())
            assert out.data == p, f"packet {i} after the reset"
            assert_same_verdict(rec, tb.expect(p, True), f"packet {i} after the reset")

    @cocotb.test()
    async def bad_tkeep(dut):
        rng = random.Random(param("seed"))
        tb = TB(dut)
        await tb.reset()
        keys = await tb.configure(rng, False)
        reqs = [f"GET /v1/models/{i} HTTP/1.1\r\nHost: api\r\nx-api-key: {keys[0]}\r\n\r\n".encode()
                for i in range(8)]
        # packet -> (beat index, tkeep): a hole mid-packet; a partial beat before tlast; a hole in the last beat
        # (the header ends in that beat, so the flag is there before the verdict).
        bad = {1: (1, 0b11110111), 3: (2, 0b00001111), 5: (-1, 0b101)}
        sent = []
        for pi, p in enumerate(reqs):
            chunks = [p[i:i + W] for i in range(0, len(p), W)]
            kept = b""
            for ci, c in enumerate(chunks):
                keep = (1 << len(c)) - 1
                if pi in bad and ci == bad[pi][0] % len(chunks):
                    keep = bad[pi][1] & ((1 << len(c)) - 1)
                kept += bytes(b for k, b in enumerate(c) if keep >> k & 1)
                tb.source.send(AxisBeat(int.from_bytes(c.ljust(W, b"\0"), "little"), keep, ci == len(chunks) - 1))
            sent.append(kept)
        for pi, kept in enumerate(sent):
            out = await tb.sink.recv_packet()
            v = Verdict.from_record(record_of(await tb.vsink.recv_packet()))
            assert out.data == kept, f"packet {pi} changed on m_axis"
            if pi in bad:
                assert (v.action, v.reason) == ("punt", "bad_tkeep") and "bad_tkeep" in v.flags, (pi, v)
            else:
                assert (v.action, v.reason) == ("forward", "ok"), (pi, v)
        stats = await tb.dev.stats()
        assert stats["errors"]["bad_tkeep"] == len(bad) and stats["reasons"]["bad_tkeep"] == len(bad)

    @cocotb.test()
    async def punt_reasons(dut):
        rng = random.Random(param("seed"))
        tb = TB(dut)
        await tb.reset()
        keys = await tb.configure(rng, True)
        req = f"GET /v1/models HTTP/1.1\r\nHost: api\r\nx-api-key: {keys[0]}\r\n\r\n".encode()
        seg = tcp_segment(40000, 80, req)
        src, dst = "192.0.2.1", "198.51.100.7"
        cases = [
            ("not_ip", ethernet_frame(b"\0" * 46, ethertype=0x0806)),
            ("not_tcp", ethernet_frame(ipv4_packet(src, dst, b"\0" * 8 + req, protocol=17))),
            ("port_not_served", build_frame(req, dport=443)),
            ("ipv4_fragment", ethernet_frame(ipv4_packet(src, dst, seg, mf=True))),
            ("ipv6_ext_header", ethernet_frame(ipv6_packet("2001:db8::1", "2001:db8::2", seg, next_header=0),
                                               ethertype=0x86DD)),
            ("bad_l3_l4_header", ethernet_frame(ipv4_packet(src, dst, seg, ihl=4))),
            ("truncated_frame", ethernet_frame(ipv4_packet(src, dst, seg))[:14 + 20 + 10]),
            ("no_payload", build_frame(b"")),
            ("header_spans_segments", build_frame(req[:30])),
            ("unknown_tenant", build_frame(req.replace(keys[0].encode(), b"sk-nobody"))),
            ("ok", build_frame(req, v6=True, dport=8080)),
        ]
        await tb.dev.tenants.configure(unknown_policy="punt")
        for name, frame in cases:
            tb.source.send_packet(frame)
            out = await tb.sink.recv_packet()
            v = Verdict.from_record(record_of(await tb.vsink.recv_packet()))
            assert out.data == frame, name
            assert v.reason == name and v.action == ("forward" if name == "ok" else "punt"), (name, v)
            assert (await tb.dev.classify_frame(frame)).reason == name, name
        # Over the header limit: inline, that is a punt too.
        await tb.dev.write_register("parser.limits.max_header_bytes", 32)
        frame = build_frame(req)
        tb.source.send_packet(frame)
        await tb.sink.recv_packet()
        v = Verdict.from_record(record_of(await tb.vsink.recv_packet()))
        assert (v.action, v.reason, v.status) == ("punt", "header_too_large", 0), v
        # The same request in lookaside is a 431.
        v = await tb.dev.classify(req)
        assert (v.action, v.reason, v.status) == ("reject", "header_too_large", 431), v
