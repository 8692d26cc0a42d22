"""Router RTL on Verilator, scoreboarded against the bit-exact model (wirespeed.host.models.router).

DUT: ``Standalone(Router)`` (AXI4-Lite target + the router's generated register bank + Router): the Toeplitz key,
pools, classes and tables all go through the real registers while requests stream in.

- Every verdict (status, pool, backend, hash) is compared with ``RouterModel.route`` on the buffer the request
  sampled in S0 (``active``), under random valid/ready, with the host rewriting the shadow buffer and swapping
  meanwhile. The model routes each request wholly from one buffer, and old and new tables differ, so a request
  routed by a mix of the two (class from one, pool or table from the other) fails the comparison.
- The Microsoft RSS verification suite (IPv4, IPv4+TCP, IPv6, IPv6+TCP) through the L4 key, bit-exact.
- Cycle counts: one request per cycle with valid and ready held high, each verdict ``ROUTE_LATENCY_CYCLES`` after
  its request.
"""

import os

import pytest
from wirespeed.hdl.bus.standalone import Standalone
from wirespeed.hdl.router.hash_router import Router, router_regmap
from wirespeed.hdl.router.layouts import RouterParams
from wirespeed.sim.runner import param, run_cocotb

SEED = int(os.environ.get("ROUTER_SEED", "20261125"))
META = 16
PARAMS = {
    "w16": RouterParams(table_entries=2048, pools=4, id_bits=16),
    "w8": RouterParams(table_entries=1024, pools=3, id_bits=8),
}


def _run(name, test, **parameters):
    p = PARAMS[name]
    run_cocotb(lambda: Standalone(Router(p, META), router_regmap()), toplevel=f"router_{name}", test_file=__file__,
               testcase=test, parameters={"params": p.__dict__, "seed": SEED, **parameters}, design_key=(p, META))


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(PARAMS))
def test_router_vs_model(name):
    _run(name, "scoreboard", requests=8000)


@pytest.mark.rtl
def test_router_rss_vectors():
    _run("w16", "rss_vectors")


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(PARAMS))
def test_router_swaps_are_atomic_at_full_rate(name):
    _run(name, "atomic_swap", requests=6000)


@pytest.mark.rtl
def test_router_cycle_counts():
    _run("w16", "cycle_counts", requests=2000)


# -- testbench (runs inside the simulator) ---------------------------------------------------------------------------

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None:
    import ipaddress
    import random
    from collections import deque

    import numpy as np
    from cocotb.triggers import ClockCycles, RisingEdge
    from support import testbench
    from support.streams import StreamSink, StreamSource, random_pauses

    from wirespeed.hdl.router.hash_router import ROUTE_LATENCY_CYCLES
    from wirespeed.host.rss import MS_RSS_KEY, RSS_VECTORS
    from wirespeed.host.models.router import RouteRequest, RouterModel, RouteVerdict
    from wirespeed.host.maglev import is_prime, maglev_table, pack_words

    def primes_below(n):
        return [k for k in range(2, n + 1) if is_prime(k)]

    class TB(testbench.TB):
        def __init__(self, dut):
            super().__init__(dut, regmap=router_regmap(), seed_env="ROUTER_SEED")
            self.params = RouterParams(**param("params"))
            dut._log.info("%s", self.params)
            layouts = Router(self.params, META)
            self.req = StreamSource(self, "i_req", layouts.in_layout, record={"req": RouteRequest})
            # The monitor checks each verdict in its cycle: nothing to queue.
            self.route_out = StreamSink(self, "o_route", layouts.out_layout, record={"verdict": RouteVerdict},
                                        queue=False)
            self.model = RouterModel(self.params)
            self.expected = deque()
            self.verdicts = 0
            self.latencies = []
            self.swaps_seen = 0
            self.swaps_requested = 0
            self.by_buffer = [0, 0]
            self.monitoring = False

        async def reset(self):
            await super().reset()
            await RisingEdge(self.dut.clk)
            if not self.monitoring:
                self.on_cycle(self.monitor)
                self.monitoring = True

        # -- host side --

        async def set_key(self, key: bytes):
            for i in range(10):
                await self.write(f"key[{i}]", int.from_bytes(key[4 * i:4 * i + 4], "big"))
            self.model.set_key(key)

        def image(self, pools):
            """The table entries for a pool list (the partitions packed from 0), and the pool descriptors."""
            p = self.params
            entries = np.zeros(p.words * p.ids_per_word, dtype=np.uint32)
            descs, base = [], 0
            for m, backends, weights in pools:
                descs.append((base, m, bool(backends)))
                if backends:
                    entries[base:base + m] = maglev_table(m, backends, weights)
                base += m
            return pack_words(entries, p.id_bits), descs

        async def write_shadow(self, pools, classes):
            """Bring the shadow buffer to this configuration, in the RTL and the model, writing only what differs
            from what the shadow holds (the model mirrors it exactly)."""
            words, descs = self.image(pools)
            shadow = self.model.shadow
            for index, (base, m, enabled) in enumerate(descs):
                have = self.model.pool(index, buffer=shadow)
                if (have.base, have.m, have.enabled) != (base, m, enabled and m >= 1):
                    await self.write("pool_base", base)
                    await self.write("pool_size", m | (int(enabled) << 31))
                    await self.write("pool_commit", index | 1 << 31)
                    self.model.commit_pool(index, base, m, enabled)
            for index, (pool, key_sel, slot) in enumerate(classes):
                have = self.model.class_entry(index, buffer=shadow)
                if (have.pool, have.key_sel, have.header_slot) != (pool, key_sel, slot):
                    await self.write("class_stage", pool | key_sel << 4 | slot << 8)
                    await self.write("class_commit", index | 1 << 31)
                    self.model.commit_class(index, pool, key_sel, slot)
            next_addr = None
            for addr, w in enumerate(words):
                w = int(w)
                if self.model.read_word(addr) == w:
                    continue
                if addr != next_addr:
                    await self.write("table_addr", addr)
                await self.write("table_wdata", w)
                self.model.write_word(addr, w)
                next_addr = addr + 1
            # Read-back of a few shadow words.
            for addr in self.rng.sample(range(len(words)), min(4, len(words))):
                await self.write("table_addr", addr)
                assert await self.read("table_rdata") == self.model.read_word(addr)

        async def swap(self):
            self.swaps_requested += 1
            await self.write("swap", 1)
            for _ in range(100):
                if not await self.read("status") & 2:
                    break
            else:
                raise AssertionError("swap still busy after 100 polls")

        def random_config(self):
            rng, p = self.rng, self.params
            room = p.table_entries
            pools = []
            for _ in range(p.pools):
                primes = primes_below(min(room, 257))
                if not primes or rng.random() < 0.15:
                    pools.append((0, [], None))             # no backend: 503
                    continue
                m = rng.choice(primes)
                n = rng.randrange(1, min(m, 12) + 1)
                backends = rng.sample(range(1 << p.id_bits), n)
                weights = [rng.randrange(1, 5) for _ in backends] if rng.random() < 0.5 else None
                pools.append((m, backends, weights))
                room -= m
            classes = [(rng.randrange(p.pools + 1) if rng.random() < 0.1 else rng.randrange(p.pools),
                        rng.randrange(4), rng.randrange(4)) for _ in range(16)]
            return pools, classes

        async def reconfigure(self, small=False):
            """A new random configuration, or (small) the current one with one pool's backends or one class
            changed, written to the shadow buffer and swapped in."""
            rng, p = self.rng, self.params
            if small and getattr(self, "config", None):
                pools, classes = [list(x) for x in self.config]
                i = rng.randrange(p.pools)
                m, backends, weights = pools[i]
                if m and rng.random() < 0.8:
                    n = rng.randrange(1, min(m, 12) + 1)
                    pools[i] = (m, rng.sample(range(1 << p.id_bits), n), None)
                else:
                    classes[rng.randrange(16)] = (rng.randrange(p.pools), rng.randrange(4), rng.randrange(4))
                self.config = (pools, classes)
            else:
                self.config = self.random_config()
            await self.write_shadow(*self.config)
            await self.swap()

        # -- scoreboard --

        def random_request(self):
            rng = self.rng
            v6 = rng.random() < 0.5
            return RouteRequest(
                route_class=rng.randrange(16), key_present=int(rng.random() < 0.9), key_fp=rng.getrandbits(64),
                extra_present=rng.randrange(16), extra_fp=tuple(rng.getrandbits(64) for _ in range(4)),
                l4_valid=int(rng.random() < 0.9), l4_v6=int(v6), l4_ports=int(rng.random() < 0.7),
                l4_src=rng.getrandbits(128 if v6 else 32), l4_dst=rng.getrandbits(128 if v6 else 32),
                l4_sport=rng.getrandbits(16), l4_dport=rng.getrandbits(16))

        def monitor(self, cycle):
            dut = self.dut
            active = int(dut.active.value)
            if active != self.model.active:
                self.model.swap()                     # the RTL flipped (at the last edge): so does the model
                self.swaps_seen += 1
                assert self.swaps_seen <= self.swaps_requested, "the buffer flipped with no swap"
            took = self.req.handshake
            if took is not None:
                self.by_buffer[active] += 1
                # The request as the DUT's pins carried it, unpacked through the layout.
                offered = self.req.codec.unpack(took.bits)
                self.expected.append((offered.meta, self.model.route(offered.req), cycle))
            out = self.route_out.handshake
            if out is not None:
                got = out.value
                assert self.expected, "a verdict with no request"
                want_seq, want, accepted = self.expected.popleft()
                assert got.meta == want_seq, f"verdict for request {got.meta} where {want_seq} was due"
                if got.verdict != want:
                    raise AssertionError(f"request {got.meta}: RTL {got.verdict} != model {want} (seed {self.seed})")
                self.latencies.append(cycle - accepted)
                self.verdicts += 1

        async def traffic(self, requests, valid_p, ready_p):
            src, sink = self.req, self.route_out
            src.accepted.clear()
            # Pauses from their own generators: the host's reconfigurations drawn from self.rng meanwhile do not
            # depend on how many cycles the traffic takes.
            src.set_pause_generator(random_pauses(random.Random(self.rng.getrandbits(64)), 1 - valid_p))
            sink.set_pause_generator(random_pauses(random.Random(self.rng.getrandbits(64)), 1 - ready_p))
            for qi, r in enumerate(requests):
                src.send({"req": r, "meta": qi & 0xFFFF})
            target = self.verdicts + len(requests)
            await self.wait_until(lambda: self.verdicts >= target, stall_cycles=5000,
                                  what=f"verdicts for {len(requests)} requests")
            src.set_pause_generator(None)
            sink.set_pause_generator(None)
            return src.accepted[0].cycle, src.accepted[-1].cycle

    async def _with_host(tb, coro, host):
        done = False

        async def loop():
            while not done:
                await host()
                await ClockCycles(tb.dut.clk, tb.rng.randrange(1, 50))

        task = cocotb.start_soon(loop())
        result = await coro
        done = True
        while not task.done():
            await RisingEdge(tb.dut.clk)
        return result

    @cocotb.test()
    async def scoreboard(dut):
        tb = TB(dut)
        await tb.reset()
        await tb.set_key(bytes(tb.rng.getrandbits(8) for _ in range(40)))
        await tb.reconfigure()
        total, done, batch = param("requests"), 0, 0
        while done < total:
            n = min(2000, total - done)
            valid_p, ready_p = [(0.9, 0.9), (0.5, 1.0), (1.0, 0.6), (1.0, 1.0)][batch % 4]
            await _with_host(tb, tb.traffic([tb.random_request() for _ in range(n)], valid_p, ready_p),
                             tb.reconfigure)
            done, batch = done + n, batch + 1
        assert await tb.read("routed") == tb.model.routed and await tb.read("unavailable") == tb.model.unavailable
        assert await tb.read("swaps") == tb.model.swaps == tb.swaps_requested
        assert tb.model.routed and tb.model.unavailable and tb.swaps_seen > 2, (tb.model.routed, tb.swaps_seen)
        dut._log.info("%d requests, %d swaps, %d routed, %d unavailable: all match the model", total,
                      tb.model.swaps, tb.model.routed, tb.model.unavailable)

    @cocotb.test()
    async def atomic_swap(dut):
        """valid and ready held high while the host keeps writing the shadow buffer and swapping: every request is
        routed wholly from the buffer it sampled (the model comparison), and both buffers carry traffic."""
        tb = TB(dut)
        await tb.reset()
        await tb.set_key(bytes(tb.rng.getrandbits(8) for _ in range(40)))
        await tb.reconfigure()
        reqs = [tb.random_request() for _ in range(param("requests"))]
        first, last = await _with_host(tb, tb.traffic(reqs, 1.0, 1.0), lambda: tb.reconfigure(small=True))
        assert last - first == len(reqs) - 1, "swaps must not stall requests"
        assert tb.swaps_seen >= 2 and min(tb.by_buffer) > 0, (tb.swaps_seen, tb.by_buffer)
        dut._log.info("%d requests at full rate across %d swaps, buffers %s", len(reqs), tb.swaps_seen, tb.by_buffer)

    @cocotb.test()
    async def rss_vectors(dut):
        """The Microsoft RSS verification suite through the L4 key, with the Microsoft key."""
        tb = TB(dut)
        await tb.reset()
        await tb.set_key(MS_RSS_KEY)
        await tb.write_shadow([(251, [7, 8, 9], None)] + [(0, [], None)] * (tb.params.pools - 1),
                              [(0, 2, 0)] * 16)
        await tb.swap()
        reqs, want = [], []
        for vec in RSS_VECTORS:
            src, dst = ipaddress.ip_address(vec["src"]), ipaddress.ip_address(vec["dst"])
            for ports, key in ((0, "ip_only"), (1, "with_ports")):
                reqs.append(RouteRequest(
                    route_class=0, key_present=0, key_fp=0, extra_present=0, extra_fp=(0,) * 4, l4_valid=1,
                    l4_v6=int(src.version == 6), l4_ports=ports, l4_src=int(src), l4_dst=int(dst),
                    l4_sport=vec["sport"], l4_dport=vec["dport"]))
                want.append(vec[key])
        await tb.traffic(reqs, 0.7, 0.7)
        # The scoreboard checked RTL == model; the model's hashes are the published ones (asserted here too).
        got = [tb.model.route(r).hash for r in reqs]
        assert got == want
        kinds = {ipaddress.ip_address(v["src"]).version for v in RSS_VECTORS}
        assert kinds == {4, 6} and len(reqs) >= 10
        dut._log.info("%d RSS vectors bit-exact in the RTL", len(reqs))

    @cocotb.test()
    async def cycle_counts(dut):
        tb = TB(dut)
        await tb.reset()
        await tb.set_key(bytes(range(40)))
        await tb.reconfigure()
        reqs = [tb.random_request() for _ in range(param("requests"))]
        tb.latencies.clear()
        first, last = await tb.traffic(reqs, 1.0, 1.0)
        assert last - first == len(reqs) - 1
        assert set(tb.latencies) == {ROUTE_LATENCY_CYCLES}, sorted(set(tb.latencies))
        dut._log.info("%d requests in %d cycles, latency %d", len(reqs), last - first + 1, ROUTE_LATENCY_CYCLES)
