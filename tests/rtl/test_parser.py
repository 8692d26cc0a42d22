"""HeaderParser RTL on Verilator against the bit-exact model (wirespeed.host.models.parser).

DUT: ``Standalone(HeaderParser)`` (AXI4-Lite target + the parser's generated register bank + HeaderParser), so every
configuration (key, prefix table, extra names, limit) goes through the real registers. The testbench drives the packet
stream with random valid gaps, takes the outputs with random ready, and scoreboards:

- every descriptor, bit for bit, against ``parse()`` with the same configuration;
- every pass-through byte and packet boundary against the input;
- exactly one descriptor per packet;
- the cycle counts: one beat per cycle with valid and ready held high, and the descriptor exactly
  ``DESC_LATENCY_CYCLES`` (≤ 4) cycles after the beat holding the stop byte.
"""

import json
import os
import random

import pytest
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.parser.header_parser import HeaderParser, parser_regmap
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("PARSER_SEED", "20261125"))
HYPOTHESIS_EXTRAS = [b"x-session-id", b"x-model"]


def _run(width, test, **parameters):
    run_cocotb(Standalone(HeaderParser(width), parser_regmap()), toplevel=f"parser_harness_w{width}",
               test_file=__file__, testcase=test, parameters={"width": width, "seed": SEED, **parameters})


def _run_file(width, test, packets, tmp_path):
    """Run ``test`` on ``packets``, handed to the simulator in a file (``packets_file``)."""
    path = tmp_path / "packets.json"
    path.write_text(json.dumps([p.hex() for p in packets]))
    _run(width, test, packets_file=str(path))


@pytest.mark.rtl
@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("backpressure", [False, True], ids=["full-rate", "backpressure"])
def test_parser_vs_model(width, backpressure):
    # Three batches: the fixed configuration, a random one (duplicate prefixes, extra slot 0 numeric ...), fixed.
    _run(width, "scoreboard_mix", backpressure=backpressure, packets=1500, batch=500)


@pytest.mark.rtl
@pytest.mark.parametrize("width", [4, 8, 16])
def test_parser_cycle_counts(width):
    _run(width, "cycle_counts", packets=300)


@pytest.mark.rtl
@pytest.mark.parametrize("width", [4, 8, 16])
def test_parser_hypothesis_requests(width, tmp_path):
    """Valid requests drawn by hypothesis (derandomized), through the RTL under backpressure."""
    from hypothesis import HealthCheck, given, settings

    from wirespeed.host.tools import traffic
    packets = []

    @settings(derandomize=True, max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(traffic.valid_request_strategy(extra_names=HYPOTHESIS_EXTRAS))
    def collect(packet):
        packets.append(packet)

    collect()
    _run_file(width, "scoreboard_file", packets, tmp_path)


def number_requests(rng: random.Random, n: int) -> list[bytes]:
    """Requests whose Content-Length and X-Cost (extra slot 0, read as a number) sit around the edges of the
    parser's number handling: 2^64 − 1 / 2^64 (saturation and ``cl_overflow``), 20 digits (the longest accepted) with
    and without leading zeros, 21 digits, digits sharing a long prefix with 2^64, and repeated Content-Lengths that
    agree, differ in spelling only, or both overflow with different digits."""
    two64 = str(1 << 64)

    def number() -> str:
        kind = rng.randrange(7)
        if kind == 0:
            return str((1 << 64) + rng.randrange(-3, 4))
        if kind == 1:   # the first k digits of 2^64, then any digits: the overflow test digit by digit
            k = rng.randrange(20)
            return (two64[:k] + "".join(rng.choice("0123456789") for _ in range(20 - k)))[:20]
        if kind == 2:
            return str(rng.randrange(10 ** 20)).zfill(20)
        if kind == 3:
            v = str(rng.randrange(1 << 64))
            return v.zfill(rng.randrange(len(v), 22))
        if kind == 4:
            return rng.choice(["0", "9" * 19, "9" * 20, "9" * 21, "1" + "0" * 19, "0" * 20, "0" * 19 + "1",
                               "18446744073709551615", "18446744073709551616", "1" + "0" * 20])
        if kind == 5:
            return str(rng.randrange(1, 10 ** rng.randrange(1, 21)))
        return str(rng.randrange(10 ** 21))

    def respell(v: str) -> str:
        return rng.choice([v, "0" + v, v.lstrip("0") or "0", number()])

    packets = []
    for _ in range(n):
        lines = [b"POST /v1/chat/completions HTTP/1.1", b"Host: api.example"]
        cl = number()
        if rng.random() < 0.8:
            lines.append(b"Content-Length: " + cl.encode())
        if rng.random() < 0.35:
            lines.append(b"Content-Length:" + rng.choice([b" ", b"", b"\t"]) + respell(cl).encode())
        if rng.random() < 0.7:
            lines.append(b"X-Cost: " + number().encode() + rng.choice([b"", b" ", b"x"]))
        rng.shuffle(lines[1:])
        packets.append(b"\r\n".join(lines) + b"\r\n\r\n")
    return packets


@pytest.mark.rtl
@pytest.mark.parametrize("width", [4, 16])
def test_parser_numbers(width, tmp_path):
    """Content-Length and extra-slot numbers around 2^64 and 20 digits (kept as BCD in the RTL, converted after the
    packet stops), against the model under backpressure."""
    _run_file(width, "scoreboard_numbers", number_requests(random.Random(SEED + width), 3000), tmp_path)


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    from support import testbench
    from support.configs import random_parser_config
    from support.streams import StreamSink, StreamSource, random_pauses

    from wirespeed.hdl.bus.packet import ByteBeat
    from wirespeed.hdl.parser.header_parser import DESC_LATENCY_CYCLES
    from wirespeed.hdl.parser.layouts import ErrorFlag
    from wirespeed.host.tools import traffic
    from wirespeed.host.models.parser import Descriptor as ModelDescriptor
    from wirespeed.host.models.parser import ParserConfig, parse
    from wirespeed.host.keys import derive_key
    from wirespeed.host.driver.parser_config import configure_ops
    from wirespeed.host.driver.registers import arun



    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, regmap=parser_regmap(), seed_env="PARSER_SEED")
            self.width = param("width")
            dut._log.info("W=%d", self.width)
            self.source = StreamSource(self, "i_stream", ByteBeat(self.width))
            self.out = StreamSink(self, "o_stream", ByteBeat(self.width))
            self.desc = StreamSink(self, "o_desc", record=ModelDescriptor)

        async def start_file(self, key: bytes, **config):
            """Reset, configure with the key derived from ``key`` and ``config``; the packets of ``packets_file``."""
            await self.reset()
            poly, seed = derive_key(key)
            self.config = ParserConfig(poly=poly, seed=seed, **config)
            await self.configure(self.config)
            with open(param("packets_file")) as f:
                return [bytes.fromhex(h) for h in json.load(f)]

        async def configure(self, config: ParserConfig):
            await self.run_ops(configure_ops(self.regs, config))
            await self.wait_cycles(2)   # key residues settle one cycle after fp_poly changes

        async def run(self, packets, valid_p=1.0, ready_p=1.0, desc_ready_p=1.0, check_timing=False):
            """Stream ``packets`` with the given probabilities of valid/ready per cycle; scoreboard everything."""
            w, rng = self.width, self.rng
            src, out, desc = self.source, self.out, self.desc
            expected = [parse(p, self.config) for p in packets]
            # Which beat (of its packet) holds the stop byte, for the latency check.
            stop_beat = [d.stop_index(len(p)) // w for p, d in zip(packets, expected)]
            src.accepted.clear()
            src.set_pause_generator(random_pauses(rng, 1 - valid_p))
            out.set_pause_generator(random_pauses(rng, 1 - ready_p))
            desc.set_pause_generator(random_pauses(rng, 1 - desc_ready_p))
            first_beat, n_beats = [], 0         # each packet's first beat, as an index into the accepted beats
            for p in packets:
                first_beat.append(n_beats)
                n_beats += src.send_packet(p)
            await self.wait_until(lambda: len(desc) >= len(packets) and src.idle,
                                  timeout_cycles=50 * (n_beats + 100), what="parser stalled")
            # No descriptor beyond one per packet may follow.
            desc.set_pause_generator(None)
            await self.wait_cycles(DESC_LATENCY_CYCLES + 2)
            descs = desc.drain()
            assert len(descs) == len(packets), f"{len(descs) - len(packets)} descriptors with no packet"
            accepted = src.accepted
            assert len(accepted) == n_beats
            # Every beat taken leaves o_stream unchanged, in the cycle it was taken.
            assert len(out) == n_beats, f"{n_beats} beats taken, {len(out)} passed through: beat lost"
            i = 0
            for pi, p in enumerate(packets):
                got = await out.recv_packet()
                for beat in got.beats:
                    taken = accepted[i]
                    assert beat.cycle == taken.cycle, \
                        f"o_stream must carry the beat accepted (packet {pi}, cycle {taken.cycle})"
                    assert beat.bits == taken.bits, f"pass-through beat differs (packet {pi})"
                    i += 1
                assert i == (first_beat[pi + 1] if pi + 1 < len(packets) else n_beats), \
                    f"o_stream packet {pi} ends at beat {i}, its input packet does not"
                assert got.data == p, f"packet {pi} bytes differ"
            for k, d in enumerate(descs):
                want = expected[k]
                if d.bits != want.to_bits():
                    have = d.value
                    diffs = {f: (getattr(have, f), getattr(want, f)) for f in want.__dataclass_fields__
                             if getattr(have, f) != getattr(want, f)}
                    previous = packets[k - 1] if k else getattr(self, "previous", b"")
                    raise AssertionError(f"packet {k} (seed {self.seed}): RTL != model {diffs}\n"
                                         f"packet={packets[k][:300]!r}\nprevious packet={previous[-200:]!r}")
                if check_timing:
                    stop_cycle = accepted[first_beat[k] + stop_beat[k]].cycle
                    assert stop_cycle <= d.cycle, f"descriptor {k} before its stop beat was accepted"
                    latency = d.cycle - stop_cycle
                    assert latency == DESC_LATENCY_CYCLES, f"packet {k}: descriptor after {latency} cycles"
            if packets:
                self.cycles, self.beats_in = descs[-1].cycle - accepted[0].offered + 1, len(accepted)
            self.previous = packets[-1] if packets else b""
            return expected

    @cocotb.test()
    async def scoreboard_mix(dut):
        tb = TB(dut)
        await tb.reset()
        rng = tb.rng
        backpressure = param("backpressure")
        total = param("packets")
        done = 0
        batch = 0
        complete, errors = 0, [0] * len(ErrorFlag)
        while done < total:
            n = min(total - done, param("batch"))
            tb.config = random_parser_config(rng) if batch % 2 else ParserConfig(
                poly=derive_key(b"wirespeed")[0], seed=derive_key(b"wirespeed")[1],
                prefixes=[(b"/v1/chat/completions", 1), (b"/v1/messages", 2), (b"/v1/", 3)],
                extras=[b"x-session-id", b"x-model", b"anthropic-version", None])
            await tb.configure(tb.config)
            packets = list(traffic.mix(rng, n))
            if backpressure:
                expected = await tb.run(packets, valid_p=0.8, ready_p=0.8, desc_ready_p=0.6)
            else:
                expected = await tb.run(packets)
            for d in expected:
                complete += d.complete
                for i, flag in enumerate(ErrorFlag):
                    errors[i] += flag in d.errors
            done += n
            batch += 1
        # The hardware counters agree with the model's descriptors.
        assert await arun(tb.regs.read("requests"), tb.transport) == total
        assert await arun(tb.regs.read("complete"), tb.transport) == complete
        for i, flag in enumerate(ErrorFlag):
            count = await arun(tb.regs.read(f"error_count[{i}]"), tb.transport)
            assert count == errors[i], (flag.name, count, errors[i])
        dut._log.info("%d packets, zero mismatches; error counters %s", total, errors)

    @cocotb.test()
    async def cycle_counts(dut):
        """Valid and ready held high: one beat per cycle, descriptor exactly DESC_LATENCY_CYCLES after the stop."""
        tb = TB(dut)
        await tb.reset()
        rng = tb.rng
        tb.config = ParserConfig(prefixes=[(b"/v1/", 1)], extras=[b"x-session-id"])
        await tb.configure(tb.config)
        n = param("packets")
        packets = [traffic.worst_case(rng, tb.width, rng.randrange(64, 1024)) for _ in range(n // 3)]
        packets += [traffic.realistic(rng) for _ in range(n // 3)]
        packets += list(traffic.mix(rng, n - len(packets)))
        await tb.run(packets, check_timing=True)
        # Every cycle took a beat, apart from the tail where the last descriptors drain.
        assert tb.cycles - tb.beats_in <= DESC_LATENCY_CYCLES + 1, (tb.cycles, tb.beats_in)
        dut._log.info("W=%d: %d beats in %d cycles", tb.width, tb.beats_in, tb.cycles)

    @cocotb.test()
    async def scoreboard_numbers(dut):
        """Packets from a file (number edge cases), X-Cost in extra slot 0: every descriptor equals the model's."""
        tb = TB(dut)
        packets = await tb.start_file(b"numbers", extras=[b"x-cost", None, None, None])
        expected = await tb.run(packets, valid_p=0.8, ready_p=0.8, desc_ready_p=0.7)
        # The file exercises what it is meant to (else the test proves nothing).
        u64 = (1 << 64) - 1
        assert sum(d.cl_overflow for d in expected) > 50
        assert sum(d.cl_present and not d.cl_overflow and d.content_length > 10 ** 19 for d in expected) > 50
        assert sum(d.extra_numeric and d.extra_value == u64 for d in expected) > 50
        assert sum(ErrorFlag.cl_mismatch in d.errors for d in expected) > 50
        assert sum(ErrorFlag.bad_content_length in d.errors for d in expected) > 50
        dut._log.info("%d number requests, zero mismatches", len(packets))

    @cocotb.test()
    async def scoreboard_file(dut):
        """Packets from a file (hypothesis-drawn valid requests): all must parse complete and error-free."""
        tb = TB(dut)
        packets = await tb.start_file(b"hypothesis", extras=HYPOTHESIS_EXTRAS,
                                      prefixes=[(b"/", 1), (b"/a", 2), (b"/v1/", 3)])
        expected = await tb.run(packets, valid_p=0.7, ready_p=0.8, desc_ready_p=0.7)
        bad = [p for p, d in zip(packets, expected) if d.errors or not d.complete]
        assert not bad, f"valid requests the model rejects: {bad[:3]!r}"
        dut._log.info("%d hypothesis requests, zero mismatches", len(packets))
