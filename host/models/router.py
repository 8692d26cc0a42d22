"""Bit-exact model of the hash router (Toeplitz + Maglev).

parser descriptor + L4 tuple ─▶ :class:`RouteRequest` ─▶ :class:`RouterModel` (class ─▶ hash input ─▶
:func:`toeplitz` ─▶ pool ─▶ Maglev entry ``base + (hash·M >> 32)``) ─▶ one :class:`RouteVerdict` per request

``docs/router.md`` is the specification; the registers are ``hdl/router/router.rdl``. This module holds
:class:`RouterModel`, the hardware (key, double-buffered pools, classes and table words, routing, counters), and
:class:`RouterBlock`, its registers inside the core. The hash is :func:`wirespeed.host.rss.toeplitz`; the table
builder and RAM word format are in :mod:`wirespeed.host.maglev`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hdl.router.layouts import CLASSES, STATUS_OK, STATUS_UNAVAILABLE, TOEPLITZ_KEY_BYTES, KeySelect, RouterParams
from ...hdl.router.layouts import RouteRequest as RouteRequestLayout
from ...hdl.router.layouts import RouteVerdict as RouteVerdictLayout
from ..errors import ConfigError, check_int
from ..maglev import pack_words, unpack_words
from ..records import LayoutRecord
from ..rss import ip_address, rss_input, toeplitz
from .register_bank import BlockModel, RegisterBankModel

__all__ = ["route_hash_input", "RouteRequest", "RouteVerdict", "PoolDescriptor", "ClassEntry", "RouterModel", "U64",
           "RouterBlock", "COUNTERS"]

U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

# -- requests and verdicts --------------------------------------------------------------------------------------------

class _RouteRequestShape:
    # LayoutRecord reads a Struct's layout through as_shape(); RouteRequest is a bare StructLayout.
    @staticmethod
    def as_shape():
        return RouteRequestLayout


@dataclass(frozen=True, slots=True)
class RouteRequest(LayoutRecord, layout=_RouteRequestShape):
    """What the router reads of one request; mirrors :data:`wirespeed.hdl.router.layouts.RouteRequest`.

    ``extra_present`` is a bit mask over the extra header slots; ``extra_fp`` their fingerprints. For IPv4
    (``l4_v6`` false) the addresses are in the low 32 bits of ``l4_src`` / ``l4_dst``.
    """
    route_class: int = 0
    key_present: bool = False
    key_fp: int = 0
    extra_present: int = 0
    extra_fp: tuple = (0, 0, 0, 0)
    l4_valid: bool = False
    l4_v6: bool = False
    l4_ports: bool = False
    l4_src: int = 0
    l4_dst: int = 0
    l4_sport: int = 0
    l4_dport: int = 0

    @classmethod
    def for_flow(cls, src, dst, sport: int | None = None, dport: int | None = None, **fields) -> RouteRequest:
        """A request carrying the L4 tuple of a flow (as :func:`rss_input` takes it); ``fields`` set the rest."""
        s, d = ip_address(src, "src"), ip_address(dst, "dst")
        rss_input(s, d, sport, dport)          # validates family and ports
        return cls(l4_valid=True, l4_v6=s.version == 6, l4_ports=sport is not None, l4_src=int(s), l4_dst=int(d),
                   l4_sport=sport or 0, l4_dport=dport or 0, **fields)


@dataclass(frozen=True, slots=True)
class RouteVerdict(LayoutRecord, layout=RouteVerdictLayout):
    """One per request; mirrors :class:`wirespeed.hdl.router.layouts.RouteVerdict` field for field.

    ``status`` is 200 (``backend`` from the pool's table) or 503 (the pool has no backend; ``backend`` 0). ``hash``
    is the Toeplitz hash of the class's key, whatever the status.
    """
    status: int = 0
    pool: int = 0
    backend: int = 0
    hash: int = 0


@dataclass(frozen=True, slots=True)
class PoolDescriptor:
    """One pool of a buffer: the partition ``base .. base+m−1`` of the table. ``enabled`` as the hardware stored it
    (see :meth:`RouterModel.commit_pool`)."""
    base: int = 0
    m: int = 0
    enabled: bool = False


@dataclass(frozen=True, slots=True)
class ClassEntry:
    """One route class of a buffer: its pool and hash input (``key_sel`` as stored, 0..3; 3 acts as TENANT)."""
    pool: int = 0
    key_sel: int = 0
    header_slot: int = 0


_KEY_SEL_HEADER, _KEY_SEL_L4 = KeySelect.HEADER.value, KeySelect.L4.value


def route_hash_input(req, key_sel: int, header_slot: int) -> bytes:
    """The bytes the router hashes for ``req`` under a class's ``key_sel`` / ``header_slot``; empty when the selected
    key is absent.

    - TENANT (and ``key_sel`` 3): ``key_fp``, 8 bytes big-endian, if ``key_present``;
    - HEADER: ``extra_fp[header_slot]``, 8 bytes big-endian, if bit ``header_slot`` of ``extra_present``;
    - L4: if ``l4_valid``: source then destination address, big-endian (IPv4: the low 32 bits of ``l4_src`` /
      ``l4_dst``, 4 bytes each; IPv6: 16 bytes each), then, if ``l4_ports``, source and destination port (2 bytes
      each): the RSS input of :func:`rss_input`.

    Fields are read at their layout widths (higher bits ignored, as the hardware has none).
    """
    key_sel &= 3
    if key_sel == _KEY_SEL_HEADER:
        slot = header_slot & 3
        if (req.extra_present >> slot) & 1:
            return (req.extra_fp[slot] & U64).to_bytes(8, "big")
        return b""
    if key_sel == _KEY_SEL_L4:
        if not req.l4_valid:
            return b""
        if req.l4_v6:
            mask, size = (1 << 128) - 1, 16
        else:
            mask, size = _U32, 4
        data = (req.l4_src & mask).to_bytes(size, "big") + (req.l4_dst & mask).to_bytes(size, "big")
        if req.l4_ports:
            data += (req.l4_sport & 0xFFFF).to_bytes(2, "big") + (req.l4_dport & 0xFFFF).to_bytes(2, "big")
        return data
    return (req.key_fp & U64).to_bytes(8, "big") if req.key_present else b""


# -- the router -------------------------------------------------------------------------------------------------------

_REG_MAX = _U32
_KEY_WORDS = TOEPLITZ_KEY_BYTES // 4


class RouterModel:
    """Bit-exact model of the router (``hdl/router/router.rdl``, ``docs/router.md``).

    Two buffers, each with ``params.pools`` pool descriptors, 16 route classes and ``params.words`` table words.
    Requests use the :attr:`active` one; the host writes the other (the shadow) and swaps. A swap copies nothing:
    the new shadow holds what the old active buffer held. The Toeplitz key is not buffered.

    Register values are masked to their fields' widths as the hardware does (``base`` 18 bits, ``m`` 17, indexes and
    ``pool`` 4, ``key_sel`` and ``header_slot`` 2); a value that is not a 32-bit register value raises
    :class:`ConfigError`.

    Attributes
    ----------
    params : RouterParams
    key : bytes
        The 40-byte Toeplitz key (all zero at reset).
    active : int
        The buffer requests use, 0 or 1 (0 at reset).
    routed, unavailable, swaps : int
        The 64-bit counters: requests given a backend, requests answered 503, swaps done.
    """

    def __init__(self, params: RouterParams = RouterParams()):
        if not isinstance(params, RouterParams):
            raise ConfigError("params", params, "must be a RouterParams")
        self.params = params
        self.key = bytes(TOEPLITZ_KEY_BYTES)
        self.active = 0
        self._pools = [[PoolDescriptor()] * params.pools for _ in range(2)]
        self._classes = [[ClassEntry()] * CLASSES for _ in range(2)]
        self._words = [np.zeros(params.words, dtype=np.uint32) for _ in range(2)]
        self.routed = self.unavailable = self.swaps = 0

    @property
    def shadow(self) -> int:
        """The buffer the host writes: the one not active."""
        return self.active ^ 1

    def _buffer(self, buffer) -> int:
        return self.active if buffer is None else check_int("buffer", buffer, 0, 1)

    # -- key --

    def set_key(self, key: bytes):
        """Write all 10 key words: ``key`` is the 40-byte RSS key."""
        key = bytes(key)
        if len(key) != TOEPLITZ_KEY_BYTES:
            raise ConfigError("key", key, f"must be {TOEPLITZ_KEY_BYTES} bytes")
        self.key = key

    def set_key_word(self, index: int, value: int):
        """Register ``key[index]``: key bytes 4·index .. 4·index+3, byte 4·index in bits 31:24."""
        check_int("index", index, 0, _KEY_WORDS - 1)
        check_int("value", value, 0, _REG_MAX)
        self.key = self.key[:4 * index] + value.to_bytes(4, "big") + self.key[4 * index + 4:]

    # -- shadow buffer --

    def commit_pool(self, index: int, base: int, m: int, enabled: bool):
        """``pool_base`` / ``pool_size`` staged, then ``pool_commit.go`` with ``index``: pool ``index`` of the shadow.

        The hardware stores ``enabled`` only if ``1 ≤ m`` and ``base + m ≤ table_entries``; otherwise the pool is
        stored disabled (it answers 503). ``index`` ≥ pools is ignored. Whether m is prime is the host's business.
        """
        for name, value in (("index", index), ("base", base), ("m", m)):
            check_int(name, value, 0, _REG_MAX)
        index, base, m = index & 0xF, base & 0x3FFFF, m & 0x1FFFF
        if index >= self.params.pools:
            return
        enabled = bool(enabled) and 1 <= m and base + m <= self.params.table_entries
        self._pools[self.shadow][index] = PoolDescriptor(base, m, enabled)

    def commit_class(self, index: int, pool: int, key_sel: int, header_slot: int):
        """``class_stage`` staged, then ``class_commit.go`` with ``index``: route class ``index`` of the shadow."""
        key_sel = key_sel.value if isinstance(key_sel, KeySelect) else key_sel
        for name, value in (("index", index), ("pool", pool), ("key_sel", key_sel), ("header_slot", header_slot)):
            check_int(name, value, 0, _REG_MAX)
        self._classes[self.shadow][index & 0xF] = ClassEntry(pool & 0xF, key_sel & 3, header_slot & 3)

    def write_word(self, addr: int, value: int):
        """``table_addr`` = addr, then ``table_wdata`` = value: shadow word ``addr`` (ignored past the last word)."""
        check_int("addr", addr, 0, _REG_MAX)
        check_int("value", value, 0, _REG_MAX)
        if addr < self.params.words:
            self._words[self.shadow][addr] = value

    def read_word(self, addr: int) -> int:
        """``table_rdata`` at ``table_addr`` = addr: shadow word ``addr`` (0 past the last word)."""
        check_int("addr", addr, 0, _REG_MAX)
        return int(self._words[self.shadow][addr]) if addr < self.params.words else 0

    def write_entries(self, base: int, entries):
        """Store backend ids in shadow entries ``base ..`` as a driver does: whole words, read-modify-write where
        ``base`` or the end is not word-aligned.

        Raises
        ------
        ConfigError
            If the entries do not fit below ``table_entries`` or an id does not fit in ``id_bits``.
        """
        entries = np.asarray(entries, dtype=np.int64)
        table_entries, id_bits = self.params.table_entries, self.params.id_bits
        check_int("base", base, 0, table_entries)
        if base + entries.size > table_entries:
            raise ConfigError("entries", entries.size, f"entries {base}.. must end by table_entries = {table_entries}")
        per_word = self.params.ids_per_word
        first, end = base // per_word, -(-(base + entries.size) // per_word)
        lanes = unpack_words(self._words[self.shadow][first:end], id_bits).astype(np.int64)
        lanes[base - first * per_word:base - first * per_word + entries.size] = entries
        for addr, word in enumerate(pack_words(lanes, id_bits), first):
            self.write_word(addr, int(word))

    # -- inspection --

    def pool(self, index: int, buffer: int | None = None) -> PoolDescriptor:
        """Pool ``index`` of ``buffer`` (the active one by default)."""
        return self._pools[self._buffer(buffer)][check_int("index", index, 0, self.params.pools - 1)]

    def class_entry(self, index: int, buffer: int | None = None) -> ClassEntry:
        """Route class ``index`` of ``buffer`` (the active one by default)."""
        return self._classes[self._buffer(buffer)][check_int("index", index, 0, CLASSES - 1)]

    def read_entries(self, base: int, count: int, buffer: int | None = None) -> np.ndarray:
        """Backend ids of entries ``base .. base+count−1`` of ``buffer`` (the active one by default)."""
        per_word = self.params.ids_per_word
        check_int("base", base, 0, self.params.table_entries)
        check_int("count", count, 0, self.params.table_entries - base)
        first = base // per_word
        words = self._words[self._buffer(buffer)][first:-(-(base + count) // per_word)]
        return unpack_words(words, self.params.id_bits)[base - first * per_word:][:count]

    # -- swap and requests --

    def swap(self):
        """``swap.go``: the shadow becomes active (between two requests)."""
        self.active ^= 1
        self.swaps = (self.swaps + 1) & U64

    def route(self, req) -> RouteVerdict:
        """The verdict for one request, from the active buffer.

        Class ``route_class``; hash = :func:`toeplitz` (key, :func:`route_hash_input`) (0 when the key is absent).
        If the class's pool is ≥ pools or not enabled: 503 with backend 0, counted in :attr:`unavailable`.
        Otherwise entry ``base + (hash·m >> 32)`` of the table (``id_bits`` per id, lane ``entry mod ids_per_word``
        of word ``entry // ids_per_word``): 200, counted in :attr:`routed`.

        Parameters
        ----------
        req : RouteRequest or any object with its fields
        """
        return RouteVerdict(*self.route_fields(req))

    def route_fields(self, req) -> tuple:
        """:meth:`route` as the tuple of :class:`RouteVerdict`'s fields in order, with the same effects (for the
        ``"software"`` transport, which builds no record per stage)."""
        entry = self._classes[self.active][req.route_class & 0xF]
        data = route_hash_input(req, entry.key_sel, entry.header_slot)
        hashed = toeplitz(self.key, data) if data else 0
        status, pool, backend = self.select(req.route_class, hashed)
        if status == STATUS_OK:
            self.routed = (self.routed + 1) & U64
        else:
            self.unavailable = (self.unavailable + 1) & U64
        return status, pool, backend, hashed

    def select(self, route_class: int, hashed: int) -> tuple:
        """``(status, pool, backend)`` of :meth:`route` for a request of ``route_class`` whose hash is ``hashed``,
        without counting it: 503 and backend 0 when the class's pool is not enabled."""
        active = self.active
        pool = self._classes[active][route_class & 0xF].pool
        desc = self._pools[active][pool] if pool < self.params.pools else None
        if desc is None or not desc.enabled:
            return STATUS_UNAVAILABLE, pool, 0
        index = desc.base + ((hashed * desc.m) >> 32)
        per_word, id_bits = self.params.ids_per_word, self.params.id_bits
        word = int(self._words[active][index // per_word])
        return STATUS_OK, pool, (word >> (id_bits * (index % per_word))) & ((1 << id_bits) - 1)


# -- the router's registers inside the core --------------------------------------------------------------------------

#: Counters the block mirrors from the model, by register name under ``router.``.
COUNTERS = ("routed", "unavailable", "swaps")



class RouterBlock(BlockModel):
    """The router's registers as the RTL drives them, around a :class:`~.router.RouterModel`.

    Parameters
    ----------
    params : RouterParams
        The router's elaboration parameters.
    bank : RegisterBankModel
        The core's register bank; its map must hold the ``router.*`` registers.

    Attributes
    ----------
    model : RouterModel
        The key, both table buffers, pool descriptors, class entries and counters. Tests route requests through
        it directly (``model.route(req)``); the counters follow on the next register read.
    """

    PREFIX = "router."
    COUNTERS = COUNTERS

    def __init__(self, params: RouterParams, bank: RegisterBankModel):
        super().__init__(bank)
        self.params = params
        self.model = RouterModel(params)
        for name, value in {"params.table_entries": params.table_entries, "params.id_bits": params.id_bits,
                            "sizes.pools": params.pools, "sizes.classes": CLASSES, "status.busy": 0}.items():
            bank.set_hw(self.PREFIX + name, value)
        self._sync()

    # -- bus events (called by CoreModel) --

    def before_read(self, reg: str, cycle: int) -> None:
        """A read of register ``reg`` (full name) is about to be answered."""
        name = reg[len(self.PREFIX):]
        if name == "table_rdata":
            self.bank.set_hw("router.table_rdata.value", self.model.read_word(self._value("table_addr")))
        else:
            self._sync()

    def after_write(self, reg: str, cycle: int) -> None:
        """A write to register ``reg`` (full name) was accepted."""
        name = reg[len(self.PREFIX):]
        if name.startswith("key["):
            self.model.set_key_word(int(name[4:-1]), self._value(name))
        elif name == "table_wdata":
            # swmod: the RAM takes the word at table_addr, and the address counts up (17 bits, wrapping).
            self.model.write_word(self._value("table_addr"), self._value("table_wdata"))
            self.bank.incr("router.table_addr.value")
        elif name == "pool_commit":
            if self._fired("pool_commit.go"):
                self._pool_commit()
        elif name == "class_commit":
            if self._fired("class_commit.go"):
                self._class_commit()
        elif name == "swap":
            if self._fired("swap.go"):
                self.model.swap()
                self._sync()

    # -- behaviour --

    def _pool_commit(self) -> None:
        index = self._field("pool_commit", "index")
        if index >= self.params.pools:
            return                                          # no such pool: the RTL ignores the commit
        self.model.commit_pool(index, self._value("pool_base"), self._field("pool_size", "m"),
                               bool(self._field("pool_size", "enabled")))

    def _class_commit(self) -> None:
        self.model.commit_class(self._field("class_commit", "index"), self._field("class_stage", "pool"),
                                self._field("class_stage", "key_sel"), self._field("class_stage", "header_slot"))

    def _sync(self) -> None:
        """Drive the fields that follow the model: the active buffer and the counters."""
        self.bank.set_hw("router.status.active", int(self.model.active))
        self._mirror_counters(self.model)
