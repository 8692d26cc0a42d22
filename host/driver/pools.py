"""Backend pools and route classes, as the driver offers them: ``Offload.pools`` and ``Offload.routes``.

gateway code ─▶ :class:`Pools` / :class:`Routes` (hold the Offload's lock, run one generator per call)
             ─▶ sans-IO :class:`RoutingCore` (intents → router and parser register operations)

:class:`RoutingCore` keeps the driver's side of the router: each pool's backends, weights, states and Maglev size;
the route classes and the parser prefix entries and extra header slots that lead to them; and a mirror of what each
of the router's two buffers holds (table words, pool descriptors, class entries). Every change is made the same
way: compute the whole buffer image wanted, write to the shadow buffer only the words, descriptors and classes that
differ from what that buffer holds, swap, and wait until the old buffer is out of use. Requests therefore see the
old configuration or the new one, never a mix. Every check is made before the first register write, so a call
that raises :class:`~wirespeed.host.errors.ConfigError` or :class:`~wirespeed.host.errors.TableFull` leaves the device
and the driver as they were. Registers and their behaviour: ``hdl/router/router.rdl``, ``hdl/parser/parser.rdl``,
``docs/router.md``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import numpy as np

from ...hdl.parser.layouts import EXTRA_NAMES_RESET, EXTRA_SLOTS, NAME_BYTES, PREFIX_BYTES, PREFIX_ENTRIES
from ...hdl.router.layouts import CLASSES, M_MAX, TOEPLITZ_KEY_BYTES, KeySelect, RouterParams
from ..errors import ConfigError, IncompatibleBitstream, TransportError, check_int
from ..errors import TableFull
from ..models.parser import ParserConfig
from .parser_config import pack_bytes
from .registers import Registers, Write
from ..maglev import failover_table, is_prime, maglev_table, pack_words
from ..errors import FeatureMissing, TableOpError
from .tenants import _pack, _unpack, read_features

__all__ = ["Pools", "Routes", "PoolInfo", "Route", "RoutingCore", "read_router_params", "default_pool_size",
           "DEFAULT_POOL_SIZE", "STATES", "SWAP_POLLS", "DEFAULT_CLASS"]

#: Backend states. Only ``up`` backends get new requests. A ``draining`` backend gets none but is reported as
#: draining, so the gateway can let its requests in flight finish; ``down`` is out of service. Entries of a backend
#: that is not up go to the up ones (:func:`~wirespeed.host.maglev.failover_table`); no other entry moves.
STATES = ("up", "draining", "down")
#: Reads of ``router.status`` a swap may stay busy for before the driver gives up. The drain takes a few cycles and
#: one read takes several, so the first read normally finds it done.
SWAP_POLLS = 1000
#: The route class of a request no prefix matches (``parser.route_default.default_class``).
DEFAULT_CLASS = 0


def default_pool_size(params: RouterParams) -> int:
    """The Maglev size a pool gets when :meth:`Pools.set` is given none: the largest prime ≤ min(65537,
    table_entries // pools), so that every pool fits at that size (2 when the table is too small for that)."""
    n = min(M_MAX, params.table_entries // params.pools)
    while n > 2 and not is_prime(n):
        n -= 1
    return max(n, 2)


#: :func:`default_pool_size` of the default core (8192 entries, 16 pools): 509. A device's own is
#: :attr:`Pools.default_size`.
DEFAULT_POOL_SIZE = default_pool_size(RouterParams())


def read_router_params(regs: Registers):
    """Read the core's router parameters from the ID and router registers (an operation generator).

    Returns
    -------
    (RouterParams, frozenset)
        The parameters and the names of the features the core has (``id.features``).

    Raises
    ------
    FeatureMissing
        If the core has no router.
    IncompatibleBitstream
        If the parameters are not ones this driver can use.
    """
    m = regs.regmap
    features = yield from read_features(regs, need="router")
    maglev = yield from regs.read("id.params_maglev")
    params = yield from regs.read("router.params")
    sizes = yield from regs.read("router.sizes")
    table_entries = _unpack(m, "router.params", params, "table_entries")
    if maglev != table_entries:
        raise IncompatibleBitstream(f"id.params_maglev = {maglev} disagrees with router.params.table_entries = "
                                    f"{table_entries}; the bitstream's ID block is inconsistent")
    classes = _unpack(m, "router.sizes", sizes, "classes")
    if classes != CLASSES:
        raise IncompatibleBitstream(f"router.sizes.classes = {classes}: this driver supports {CLASSES} route classes")
    try:
        return RouterParams(table_entries=table_entries, pools=_unpack(m, "router.sizes", sizes, "pools"),
                            id_bits=_unpack(m, "router.params", params, "id_bits")), features
    except ValueError as e:
        raise IncompatibleBitstream(f"router parameters this driver cannot use: {e}") from None


# -- records ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolInfo:
    """One pool as the driver configured it (:meth:`Pools.get`).

    Attributes
    ----------
    pool : int
        The pool index.
    size : int
        The Maglev table size M (a prime).
    base : int
        The pool's first entry in the shared table (its partition is ``base .. base+size−1``).
    backends : tuple
        The backends' labels as given to :meth:`Pools.set` (ints, or address strings), in that order.
    weights : tuple of int
        Their weights.
    states : dict
        Label → ``"up"``, ``"draining"`` or ``"down"``.
    table : numpy.ndarray
        The pool's table as the device holds it: ``size`` hardware backend ids (uint32; see ``ids``). It is the
        Maglev table of all the pool's backends, with the entries of those not ``up`` handed to the up ones. Empty
        when none is up (the pool answers 503). A copy.
    ids : tuple of int
        The hardware id of each backend, in the order of ``backends``: an int label is its own id; the driver
        assigns the others, and a label keeps its id while the pool is configured.
    """
    pool: int
    size: int
    base: int
    backends: tuple
    weights: tuple
    states: dict
    table: np.ndarray = field(compare=False, repr=False)
    ids: tuple = ()

    @property
    def enabled(self) -> bool:
        """Whether the pool has an ``up`` backend (else it answers 503)."""
        return "up" in self.states.values()

    def as_dict(self) -> dict:
        """JSON-ready, without the table."""
        return {"pool": self.pool, "size": self.size, "base": self.base, "backends": list(self.backends),
                "weights": list(self.weights), "states": {str(b): s for b, s in self.states.items()},
                "enabled": self.enabled, "ids": list(self.ids)}


@dataclass(frozen=True)
class Route:
    """One route (:meth:`Routes.list`): requests whose path starts with ``prefix`` go to ``pool``, hashed on ``key``.

    Attributes
    ----------
    prefix : bytes
        The path prefix.
    route_class : int
        The route class the parser reports for it (1..15; routes with the same pool and key share one).
    pool : int
        The pool.
    key : str
        ``"tenant"``, ``"header:<name>"`` or ``"l4"``.
    entry : int
        The parser's prefix table entry.
    """
    prefix: bytes
    route_class: int
    pool: int
    key: str
    entry: int

    def as_dict(self) -> dict:
        return {"prefix": self.prefix.decode("ascii", "backslashreplace"), "route_class": self.route_class,
                "pool": self.pool, "key": self.key, "entry": self.entry}


# -- driver state -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pool:
    """A configured pool: Maglev size, backend labels in the caller's order, their hardware ids, weights and
    states."""
    size: int
    backends: tuple
    weights: tuple
    states: tuple
    ids: tuple

    def up(self) -> tuple:
        """The hardware ids of the ``up`` backends."""
        return tuple(i for i, s in zip(self.ids, self.states) if s == "up")


@dataclass(frozen=True)
class _Target:
    """What a route class holds: its pool and hash input (``class_stage``)."""
    pool: int = 0
    key_sel: int = KeySelect.TENANT.value
    header_slot: int = 0


@dataclass(frozen=True)
class _Image:
    """What one buffer holds: table words, pool descriptors ``(base, m, enabled)`` and class entries."""
    words: np.ndarray
    pools: tuple
    classes: tuple

    def __eq__(self, other):
        return (isinstance(other, _Image) and self.pools == other.pools and self.classes == other.classes
                and np.array_equal(self.words, other.words))


@dataclass
class _RouteState:
    prefix: bytes
    entry: int
    route_class: int
    pool: int
    key: str
    header_slot: int | None


def _key_spec(key) -> tuple[KeySelect, bytes | None, str]:
    """``(key_sel, header name or None, normalised spelling)`` of a route key."""
    limit = 'must be "tenant", "l4" or "header:<name>" (a header name token of 1..32 bytes)'
    if not isinstance(key, str):
        raise ConfigError("key", key, limit)
    text = key.strip()
    lower = text.lower()
    if lower == "tenant":
        return KeySelect.TENANT, None, "tenant"
    if lower == "l4":
        return KeySelect.L4, None, "l4"
    if lower.startswith("header:"):
        try:
            name = ParserConfig(extras=(text[len("header:"):].strip(),)).extras[0]
        except ConfigError:
            raise ConfigError("key", key, limit) from None
        return KeySelect.HEADER, name, "header:" + name.decode()
    raise ConfigError("key", key, limit)


_LABEL_LIMIT = ('must be backend ids (ints in 0..{id_max}) or addresses: "host:port", "[v6]:port" or '
                '"scheme://host[:port][/path]"')


def _label(value, id_max: int):
    """A backend label, checked: an int id in range, or an address string. Anything else is a :class:`ConfigError`
    naming ``backends``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        if 0 <= value <= id_max:
            return int(value)
    elif isinstance(value, str) and value and value == value.strip() and not any(c.isspace() for c in value):
        try:
            parts = urlsplit(value if "://" in value else "//" + value)
            port = parts.port                               # ValueError when out of range or not a number
        except ValueError:
            parts, port = None, None
        if parts is not None and parts.hostname and port != 0 \
                and ("://" in value or (port is not None and not parts.path)):
            if ":" in parts.hostname:                       # only a bracketed IPv6 literal has a colon here
                try:
                    ipaddress.IPv6Address(parts.hostname)
                except ValueError:
                    parts = None
            if parts is not None:
                return value
    raise ConfigError("backends", value, _LABEL_LIMIT.format(id_max=id_max))


def _prefix_bytes(prefix) -> bytes:
    try:
        return ParserConfig(prefixes=((prefix, 0),)).prefixes[0][0]
    except ConfigError as e:
        raise ConfigError("prefix", prefix, e.limit) from None


# -- the driver core --------------------------------------------------------------------------------------------------

class RoutingCore:
    """The router's driver logic, free of I/O: each public method is an operation generator.

    Parameters
    ----------
    regs : Registers
        Register access for the core map.
    params : RouterParams
        The device's router parameters (:func:`read_router_params`).
    features : frozenset
        The core's features; routes need ``parser``.
    active : int or None
        The active buffer (``router.status.active``); None: read it before the first update.

    The driver assumes it configured the router and the parser's route tables since the core's reset: both buffers
    start as the reset image (all zero).
    """

    def __init__(self, regs: Registers, params: RouterParams, features=frozenset({"parser", "router"}),
                 active: int | None = None):
        self.regs = regs
        self.regmap = regs.regmap
        self.params = params
        self.features = frozenset(features)
        self.default_size = default_pool_size(params)
        self._pools: dict[int, _Pool] = {}
        #: Per pool: ((size, ids, weights), Maglev table over all of them) of the last one built.
        self._tables: dict[int, tuple] = {}
        #: Per pool: the hardware id each string label got, kept while the pool is configured (so that a label
        #: removed and given again gets its id, and its Maglev entries, back).
        self._label_ids: dict[int, dict[str, int]] = {}
        #: Per pool: hardware id → label, for :meth:`label`.
        self._labels: dict[int, dict[int, object]] = {}
        #: What each route class should hold, and how many routes (the default counts for class 0) use it.
        self._classes: list[_Target] = [_Target()] * CLASSES
        self._class_refs = [0] * CLASSES
        self._routes: dict[bytes, _RouteState] = {}
        self._entries: list[bytes | None] = [None] * PREFIX_ENTRIES
        #: What each extra header slot holds on the device (None: never written by this driver), and its users.
        #: The reset names (slot 0: x-token-estimate, the limiter's reset cost source) hold a reference that is
        #: never dropped, so a route never renames them; a route may hash on them.
        self._extras: list[bytes | None] = list(EXTRA_NAMES_RESET)
        self._extra_refs = [int(name is not None) for name in self._extras]
        self._default: _RouteState | None = None
        self._default_class_written = False
        reset = _Image(np.zeros(params.words, dtype=np.uint32), ((0, 0, False),) * params.pools,
                       (_Target(),) * CLASSES)
        #: What each buffer holds; None: unknown (a write failed), rewrite it whole.
        self._buffers: list[_Image | None] = [reset, reset]
        self._active = active

    @classmethod
    def attach(cls, regs: Registers):
        """Read the router's parameters and active buffer; returns a :class:`RoutingCore` (operation generator)."""
        params, features = yield from read_router_params(regs)
        core = cls(regs, params, features)
        core._active = yield from core._status()
        return core

    # -- arguments --

    def _pool_index(self, pool) -> int:
        return check_int("pool", pool, 0, self.params.pools - 1)

    def _configured(self, pool) -> int:
        index = self._pool_index(pool)
        if index not in self._pools:
            raise ConfigError("pool", pool, "an unknown pool: configure it with pools.set first")
        return index

    def _check_size(self, size) -> int:
        limit = min(M_MAX, self.params.table_entries)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 2 <= size <= limit \
                or not is_prime(int(size)):
            raise ConfigError("size", size, f"must be a prime in 2..{limit} (the pool's Maglev table size)")
        return int(size)

    def _check_backends(self, backends, size) -> tuple:
        """The labels, checked (:func:`_label`), distinct and at most ``size``."""
        id_max = (1 << self.params.id_bits) - 1
        if isinstance(backends, (str, bytes)) or not hasattr(backends, "__iter__"):
            raise ConfigError("backends", backends, "must be a sequence of backend ids or addresses")
        labels = [_label(b, id_max) for b in backends]
        if len(set(labels)) != len(labels):
            raise ConfigError("backends", backends, "must be distinct")
        if len(labels) > size:
            raise ConfigError("backends", len(labels), f"too many backends: a pool of size {size} holds at most "
                                                       f"{size}")
        if len(labels) > id_max + 1:
            raise ConfigError("backends", len(labels), f"too many backends: ids are {self.params.id_bits} bits, so "
                                                       f"a pool holds at most {id_max + 1}")
        return tuple(labels)

    def _assign_ids(self, index: int, labels: tuple) -> tuple[tuple, dict]:
        """``(ids, remembered)``: the hardware id of each label, and the pool's string label → id map afterwards.

        An int label is its own id. A string keeps the id it had in this pool unless an int label now takes it;
        otherwise it gets the lowest id no other label of the pool uses or remembers (forgotten ones are reused
        only when the id space runs out)."""
        id_max = (1 << self.params.id_bits) - 1
        remembered = dict(self._label_ids.get(index, {}))
        taken = {b for b in labels if isinstance(b, int)}
        out = {b: b for b in taken}
        for b in labels:
            if isinstance(b, str) and remembered.get(b) is not None and remembered[b] not in taken:
                out[b] = remembered[b]
                taken.add(out[b])
        listed = set(labels)
        reserved = taken | {i for label, i in remembered.items() if label not in listed}
        candidate = 0
        for b in labels:
            if b in out:
                continue
            while candidate <= id_max and candidate in reserved:
                candidate += 1
            if candidate > id_max:                          # forget labels that are not in the pool any more
                remembered = {label: i for label, i in remembered.items() if label in listed}
                reserved, candidate = set(taken), 0
                while candidate in reserved:                # at most 2^id_bits labels: one is free
                    candidate += 1
            out[b] = remembered[b] = candidate
            taken.add(candidate)
            reserved.add(candidate)
        return tuple(out[b] for b in labels), remembered

    def _find(self, index: int, backend) -> int:
        """The position of label ``backend`` in the pool; :class:`ConfigError` naming ``backend`` if absent."""
        current = self._pools[index]
        key = int(backend) if isinstance(backend, np.integer) else backend
        for at, label in enumerate(current.backends):
            if type(label) is type(key) and label == key:      # type: True is not backend 1
                return at
        raise ConfigError("backend", backend, f"not a backend of pool {index} (backends: {list(current.backends)})")

    def label(self, pool: int, backend_id: int):
        """The label of hardware id ``backend_id`` in ``pool`` (the id itself if the driver did not assign it)."""
        labels = self._labels.get(pool)
        return backend_id if labels is None else labels.get(backend_id, backend_id)

    @staticmethod
    def _check_weights(weights, count: int) -> tuple:
        if weights is None:
            return (1,) * count
        if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
            raise ConfigError("weights", weights, "must be a sequence of positive integers, one per backend")
        values = list(weights)
        if len(values) != count:
            raise ConfigError("weights", weights, f"needs one weight per backend ({count})")
        if not all(isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_)) and w > 0
                   for w in values):
            raise ConfigError("weights", weights, "weights must be positive integers")
        return tuple(int(w) for w in values)

    def _need_parser(self):
        if "parser" not in self.features:
            raise FeatureMissing("parser")

    # -- images --

    def _table(self, index: int, pool: _Pool) -> np.ndarray:
        """The pool's table: the Maglev table of all its backends (cached while they and their weights stay the
        same), with the entries of those not ``up`` handed to the up ones; empty if none is up."""
        up = pool.up()
        if not up:
            return np.zeros(0, dtype=np.uint32)
        key = (pool.size, pool.ids, pool.weights)
        cached = self._tables.get(index)
        if cached is None or cached[0] != key:
            cached = (key, maglev_table(pool.size, pool.ids, pool.weights))
            self._tables[index] = cached
        if len(up) == len(pool.ids):
            return cached[1]
        return failover_table(cached[1], pool.ids, pool.weights, up)

    def _bases(self, pools: dict) -> dict:
        """Pool index → base: pools are packed in index order. :class:`TableFull` if they do not fit."""
        bases, base = {}, 0
        for index in sorted(pools):
            bases[index] = base
            base += pools[index].size
        if base > self.params.table_entries:
            sizes = {i: p.size for i, p in sorted(pools.items())}
            raise TableFull("table", f"pool sizes {sizes} add up to {base} entries; the device has "
                                     f"{self.params.table_entries} (give smaller sizes)")
        return bases

    def _image(self, pools: dict, classes) -> _Image:
        p = self.params
        bases = self._bases(pools)
        per_word = p.ids_per_word
        entries = np.zeros(p.words * per_word, dtype=np.uint32)
        descriptors = [(0, 0, False)] * p.pools
        for index, pool in pools.items():
            table = self._table(index, pool)
            base = bases[index]
            if table.size:
                entries[base:base + pool.size] = table
            descriptors[index] = (base, pool.size, bool(table.size))
        return _Image(pack_words(entries, p.id_bits), tuple(descriptors), tuple(classes))

    # -- the update protocol --

    def _status(self):
        """Poll ``router.status`` until not busy; returns the active buffer."""
        r, m = self.regs, self.regmap
        for _ in range(SWAP_POLLS):
            status = yield from r.read("router.status")
            if not _unpack(m, "router.status", status, "busy"):
                return _unpack(m, "router.status", status, "active")
        raise TransportError(f"the router stayed busy for {SWAP_POLLS} status reads after a swap: the routing "
                             f"pipeline is stalled (is its output backpressured?)")

    def _apply(self, image: _Image):
        """Make ``image`` active: write what differs into the shadow buffer, swap, wait. Returns whether it swapped."""
        if self._active is None:
            self._active = yield from self._status()
        if self._buffers[self._active] == image:
            return False
        r, m = self.regs, self.regmap
        shadow = self._active ^ 1
        mirror = self._buffers[shadow]
        self._buffers[shadow] = None                       # unknown until every write below is done
        yield from self._write_words(image.words, None if mirror is None else mirror.words)
        for index, desc in enumerate(image.pools):
            if mirror is None or mirror.pools[index] != desc:
                base, size, enabled = desc
                yield from r.write("router.pool_base", base)
                yield from r.write("router.pool_size", _pack(m, "router.pool_size", m=size, enabled=enabled))
                yield from r.write("router.pool_commit", _pack(m, "router.pool_commit", index=index, go=1))
        for index, target in enumerate(image.classes):
            if mirror is None or mirror.classes[index] != target:
                yield from r.write("router.class_stage", _pack(m, "router.class_stage", pool=target.pool,
                                                               key_sel=target.key_sel,
                                                               header_slot=target.header_slot))
                yield from r.write("router.class_commit", _pack(m, "router.class_commit", index=index, go=1))
        self._buffers[shadow] = image
        old, self._active = self._active, None              # unknown until the swap is seen done
        yield from r.write("router.swap", _pack(m, "router.swap", go=1))
        active = yield from self._status()
        if active != shadow:
            self._buffers = [None, None]
            raise TableOpError(f"router.status.active is {active} after a swap from buffer {old}: another "
                               f"process swaps this router's buffers, or the core was reset")
        self._active = active
        return True

    def _write_words(self, words: np.ndarray, mirror: np.ndarray | None):
        """Shadow words that differ from ``mirror`` (all if None): ``table_addr`` once per run, then ``table_wdata``
        for each word of the run (the address counts up in hardware)."""
        changed = np.arange(words.size) if mirror is None else np.flatnonzero(words != mirror)
        if not changed.size:
            return
        wdata = self.regmap["router.table_wdata"].address
        for run in np.split(changed, np.flatnonzero(np.diff(changed) != 1) + 1):
            yield from self.regs.write("router.table_addr", int(run[0]))
            for word in words[run[0]:run[-1] + 1].tolist():
                yield Write(wdata, word)

    # -- pools --

    def set_pool(self, pool, backends, weights=None, size=None):
        index = self._pool_index(pool)
        old = self._pools.get(index)
        size = (old.size if old is not None else self.default_size) if size is None else self._check_size(size)
        labels = self._check_backends(backends, size)
        weights = self._check_weights(weights, len(labels))
        ids, remembered = self._assign_ids(index, labels)
        previous = dict(zip(old.backends, old.states)) if old is not None else {}
        states = tuple(previous.get(b, "up") for b in labels)
        pools = {**self._pools, index: _Pool(size, labels, weights, states, ids)}
        yield from self._apply(self._image(pools, self._classes))
        self._pools = pools
        self._label_ids[index] = remembered
        self._labels[index] = dict(zip(ids, labels))
        return self.pool_info(index)

    def set_state(self, pool, backend, state):
        index = self._configured(pool)
        current = self._pools[index]
        at = self._find(index, backend)
        if state not in STATES:
            raise ConfigError("state", state, f"must be one of {list(STATES)}")
        states = current.states[:at] + (state,) + current.states[at + 1:]
        pools = {**self._pools, index: replace(current, states=states)}
        yield from self._apply(self._image(pools, self._classes))
        self._pools = pools
        return self.pool_info(index)

    def pool_info(self, pool) -> PoolInfo:
        index = self._configured(pool)
        p = self._pools[index]
        return PoolInfo(pool=index, size=p.size, base=self._bases(self._pools)[index], backends=p.backends,
                        weights=p.weights, states=dict(zip(p.backends, p.states)),
                        table=self._table(index, p).copy(), ids=p.ids)

    @property
    def configured(self) -> list[int]:
        return sorted(self._pools)

    # -- routes --

    def _header_slot(self, name: bytes, releasing: int | None) -> tuple[int, bool]:
        """``(slot, write)``: the extra header slot for ``name``, and whether its name must be written.

        A slot holding the name is shared. Otherwise the lowest free slot is taken, or the one only the route being
        changed uses (``releasing``)."""
        if name in self._extras:
            return self._extras.index(name), False
        for slot in range(EXTRA_SLOTS):
            if not self._extra_refs[slot]:
                return slot, True
        # Renaming the slot in use changes what the active class hashes before the swap; only when no slot is free.
        if releasing is not None and self._extra_refs[releasing] == 1:
            return releasing, True
        raise TableFull("headers", f"all {EXTRA_SLOTS} extra header slots hold other names in use "
                                   f"({[n.decode() for n in self._extras if n]}); hash on one of them or remove routes")

    def _class_for(self, target: _Target, releasing: int | None) -> int:
        """The route class for ``target``: one already holding it (shared), else a free one, else the one only the
        route being changed uses (``releasing``, rewritten in place)."""
        for c in range(1, CLASSES):
            if self._class_refs[c] and self._classes[c] == target:
                return c
        free = [c for c in range(1, CLASSES) if not self._class_refs[c]]
        for c in free:
            if self._classes[c] == target:
                return c
        if free:
            return free[0]
        if releasing is not None and self._class_refs[releasing] == 1:
            return releasing
        raise TableFull("routes", f"all {CLASSES - 1} route classes are in use by other (pool, key) pairs; "
                                  f"share a pool and key between routes or remove routes")

    def _resolve_target(self, pool, key, old: _RouteState | None):
        """``(target, slot, name, write_name, spelling)`` for a route to ``pool`` hashed on ``key``; no side effects."""
        index = self._configured(pool)
        sel, name, spelling = _key_spec(key)
        slot, write_name = None, False
        if name is not None:
            slot, write_name = self._header_slot(name, old.header_slot if old is not None else None)
        return _Target(index, sel.value, slot or 0), slot, name, write_name, spelling

    def _hold(self, route: _RouteState, slot: int | None, name: bytes | None):
        self._class_refs[route.route_class] += 1
        if slot is not None:
            self._extras[slot] = name
            self._extra_refs[slot] += 1

    def _drop(self, route: _RouteState):
        self._class_refs[route.route_class] -= 1
        if route.header_slot is not None:
            self._extra_refs[route.header_slot] -= 1

    def _write_extra(self, slot: int, name: bytes):
        """Extra header slot ``slot`` := ``name``, as :func:`~.parser_config.configure_ops` writes it."""
        r, m = self.regs, self.regmap
        for i, word in enumerate(pack_bytes(name, NAME_BYTES)):
            yield from r.write(f"parser.extra_data[{i}]", word)
        yield from r.write("parser.extra_ctrl.len", len(name))
        yield from r.write("parser.extra_commit", _pack(m, "parser.extra_commit", index=slot, go=1))

    def _write_prefix(self, entry: int, prefix: bytes, route_class: int, valid: bool):
        """Prefix table entry ``entry``, as :func:`~.parser_config.configure_ops` writes it (an unused entry is
        an empty prefix with class 0 and valid 0)."""
        r, m = self.regs, self.regmap
        for i, word in enumerate(pack_bytes(prefix, PREFIX_BYTES)):
            yield from r.write(f"parser.prefix_data[{i}]", word)
        yield from r.write("parser.prefix_ctrl", _pack(m, "parser.prefix_ctrl", len=len(prefix),
                                                       route_class=route_class, valid=valid))
        yield from r.write("parser.prefix_commit", _pack(m, "parser.prefix_commit", index=entry, go=1))

    def add_route(self, prefix, pool, key="tenant"):
        self._need_parser()
        prefix = _prefix_bytes(prefix)
        old = self._routes.get(prefix)
        target, slot, name, write_name, spelling = self._resolve_target(pool, key, old)
        if old is not None and (old.pool, old.key) == (target.pool, spelling):
            return old.route_class
        route_class = self._class_for(target, old.route_class if old is not None else None)
        if old is not None:
            entry = old.entry
        elif None in self._entries:
            entry = self._entries.index(None)
        else:
            raise TableFull("routes", f"all {PREFIX_ENTRIES} parser prefix entries are in use; remove a route")
        classes = list(self._classes)
        classes[route_class] = target
        image = self._image(self._pools, classes)
        # The header name and the class first: the prefix only leads requests there once both are in place.
        if write_name:
            yield from self._write_extra(slot, name)
            self._extras[slot] = name
        yield from self._apply(image)
        self._classes = classes
        if old is None or old.route_class != route_class:
            yield from self._write_prefix(entry, prefix, route_class, True)
        route = _RouteState(prefix, entry, route_class, target.pool, spelling, slot)
        self._hold(route, slot, name)
        if old is not None:
            self._drop(old)
        self._routes[prefix] = route
        self._entries[entry] = prefix
        return route_class

    def remove_route(self, prefix):
        self._need_parser()
        prefix = _prefix_bytes(prefix)
        route = self._routes.get(prefix)
        if route is None:
            raise ConfigError("prefix", prefix, "no route has this prefix")
        # The prefix goes first: requests fall back to the default class. The class entry stays as it is until
        # reused; no request leads to it any more.
        yield from self._write_prefix(route.entry, b"", 0, False)
        self._drop(route)
        del self._routes[prefix]
        self._entries[route.entry] = None
        return route.route_class

    def set_default(self, pool, key="tenant"):
        old = self._default
        target, slot, name, write_name, spelling = self._resolve_target(pool, key, old)
        if old is not None and (old.pool, old.key) == (target.pool, spelling) and self._default_class_written:
            return DEFAULT_CLASS
        classes = list(self._classes)
        classes[DEFAULT_CLASS] = target
        image = self._image(self._pools, classes)
        if write_name:
            yield from self._write_extra(slot, name)
            self._extras[slot] = name
        yield from self._apply(image)
        self._classes = classes
        if "parser" in self.features and not self._default_class_written:
            yield from self.regs.write("parser.route_default.default_class", DEFAULT_CLASS)
            self._default_class_written = True
        route = _RouteState(b"", -1, DEFAULT_CLASS, target.pool, spelling, slot)
        self._hold(route, slot, name)
        if old is not None:
            self._drop(old)
        self._default = route
        return DEFAULT_CLASS

    def routes(self) -> list[Route]:
        return [Route(r.prefix, r.route_class, r.pool, r.key, r.entry)
                for r in sorted(self._routes.values(), key=lambda r: r.entry)]

    def default_route(self) -> Route | None:
        d = self._default
        return None if d is None else Route(b"", DEFAULT_CLASS, d.pool, d.key, -1)

    def set_hash_key(self, key):
        if isinstance(key, str) or not isinstance(key, (bytes, bytearray, memoryview)) \
                or len(key) != TOEPLITZ_KEY_BYTES:
            # A secret: the message names its type and length, never its bytes.
            shown = f"<{type(key).__name__} of {len(key)} bytes>" if hasattr(key, "__len__") else \
                f"<{type(key).__name__}>"
            raise ConfigError("key", shown, f"must be {TOEPLITZ_KEY_BYTES} bytes (e.g. os.urandom("
                                            f"{TOEPLITZ_KEY_BYTES}))")
        key = bytes(key)
        for i in range(TOEPLITZ_KEY_BYTES // 4):
            yield from self.regs.write(f"router.key[{i}]", int.from_bytes(key[4 * i:4 * i + 4], "big"))


# -- public faces -----------------------------------------------------------------------------------------------------

class Pools:
    """The router's backend pools: ``Offload.pools``. Every method holds the Offload's lock throughout.

    A pool is a Maglev table of ``size`` entries (a prime) over its backends, weighted; the pools share the
    device's table, packed in index order. Route classes pick a pool (:class:`Routes`). Changes reach the device as
    one atomic buffer swap each: a request sees the old pool or the new one.

    Backends are named by labels: addresses such as ``"10.0.0.1:8000"`` or ``"http://h:9001"``, or ints. The driver
    gives each label a hardware id, and :attr:`Verdict.backend` is the label again.

    Two kinds of change move sessions differently (``docs/router.md``, "Health changes"):
    - :meth:`set_state` changes only the entries of the backend it names, and putting a backend back ``up``
      restores the table it had;
    - :meth:`set` with another backend list builds a new Maglev table, which also moves some entries between
      backends that stay (``docs/performance.md`` gives the measured share).
    """

    def __init__(self, offload, core: RoutingCore):
        self._offload = offload
        self.core = core

    def _run(self, ops):
        return self._offload._run(ops)

    def set(self, pool: int, backends, weights=None, *, size: int | None = None) -> PoolInfo:
        """Give ``pool`` these backends (all ``up``, except those already in it, which keep their state).

        Parameters
        ----------
        pool : int
            0..pools−1.
        backends : sequence of int or str
            Distinct labels, at most ``size`` of them; empty: the pool answers 503. An int is a hardware backend
            id, 0..2^id_bits−1, and is its own label. A string is an address, ``"host:port"``, ``"[v6]:port"`` or
            ``"scheme://host[:port][/path]"``, and the driver assigns its id (:attr:`PoolInfo.ids`); a label keeps
            its id while the pool is configured. :attr:`Verdict.backend` reports the label as given.
        weights : sequence of int, optional
            Positive weights, one per backend (all 1 when omitted): each gets entries in proportion.
        size : int, optional
            The pool's Maglev table size M, a prime in 2..min(65537, table_entries). Default: the pool's current
            size, else :attr:`default_size`.

        Raises
        ------
        ConfigError
            Naming ``pool``, ``size``, ``backends`` or ``weights``.
        TableFull
            ``"table"`` when the pools' sizes add up to more than the device's table. Nothing is written.
        """
        return self._run(self.core.set_pool(pool, backends, weights, size))

    def set_state(self, pool: int, backend, state: str) -> PoolInfo:
        """Set a backend (its label, as given to :meth:`set`) ``"up"``, ``"draining"`` or ``"down"``.

        Taking a backend out changes only the table entries that point at it: they go to the ``up`` backends in
        proportion to their weights, and every other entry stays as it is, so no session on another backend moves.
        Setting it ``up`` again restores the identical table. A pool with no backend up answers 503. Raises
        :class:`ConfigError` naming ``pool``, ``backend`` or ``state``.
        """
        return self._run(self.core.set_state(pool, backend, state))

    def get(self, pool: int) -> PoolInfo:
        """The pool as the driver configured it (no bus access); :class:`ConfigError` if it never was."""
        with self._offload._lock:
            return self.core.pool_info(pool)

    def table(self, pool: int) -> np.ndarray:
        """The pool's table of hardware backend ids (a copy; empty when no backend is up)."""
        return self.get(pool).table

    def label(self, pool: int, backend_id: int):
        """The label of the backend with hardware id ``backend_id`` in ``pool`` (no bus access)."""
        with self._offload._lock:
            return self.core.label(pool, backend_id)

    @property
    def default_size(self) -> int:
        """The size a pool gets when none is given: the largest prime ≤ min(65537, table_entries // pools)."""
        return self.core.default_size

    @property
    def params(self) -> RouterParams:
        """The device's router parameters."""
        return self.core.params

    def __iter__(self):
        with self._offload._lock:
            return iter(self.core.configured)

    def __len__(self) -> int:
        with self._offload._lock:
            return len(self.core.configured)

    def __contains__(self, pool) -> bool:
        with self._offload._lock:
            return pool in self.core.configured

    def __repr__(self):
        return f"<wirespeed.Pools {len(self)}/{self.params.pools}>"


class Routes:
    """Route classes: ``Offload.routes``. Every method holds the Offload's lock throughout.

    A route sends requests whose path starts with a prefix (the parser's prefix table, longest match) to a pool,
    hashing the API key's fingerprint (``"tenant"``, tenant affinity), an extra header (``"header:<name>"``,
    session affinity) or the L4 tuple (``"l4"``). Requests no prefix matches use the default class
    (:meth:`default`). Routes with the same pool and key share a route class; there are 15 besides the default.
    """

    def __init__(self, offload, core: RoutingCore):
        self._offload = offload
        self.core = core

    def _run(self, ops):
        return self._offload._run(ops)

    def add(self, prefix, pool: int, key: str = "tenant") -> int:
        """Route paths starting with ``prefix`` (str or bytes, ≤ 32 bytes) to a configured ``pool``; returns the
        route class. Adding a present prefix again points it at the new pool and key.

        Raises
        ------
        ConfigError
            Naming ``prefix``, ``pool`` (also: not configured with :meth:`Pools.set`) or ``key``.
        TableFull
            ``"routes"`` (no route class or prefix entry left) or ``"headers"`` (no extra header slot left for a
            new header name). Nothing is written.
        FeatureMissing
            The core has no parser.
        """
        return self._run(self.core.add_route(prefix, pool, key))

    def remove(self, prefix) -> int:
        """Remove the route of ``prefix``; its requests fall back to the default class. Returns its route class."""
        return self._run(self.core.remove_route(prefix))

    def default(self, pool: int, key: str = "tenant") -> int:
        """Send requests no prefix matches to ``pool``, hashed on ``key``: route class 0. Returns 0."""
        return self._run(self.core.set_default(pool, key))

    def list(self) -> list[Route]:
        """The routes, by prefix table entry (the default is :attr:`default_route`)."""
        with self._offload._lock:
            return self.core.routes()

    @property
    def default_route(self) -> Route | None:
        """The default route (``prefix`` empty, ``entry`` −1), or None if :meth:`default` was never called."""
        with self._offload._lock:
            return self.core.default_route()

    def set_hash_key(self, key: bytes) -> None:
        """Set the router's 40-byte Toeplitz key (write-only; all zero at reset, which hashes every key to 0).

        Set a secret random key before serving traffic, so clients cannot steer their requests' hashes."""
        return self._run(self.core.set_hash_key(key))

    def __len__(self) -> int:
        with self._offload._lock:
            return len(self.core.routes())

    def __repr__(self):
        return f"<wirespeed.Routes {len(self)}>"
