"""Hash router: keyed Toeplitz hash and weighted Maglev tables, one request per cycle.

request (:data:`~wirespeed.host.models.router.RouteRequest`) ─▶ :class:`Router` ─▶ one :class:`~.layouts.RouteVerdict`
per request (backend, pool, hash), :data:`ROUTE_LATENCY_CYCLES` cycles after it is accepted

Behaviour is specified in ``docs/router.md``; :mod:`wirespeed.host.models.router` is the bit-exact model.

Pipeline (every stage advances together; the only stall is ``o_route`` not ready):

- **S0 select.** The route class picks, from the *active* buffer, its pool and its hash key (API-key fingerprint,
  an extra header's fingerprint, or the L4 tuple); the key becomes the 36-byte Toeplitz input (zero padded).
- **S1 hash.** Toeplitz over 288 input bits with the 320-bit key: an AND-XOR network, since the key is a register.
- **S2 index.** ``(hash · M) >> 32`` (multiply-high, no modulo) plus the pool's base gives the table entry; the RAM
  read is issued.
- **S3 select.** The backend id is picked from the RAM word; the verdict is registered.

Double buffering: the host writes the shadow buffer (table words, pool descriptors, class entries) and pulses
``swap``. Each request samples the active buffer once, in S0, and uses it for its class, pool and table entry, so no
request sees a mix of two tables. ``status.busy`` stays high until the requests that sampled the old buffer have
read the RAM, so the host never overwrites a table still in use.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus.regmap import HDL_DIR, compile_rdl, regmap_from_node
from ..parser.layouts import EXTRA_SLOTS
from ..bus.regbank import hw_signature
from .layouts import (CLASSES, HASH_INPUT_BYTES, STATUS_OK, STATUS_UNAVAILABLE, TOEPLITZ_KEY_BYTES, KeySelect,
                             RouteRequest, RouterParams, RouteVerdict)

__all__ = ["Router", "router_regmap", "ROUTE_LATENCY_CYCLES", "SWAP_DRAIN_CYCLES"]

#: Cycles from a request's acceptance to its ``o_route.valid``.
ROUTE_LATENCY_CYCLES = 4
#: Advancing cycles after a swap until every request that sampled the old buffer has read the table.
SWAP_DRAIN_CYCLES = 3


def router_regmap():
    """The router's register map on its own (addresses from 0), for a standalone bank."""
    return regmap_from_node(compile_rdl([HDL_DIR / "router/router.rdl"], "wirespeed_router"))


#: A pool descriptor (one per pool per buffer): its first table entry, its size M, and whether it serves.
_POOL_DESC = data.StructLayout({"base": 18, "m": 17, "enabled": 1})
#: A class entry (one per route class per buffer): its pool, its hash key (:class:`~.layouts.KeySelect`) and the
#: extra header slot that key reads.
_CLASS_ENTRY = data.StructLayout({"pool": 4, "key_sel": 2, "header_slot": 2})


def _be_bytes(value, nbytes: int) -> list:
    """``value``'s low ``nbytes`` bytes, most significant first (network order)."""
    return [value[8 * (nbytes - 1 - i):8 * (nbytes - i)] for i in range(nbytes)]


class Router(wiring.Component):
    """Toeplitz hash + Maglev lookup over double-buffered tables that the pools share.

    Parameters
    ----------
    params : RouterParams
        Table entries per buffer, pools, backend-id width.
    meta_width : int
        Bits carried unchanged from each request to its verdict.

    Attributes
    ----------
    i_req : In(stream.Signature({"req": RouteRequest, "meta": meta_width}))
        Requests, one per cycle.
    o_route : Out(stream.Signature({"verdict": RouteVerdict, "meta": meta_width}))
        One verdict per request, in order, :data:`ROUTE_LATENCY_CYCLES` cycles after acceptance when not stalled.
    regs : In(hw signature of ``router.rdl``)
    active : Out(1)
        The buffer S0 samples this cycle (for testbenches).
    """

    def __init__(self, params: RouterParams = RouterParams(), meta_width: int = 0):
        if not isinstance(params, RouterParams):
            raise TypeError(f"params must be a RouterParams, got {params!r}")
        self.params = params
        self.meta_width = meta_width
        self.in_layout = data.StructLayout({"req": RouteRequest, "meta": unsigned(meta_width)})
        self.out_layout = data.StructLayout({"verdict": RouteVerdict, "meta": unsigned(meta_width)})
        super().__init__({
            "i_req": In(stream.Signature(self.in_layout)),
            "o_route": Out(stream.Signature(self.out_layout)),
            "regs": In(hw_signature(router_regmap())),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = Memory(shape=unsigned(32), depth=2 * self.params.words, init=[])
        look = table.read_port(domain="sync")
        host_rd = table.read_port(domain="sync")
        host_wr = table.write_port()
        advance = Signal()
        m.d.comb += [advance.eq(~self.o_route.valid | self.o_route.ready), look.en.eq(advance)]
        bufs = self._buffers(m)
        self._swap(m, advance, bufs.active)
        self._host_access(m, bufs.shadow, host_rd, host_wr)
        s1 = self._select(m, advance, bufs)
        s2 = self._hash(m, advance, s1)
        s3 = self._index(m, advance, s2, look)
        self._verdict(m, advance, s3, look)
        return m

    def _buffers(self, m):
        """The double-buffered pool descriptors and class entries: ``pool_commit`` and ``class_commit`` write the
        staged entry into the shadow buffer."""
        p, regs = self.params, self.regs
        n_pools = p.pools
        active = Signal()
        shadow = Signal()
        m.d.comb += [shadow.eq(~active), self.active.eq(active)]
        descs = [[Signal(_POOL_DESC, name=f"pool{b}_{i}") for i in range(n_pools)] for b in range(2)]
        classes = [[Signal(_CLASS_ENTRY, name=f"class{b}_{i}") for i in range(CLASSES)] for b in range(2)]

        stage_ok = (regs.pool_size.m != 0) & (regs.pool_base.value + regs.pool_size.m <= p.table_entries)
        with m.If(regs.pool_commit.go):
            for b in range(2):
                for i in range(n_pools):
                    with m.If((shadow == b) & (regs.pool_commit.index == i)):
                        m.d.sync += [descs[b][i].base.eq(regs.pool_base.value), descs[b][i].m.eq(regs.pool_size.m),
                                     descs[b][i].enabled.eq(regs.pool_size.enabled & stage_ok)]
        with m.If(regs.class_commit.go):
            for b in range(2):
                for i in range(CLASSES):
                    with m.If((shadow == b) & (regs.class_commit.index == i)):
                        m.d.sync += [classes[b][i].pool.eq(regs.class_stage.pool),
                                     classes[b][i].key_sel.eq(regs.class_stage.key_sel),
                                     classes[b][i].header_slot.eq(regs.class_stage.header_slot)]
        return SimpleNamespace(active=active, shadow=shadow, descs=descs, classes=classes)

    def _swap(self, m, advance, active):
        """``swap`` flips the active buffer; ``status.busy`` until the requests that sampled the old one have read
        the table (:data:`SWAP_DRAIN_CYCLES` advancing cycles)."""
        regs = self.regs
        drain = Signal(range(SWAP_DRAIN_CYCLES + 1))
        with m.If(regs.swap.go):
            m.d.sync += [active.eq(~active), drain.eq(SWAP_DRAIN_CYCLES)]
        with m.Elif(advance & (drain != 0)):
            m.d.sync += drain.eq(drain - 1)
        m.d.comb += [regs.status.active.eq(active), regs.status.busy.eq(drain != 0),
                     regs.swaps.count_incr.eq(regs.swap.go)]

    def _host_access(self, m, shadow, host_rd, host_wr):
        """The host's window on the shadow table (``table_addr`` auto-increments on each ``table_wdata`` write), and
        the read-only size registers."""
        p, regs = self.params, self.regs
        words = p.words
        addr = regs.table_addr.value
        in_range = addr < words
        m.d.comb += [
            host_wr.addr.eq(Mux(shadow, words, 0) + addr), host_wr.data.eq(regs.table_wdata.value),
            host_wr.en.eq(regs.table_wdata.value_swmod & in_range),
            regs.table_addr.value_incr.eq(regs.table_wdata.value_swmod),
            host_rd.addr.eq(Mux(shadow, words, 0) + addr), host_rd.en.eq(1),
            regs.table_rdata.value.eq(Mux(in_range, host_rd.data, 0)),
            regs.params.table_entries.eq(p.table_entries), regs.params.id_bits.eq(p.id_bits),
            regs.sizes.pools.eq(p.pools), regs.sizes.classes.eq(CLASSES),
        ]

    def _select(self, m, advance, bufs):
        """S0: the route class picks, from the active buffer, its pool and its hash key; the S1 registers."""
        n_pools = self.params.pools
        active, descs, classes = bufs.active, bufs.descs, bufs.classes
        req = self.i_req.payload.req
        m.d.comb += self.i_req.ready.eq(advance)
        accept = Signal()
        m.d.comb += accept.eq(self.i_req.valid & advance)
        cl = Signal(_CLASS_ENTRY)
        m.d.comb += cl.eq(Mux(active, Array(classes[1])[req.route_class], Array(classes[0])[req.route_class]))
        pool_desc = Signal(_POOL_DESC)
        pool_ok = Signal()
        if n_pools < 16:
            m.d.comb += pool_ok.eq(cl.pool < n_pools)
        else:
            m.d.comb += pool_ok.eq(1)
        pool_idx = cl.pool[0:max(1, (n_pools - 1).bit_length())]
        m.d.comb += pool_desc.eq(Mux(active, Array(descs[1])[pool_idx], Array(descs[0])[pool_idx]))
        sel = self._hash_input(m, req, cl)

        s1_valid = Signal()
        s1_input = Signal(HASH_INPUT_BYTES * 8)                 # byte 0 in the top 8 bits
        s1_pool = Signal(4)
        s1_desc = Signal(_POOL_DESC)
        s1_ok = Signal()
        s1_buf = Signal()
        s1_meta = Signal(self.meta_width)
        with m.If(advance):
            m.d.sync += [s1_valid.eq(accept), s1_input.eq(sel), s1_pool.eq(cl.pool), s1_desc.eq(pool_desc),
                         s1_ok.eq(pool_ok & pool_desc.enabled), s1_buf.eq(active),
                         s1_meta.eq(self.i_req.payload.meta)]
        return SimpleNamespace(valid=s1_valid, input=s1_input, pool=s1_pool, desc=s1_desc, ok=s1_ok, buf=s1_buf,
                               meta=s1_meta)

    def _hash_input(self, m, req, cl):
        """The Toeplitz input the class's ``key_sel`` picks: 36 bytes in network order (byte 0 in the top 8 bits),
        zero padded, and all zero when the key is absent."""
        tenant = _be_bytes(req.key_fp, 8) + [Const(0, 8)] * (HASH_INPUT_BYTES - 8)
        header_fp = Signal(64)
        header_present = Signal()
        m.d.comb += [header_fp.eq(Array(req.extra_fp[i] for i in range(EXTRA_SLOTS))[cl.header_slot]),
                     header_present.eq(req.extra_present.bit_select(cl.header_slot, 1))]
        header = _be_bytes(header_fp, 8) + [Const(0, 8)] * (HASH_INPUT_BYTES - 8)
        ports = _be_bytes(req.l4_sport, 2) + _be_bytes(req.l4_dport, 2)
        v4 = (_be_bytes(req.l4_src, 4) + _be_bytes(req.l4_dst, 4) +
              [Mux(req.l4_ports, b, 0) for b in ports] + [Const(0, 8)] * (HASH_INPUT_BYTES - 12))
        v6 = _be_bytes(req.l4_src, 16) + _be_bytes(req.l4_dst, 16) + [Mux(req.l4_ports, b, 0) for b in ports]
        l4 = [Mux(req.l4_v6, b6, b4) for b4, b6 in zip(v4, v6)]
        sel = Signal(HASH_INPUT_BYTES * 8)
        with m.Switch(cl.key_sel):
            with m.Case(KeySelect.HEADER):
                m.d.comb += sel.eq(Mux(header_present, Cat(*reversed(header)), 0))
            with m.Case(KeySelect.L4):
                m.d.comb += sel.eq(Mux(req.l4_valid, Cat(*reversed(l4)), 0))
            with m.Default():                                   # TENANT, and 3
                m.d.comb += sel.eq(Mux(req.key_present, Cat(*reversed(tenant)), 0))
        return sel

    def _hash(self, m, advance, s1):
        """S1: Toeplitz over the 288 input bits with the 320-bit key, an AND-XOR network (the key is a register);
        the S2 registers."""
        regs = self.regs
        # The key as one vector with K[j] (bit j of the key, MSB of byte 0 first) at kvec[319 - j]: the 32-bit
        # window K[i..i+31] (K[i] its MSB) is then the slice kvec[288 - i : 320 - i].
        n_key = TOEPLITZ_KEY_BYTES * 8
        kvec = Signal(n_key)
        m.d.comb += kvec.eq(Cat(*(getattr(regs, f"key_{i}").value for i in reversed(range(TOEPLITZ_KEY_BYTES // 4)))))
        n_in = HASH_INPUT_BYTES * 8
        terms = []                                               # d[i] = MSB-first bit i of the input
        for i in range(n_in):
            t = Signal(32, name=f"tpz_term{i}")
            m.d.comb += t.eq(Mux(s1.input[n_in - 1 - i], kvec[n_key - 32 - i:n_key - i], 0))
            terms.append(t)
        level = 0
        while len(terms) > 1:                                    # balanced XOR tree, named nodes
            nxt = []
            for k in range(0, len(terms) - 1, 2):
                x = Signal(32, name=f"tpz_l{level}_{k // 2}")
                m.d.comb += x.eq(terms[k] ^ terms[k + 1])
                nxt.append(x)
            if len(terms) % 2:
                nxt.append(terms[-1])
            terms, level = nxt, level + 1
        hash_ = terms[0]

        s2_valid = Signal()
        s2_hash = Signal(32)
        s2_pool = Signal(4)
        s2_desc = Signal(_POOL_DESC)
        s2_ok = Signal()
        s2_buf = Signal()
        s2_meta = Signal(self.meta_width)
        with m.If(advance):
            m.d.sync += [s2_valid.eq(s1.valid), s2_hash.eq(hash_), s2_pool.eq(s1.pool), s2_desc.eq(s1.desc),
                         s2_ok.eq(s1.ok), s2_buf.eq(s1.buf), s2_meta.eq(s1.meta)]
        return SimpleNamespace(valid=s2_valid, hash=s2_hash, pool=s2_pool, desc=s2_desc, ok=s2_ok, buf=s2_buf,
                               meta=s2_meta)

    def _index(self, m, advance, s2, look):
        """S2: ``(hash · M) >> 32`` plus the pool's base is the table entry; its word's RAM read is issued. The S3
        registers."""
        words = self.params.words
        lane_bits = (self.params.ids_per_word - 1).bit_length()
        index = Signal(17)
        m.d.comb += index.eq((s2.hash * s2.desc.m) >> 32)
        entry = Signal(18)
        m.d.comb += entry.eq(s2.desc.base + index)
        word = Signal(range(max(2, words)))
        lane = Signal(max(1, lane_bits))
        m.d.comb += [word.eq(entry >> lane_bits), lane.eq(entry[0:lane_bits] if lane_bits else 0),
                     look.addr.eq(Mux(s2.buf, words, 0) + word)]

        s3_valid = Signal()
        s3_hash = Signal(32)
        s3_pool = Signal(4)
        s3_ok = Signal()
        s3_lane = Signal(max(1, lane_bits))
        s3_meta = Signal(self.meta_width)
        with m.If(advance):
            m.d.sync += [s3_valid.eq(s2.valid), s3_hash.eq(s2.hash), s3_pool.eq(s2.pool), s3_ok.eq(s2.ok),
                         s3_lane.eq(lane), s3_meta.eq(s2.meta)]
        return SimpleNamespace(valid=s3_valid, hash=s3_hash, pool=s3_pool, ok=s3_ok, lane=s3_lane, meta=s3_meta)

    def _verdict(self, m, advance, s3, look):
        """S3: the backend id picked from the RAM word; the verdict registered, and the counters."""
        p, regs, out = self.params, self.regs, self.o_route
        ids = [look.data[p.id_bits * j:p.id_bits * (j + 1)] for j in range(p.ids_per_word)]
        backend = Signal(16)
        m.d.comb += backend.eq(Array(ids)[s3.lane])
        v = out.payload.verdict
        with m.If(advance):
            m.d.sync += [
                out.valid.eq(s3.valid), out.payload.meta.eq(s3.meta),
                v.status.eq(Mux(s3.ok, STATUS_OK, STATUS_UNAVAILABLE)), v.pool.eq(s3.pool),
                v.backend.eq(Mux(s3.ok, backend, 0)), v.hash.eq(s3.hash),
            ]
        m.d.comb += [regs.routed.count_incr.eq(advance & s3.valid & s3.ok),
                     regs.unavailable.count_incr.eq(advance & s3.valid & ~s3.ok)]
