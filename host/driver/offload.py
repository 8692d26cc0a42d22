"""``wirespeed.open(uri)`` and the :class:`Offload` handle: the driver's public face.

gateway code ─▶ :func:`open` ─▶ :class:`Offload` ─▶ sans-IO :class:`OffloadCore` (intents → register operations)
                                               ─▶ a :class:`~wirespeed.host.transports.base.Transport` chosen by the URI

URIs::

    model               bit-exact Python model of the core (no RTL, no Verilator)
    software            the model's verdicts computed at CPU speed, without registers on the classify path
                        (host/transports/software.py): the fallback when no FPGA is present
    sim                 the Verilated RTL in-process (compiled harness); first use compiles it (cached in build/)
    pynq:<bitfile>      a PYNQ overlay, through pynq.Overlay / pynq.MMIO
    uio:/dev/uioN       mmap of a UIO device's map 0
    pci:<bdf>[/barN]    mmap of /sys/bus/pci/devices/<bdf>/resourceN (bar0 by default)
    uart:<dev>[@baud]   a board's UART-to-AXI4-Lite bridge (docs/uart-bridge.md), through pyserial

``model`` and ``sim`` take ``submit="stream"`` (default: classify batches through the packet stream, like a board's
DMA) or ``submit="mmio"`` (through the MMIO submit window, as the board transports do).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import operator
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ...hdl.id.id_block import FEATURES, CoreParams
from ..errors import ConfigError, DeviceNotFound, IncompatibleBitstream, TransportError
from ..keys import derive_key
from .policy import Policy, PolicyCore
from .pools import Pools, Routes, RoutingCore
from ...hdl.bus.regmap import RegMap, core_regmap
from .registers import Registers, arun, run
from .submit import SubmitCore
from .stats import LatencyHistogram, read_latency_histogram, read_stats
from .tenants import Clock, ClockCore, Tenants, TenantsCore, check_clock_mode, read_limiter_params
from ..errors import FeatureMissing
from ..transports.base import AsyncTransport, Transport
from .verdict import Verdict, decode_records

__all__ = ["open", "open_async", "Offload", "AsyncOffload", "OffloadCore", "DeviceInfo", "open_transport", "SCHEMES"]

SCHEMES = ("model", "software", "sim", "pynq", "uio", "pci", "uart")


@dataclass(frozen=True)
class DeviceInfo:
    """The decoded ID block."""
    magic: int
    version: tuple[int, int]
    build_hash: int
    features: frozenset
    width_bytes: int
    tenants: int
    maglev_size: int
    clock_hz: int

    def as_dict(self) -> dict:
        return {"magic": f"0x{self.magic:08x}", "version": f"{self.version[0]}.{self.version[1]}",
                "build_hash": f"0x{self.build_hash:08x}", "features": sorted(self.features),
                "width_bytes": self.width_bytes, "tenants": self.tenants, "maglev_size": self.maglev_size,
                "clock_hz": self.clock_hz}


class OffloadCore:
    """The driver's logic, free of I/O: each method is a generator of bus operations (see :mod:`.registers`).

    The expected magic and the supported major version come from the reset values in ``id.rdl``.
    """

    def __init__(self, regmap: RegMap | None = None):
        self.regmap = regmap or core_regmap()
        self.regs = Registers(self.regmap)
        self.magic = self.regmap["id.magic"].field("value").reset
        self.major = self.regmap["id.version"].field("major").reset

    def check_id(self):
        """Raise :class:`IncompatibleBitstream` unless the core's magic and major version are ours."""
        magic = yield from self.regs.read("id.magic")
        if magic != self.magic:
            raise IncompatibleBitstream(
                f"ID magic is 0x{magic:08x}, expected 0x{self.magic:08x}: this is not a wirespeed core "
                f"(wrong base address, or the bitstream is not loaded)")
        major = yield from self.regs.read("id.version.major")
        if major != self.major:
            raise IncompatibleBitstream(
                f"core register map major version {major} is not supported by this driver (supports {self.major}); "
                f"install the wirespeed release that built the bitstream")

    def info(self):
        r = self.regs
        version = yield from r.read("id.version")
        features = yield from r.read("id.features")
        fields = self.regmap["id.features"]
        return DeviceInfo(
            magic=(yield from r.read("id.magic")),
            version=(version >> 16, version & 0xFFFF),
            build_hash=(yield from r.read("id.build_hash")),
            features=frozenset(n for n in FEATURES if features >> fields.field(n).lsb & 1),
            width_bytes=(yield from r.read("id.params_stream.width_bytes")),
            tenants=(yield from r.read("id.params_tenants")),
            maglev_size=(yield from r.read("id.params_maglev")),
            clock_hz=(yield from r.read("id.params_clock")),
        )


def _check_options(cls, options: dict, uri: str) -> None:
    """:class:`ConfigError` naming an option the transport ``cls`` does not take, or a ``params`` that is not a
    :class:`CoreParams` (both would otherwise fail deep inside with a ``TypeError`` or ``AttributeError``)."""
    accepted = [name for name in inspect.signature(cls).parameters if name != "self"]
    for name in options:
        if name not in accepted:
            raise ConfigError("options", name, f"{uri!r} takes {accepted} (and open() takes clock)")
    if "params" in options and not isinstance(options["params"], CoreParams):
        raise ConfigError("params", options["params"], "must be a wirespeed.hdl.id.id_block.CoreParams")


def open_transport(uri: str, **options) -> Transport:
    """Make the transport a URI names (see the module docstring). ``options`` go to the transport."""
    if not isinstance(uri, str):
        raise ConfigError("uri", uri, f"must be a str naming a device, e.g. 'model' or 'sim' (schemes: "
                                      f"{', '.join(SCHEMES)})")
    scheme, sep, rest = uri.partition(":")
    if scheme in ("model", "sim") and sep:
        raise ConfigError("uri", uri, f"the {scheme} scheme takes no argument: open({scheme!r}, **options) "
                                      f"(e.g. submit='mmio')")
    if scheme == "model":
        from ..transports.model import ModelTransport
        _check_options(ModelTransport, options, uri)
        return ModelTransport(**options)
    if scheme == "software":
        from ..transports.software import SoftwareTransport
        if uri != "software":
            raise DeviceNotFound(f"unknown URI {uri!r}: the software path takes no argument, use 'software'")
        _check_options(SoftwareTransport, options, uri)
        return SoftwareTransport(**options)
    if scheme == "sim":
        from ..transports.sim import SimTransport
        _check_options(SimTransport, options, uri)
        return SimTransport(**options)
    if scheme == "pynq":
        from ..transports.pynq import PynqTransport
        if not rest:
            raise TransportError("pynq URI needs a bitfile: pynq:<path/to/design.bit>")
        return PynqTransport(rest, **options)
    if scheme == "uio":
        from ..transports.mmap import open_uio
        if not rest:
            raise TransportError("uio URI needs a device: uio:/dev/uioN")
        return open_uio(rest, **options)
    if scheme == "pci":
        from ..transports.mmap import open_pci
        if not rest:
            raise TransportError("pci URI needs a device: pci:<domain:bus:dev.fn>[/barN]")
        return open_pci(rest, **options)
    if scheme == "uart":
        from ..transports.uart import open_uart
        if not rest:
            raise TransportError("uart URI needs a device: uart:/dev/ttyUSB0[@baud]")
        return open_uart(rest, **options)
    raise DeviceNotFound(f"unknown URI {uri!r}; schemes: {', '.join(SCHEMES)}")


def _request_list(requests) -> list:
    """``requests`` as a list. One request (bytes or str) is refused: iterating it would give ints, not requests."""
    if isinstance(requests, (bytes, bytearray, memoryview, str)):
        head = requests[:40] if isinstance(requests, str) else bytes(requests[:40])
        raise ConfigError("requests", head, f"must be a list of requests (each bytes), not one request of length "
                          f"{len(requests)} (first 40 shown): use classify(request) or classify_many([request])")
    try:
        return list(requests)
    except TypeError:
        raise ConfigError("requests", requests, "must be a list (or other iterable) of requests, each bytes") from None


def _one_request(request, field: str = "request") -> bytes:
    if not isinstance(request, (bytes, bytearray, memoryview)):
        what = "the Ethernet frame" if field == "frame" else "the HTTP/1.1 request; encode a str first"
        raise ConfigError(field, type(request).__name__, f"must be bytes ({what})")
    return request


_DATA, _INLINE = operator.itemgetter(0), operator.itemgetter(1)


def _mappings(routing: RoutingCore | None, tenants: Tenants | None) -> tuple:
    """``(label, tenant_id)`` for :meth:`Verdict.from_record`: a backend id to its label (``pools.set``), a tenant
    slot to its id (``tenants.add``); None for either the driver holds no table of."""
    return (None if routing is None else routing.label, None if tenants is None else tenants.core.tenant_id)


def _decode(records, routing: RoutingCore | None, tenants: Tenants | None) -> list[Verdict]:
    """Verdicts from records: the tenant by its id (``tenants.add``), a forwarded request's backend by its label
    (``pools.set``); the raw numbers when the driver holds no table to map them."""
    return decode_records(records, *_mappings(routing, tenants))


class Offload:
    """A handle on one wirespeed core. Use as a context manager; every method is thread-safe.

    Opening reads the ID block and raises :class:`IncompatibleBitstream` if the core is not one this driver knows.

    Attributes
    ----------
    tenants : Tenants
        The limiter's tenant table (:class:`~.tenants.Tenants`).
    clock : Clock
        The limiter's nanosecond clock (:class:`~.tenants.Clock`).
    pools : Pools
        The router's backend pools (:class:`~.pools.Pools`).
    routes : Routes
        The route classes: path prefix → pool and hash key (:class:`~.pools.Routes`).
    policy : Policy
        The request policy: Upgrade, CONNECT, target form and the method allowlist (:class:`~.policy.Policy`).

    ``tenants`` and ``clock`` raise :class:`~.tenants.FeatureMissing` on a core without a limiter, ``pools`` and
    ``routes`` on a core without a router.

    ``clock``: ``"wall"`` (what :func:`open` gives) steps the limiter's clock forward to the host's monotonic clock
    before each classification and tenant command, so that a rate is per real second on every transport;
    ``"manual"`` leaves it to ``clock.step`` and ``clock.ns_per_cycle`` (:class:`~.tenants.Clock`).
    """

    def __init__(self, transport: Transport, uri: str = "?", core: OffloadCore | None = None,
                 clock: str = "wall"):
        self.uri = uri
        self.transport = transport
        self.core = core or OffloadCore()
        self._lock = threading.RLock()
        self.clock_mode = check_clock_mode(clock)
        self._limiter_params = None
        self._tenants = None
        self._clock = None
        self._clock_core = None
        self._routing = None
        self._pools = None
        self._routes = None
        self._features = None
        self._submit = None
        self._policy = None
        self._classify_request = getattr(transport, "classify_request", None)
        try:
            self._run(self.core.check_id())
        except BaseException:
            transport.close()
            raise

    def _run(self, ops):
        with self._lock:
            return run(ops, self.transport)

    def info(self) -> DeviceInfo:
        """The decoded ID block."""
        return self._run(self.core.info())

    def _limiter(self):
        # Read once: the parameters are fixed by the bitstream.
        if self._limiter_params is None:
            self._limiter_params = self._run(read_limiter_params(self.core.regs))
        return self._limiter_params

    @property
    def tenants(self) -> Tenants:
        """The tenant table: add, update, remove, get, debit, refund (:class:`~.tenants.Tenants`)."""
        with self._lock:
            if self._tenants is None:
                self._tenants = Tenants(self, TenantsCore(self.core.regs, self._limiter()), self._clocks())
            return self._tenants

    def _clocks(self) -> ClockCore:
        if self._clock_core is None:
            self._limiter()
            self._clock_core = ClockCore(self.core.regs, wall=self.clock_mode == "wall",
                                         direct=getattr(self.transport, "limiter_clock", None))
        return self._clock_core

    @property
    def clock(self) -> Clock:
        """The limiter's nanosecond clock: now, step, ns_per_cycle (:class:`~.tenants.Clock`)."""
        with self._lock:
            if self._clock is None:
                self._clock = Clock(self, self._clocks())
            return self._clock

    def _discipline(self) -> None:
        """Wall mode: the limiter clock stepped forward to the host's (classification needs the limiter)."""
        if self.clock_mode == "wall":
            clocks = self._clocks()
            if clocks.direct is not None:
                clocks.discipline_direct()      # (no register program to run: a plain call)
            else:
                self._run(clocks.discipline())

    def _routing_core(self) -> RoutingCore:
        # One core behind both faces: routes and pools share the router's buffers.
        if self._routing is None:
            self._routing = self._run(RoutingCore.attach(self.core.regs))
        return self._routing

    @property
    def pools(self) -> Pools:
        """The router's backend pools: set, set_state, get, table (:class:`~.pools.Pools`)."""
        with self._lock:
            if self._pools is None:
                self._pools = Pools(self, self._routing_core())
            return self._pools

    @property
    def routes(self) -> Routes:
        """The route classes: add, remove, default, list (:class:`~.pools.Routes`)."""
        with self._lock:
            if self._routes is None:
                self._routes = Routes(self, self._routing_core())
            return self._routes

    @property
    def policy(self) -> Policy:
        """The request policy: set, allow_methods, get (:class:`~.policy.Policy`, ``docs/pipeline.md``)."""
        with self._lock:
            if self._policy is None:
                self._need("submit")
                self._policy = Policy(self, PolicyCore(self.core.regs))
            return self._policy

    def set_hash_key(self, key: bytes) -> None:
        """Set the router's 40-byte Toeplitz key (write-only; all zero at reset). Set a secret random one before
        serving untrusted traffic, so clients cannot steer their hashes (``docs/router.md``)."""
        self.routes.set_hash_key(key)

    def set_fingerprint_key(self, secret: bytes) -> None:
        """Key the parser's API-key fingerprint with ``secret`` (``derive_key``: a dense irreducible modulus and a
        seed; write-only on the device). Without it the reset key is public and sparse, so clients could aim keys at
        one tenant-table bucket (``docs/limiter.md``). Every process that adds tenants must use the same secret.

        Raises :class:`ConfigError` if ``secret`` is not bytes (a ``str`` too, as :meth:`set_hash_key` refuses one) or
        is empty, and once this driver has added tenants: their slots hold fingerprints under the old key."""
        if not isinstance(secret, (bytes, bytearray, memoryview)):
            # A secret: the message shows its type, never its text.
            raise ConfigError("secret", f"<{type(secret).__name__}>", "must be bytes (e.g. os.urandom(16)); encode a "
                              "str first, as set_hash_key asks")
        if not len(secret):
            raise ConfigError("secret", bytes(secret), "must be at least 1 byte (e.g. os.urandom(16))")
        poly, seed = derive_key(secret)
        with self._lock:
            if self._tenants is not None and len(self._tenants.core.placement):
                raise ConfigError("fingerprint key", "<secret>", "set it before adding tenants: the table holds "
                                  "fingerprints under the current key")
            self._run(self.core.regs.write("parser.fp_poly", poly))
            self._run(self.core.regs.write("parser.fp_seed", seed))
            if "limiter" in self.info().features:
                self.tenants.set_fingerprint_key(poly, seed)

    # -- classification (lookaside through the MMIO submit window; docs/pipeline.md) --

    def _verdicts(self, records) -> list[Verdict]:
        # Called holding the lock, so that no tenant moves between the decision and the decode.
        return _decode(records, self._routing, self._tenants)

    def _need(self, feature: str) -> None:
        if self._features is None:
            self._features = self.info().features
        if feature not in self._features:
            raise FeatureMissing(feature)

    def _submit_core(self) -> SubmitCore:
        if self._submit is None:
            self._need("submit")
            self._submit = self._run(SubmitCore.attach(self.core.regs))
        return self._submit

    def _classify(self, items) -> list[Verdict]:
        """``(bytes, inline)`` items in order. A transport with a packet stream (``classify_stream``: ``"sim"``,
        ``"model"``) takes each run of requests or frames as one batch through ``s_axis``; any other goes through
        the MMIO submit window. Both check and cut the items the same way first."""
        with self._lock:
            core = self._submit_core()
            self._discipline()
            stream = getattr(self.transport, "classify_stream", None)
            if stream is None:
                records = self._run(core.classify(items))
            else:
                records = []
                for inline, run in itertools.groupby(self._run(core.prepare(items)), key=_INLINE):
                    self._run(self.core.regs.write("pipeline.ctrl.axis_inline", int(inline)))
                    records += stream(list(map(_DATA, run)), inline)
            return self._verdicts(records)

    def classify_many(self, requests) -> list[Verdict]:
        """Verdicts for HTTP/1.1 requests (``bytes``: the request line, headers and any body), in order.

        Requests are submitted in batches (on ``"sim"`` and ``"model"`` all at once through the packet stream; on
        a board's MMIO window as many as the submit window and result FIFO hold), so the core's pipeline overlaps
        them. Only the header block is sent. Raises :class:`ConfigError` naming the request whose header block does
        not fit the window, before anything is written, and names ``requests`` if it is one request (bytes) rather
        than a list of them."""
        requests = _request_list(requests)
        with self._lock:
            core = self._submit_core()
            self._discipline()
            # "software" does the program's checks and effects on its model itself (None: its state asks for the
            # program after all).
            direct = getattr(self.transport, "classify_requests", None)
            records = direct(requests, core.width, core.window_bytes) if direct is not None else None
            if records is None:
                stream = getattr(self.transport, "classify_stream", None)
                if stream is None:
                    records = self._run(core.classify(list(zip(requests, itertools.repeat(False, len(requests))))))
                else:
                    # As _classify, without a tuple per request; whole requests to a transport that cuts them itself.
                    records = self._run(core.prepare_requests(requests,
                                                              getattr(self.transport, "cuts_requests", False)))
                    if records:
                        self._run(self.core.regs.write("pipeline.ctrl.axis_inline", 0))
                        records = stream(records, False)
            return self._verdicts(records)

    def classify(self, request: bytes) -> Verdict:
        """The verdict for one HTTP/1.1 request (lookaside)."""
        # "software" takes one request without a batch around it (None: its state asks for the program after all).
        one = self._classify_request if type(request) is bytes else None
        if one is not None:
            with self._lock:
                core = self._submit_core()
                self._discipline()
                record = one(request, core.width, core.window_bytes)
                if record is not None:
                    return Verdict.from_record(record, *_mappings(self._routing, self._tenants))
        return self.classify_many([_one_request(request)])[0]

    def classify_frame(self, frame: bytes) -> Verdict:
        """The verdict for one Ethernet frame, through the L2–L4 front end as in inline mode (``docs/frontend.md``):
        the TCP payload is parsed and the 4-tuple is available to the router; anything else is punted."""
        _one_request(frame, "frame")
        with self._lock:
            self._need("frontend")
            return self._classify([(frame, True)])[0]

    def stats(self, clear: bool = False) -> dict:
        """The telemetry counters from one consistent snapshot: events per action, reason and pipeline error
        flag, and the latency histogram (``docs/pipeline.md``, "Telemetry"). ``clear`` zeroes the live counters in
        the same write (nothing lost between the snapshot and the clear)."""
        return self._run(read_stats(self.core.regs, clear=clear))

    def latency_histogram(self) -> LatencyHistogram:
        """The hardware latency histogram (log2 buckets of cycles, first beat to verdict) from a new snapshot."""
        return self._run(read_latency_histogram(self.core.regs))

    def read_register(self, name: str) -> int:
        """Read a register or field by its map name (``"id.scratch"``, ``"id.version.major"``)."""
        return self._run(self.core.regs.read(name))

    def write_register(self, name: str, value: int) -> None:
        """Write a register or field by its map name; out-of-range values raise :class:`ConfigError`."""
        self._run(self.core.regs.write(name, value))

    def close(self) -> None:
        with self._lock:
            self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<wirespeed.Offload {self.uri}>"


class AsyncOffload:
    """The driver for asyncio code: what :func:`open_async` gives, and ``await AsyncOffload.open(transport)``.

    Every method that touches the device is awaited: ``await dev.classify(...)``, ``await dev.classify_many(...)``,
    ``await dev.tenants.add(...)``, ``await dev.pools.set(...)``, ``await dev.clock.now()`` (set the clock rate with
    ``await dev.clock.set_ns_per_cycle(x)``). ``tenants``, ``clock``, ``pools`` and ``routes`` are the same classes
    as on :class:`Offload`.

    Two kinds of transport:
    - a synchronous :class:`Transport` (every URI of :func:`open`): the calls run, one at a time and in order, on one
      worker thread that owns an :class:`Offload`, so the event loop is never blocked by the device, by the model,
      or by a batch; the Offload's clock mode applies (``clock="wall"`` by default);
    - an :class:`AsyncTransport` (a cocotb testbench): the bus operations are awaited directly, serialised by an
      asyncio lock.
    """

    def __init__(self, transport, core: OffloadCore | None = None, *, offload: Offload | None = None,
                 executor: ThreadPoolExecutor | None = None):
        self.transport = transport
        self.core = core or (offload.core if offload is not None else OffloadCore())
        #: The Offload the worker thread drives (synchronous transports), and that thread; else None.
        self._sync = offload
        self._executor = executor
        # Guards driver state (never held across an await); with a worker, the Offload's own lock.
        self._lock = offload._lock if offload is not None else threading.RLock()
        self._alock = asyncio.Lock()
        self._limiter_params = None
        self._routing = None
        self._submit = None
        self._tenants = self._clock = self._pools = self._routes = None
        self._policy = None
        #: ``classify`` calls waiting for the next batch (worker-thread mode), and whether a batch loop runs.
        self._pending: list = []
        self._draining = False

    @classmethod
    async def open(cls, transport, *, clock: str = "wall") -> "AsyncOffload":
        """Check the ID block and read the parameters of the pipelines the core has.

        ``transport`` is an :class:`AsyncTransport`, or a synchronous :class:`Transport` that a worker thread then
        drives (``clock`` applies to it, as for :func:`open`)."""
        if isinstance(transport, AsyncTransport):
            self = cls(transport)
            await arun(self.core.check_id(), transport)
            features = (await self.info()).features
            if "limiter" in features:
                self._limiter_params = await arun(read_limiter_params(self.core.regs), transport)
            if "router" in features:
                self._routing = await arun(RoutingCore.attach(self.core.regs), transport)
            if "submit" in features:
                self._submit = await arun(SubmitCore.attach(self.core.regs), transport)
            return self
        if not isinstance(transport, Transport):
            raise ConfigError("transport", type(transport).__name__, "must be a wirespeed Transport or AsyncTransport")
        check_clock_mode(clock)
        return await cls._start(lambda: Offload(transport, getattr(transport, "scheme", "?"), clock=clock))

    @classmethod
    async def _start(cls, opener) -> "AsyncOffload":
        """Start the worker thread, open the :class:`Offload` (``opener()``) on it, and read what the core has."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="wirespeed-async")
        try:
            offload = await asyncio.get_running_loop().run_in_executor(executor, opener)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self = cls(offload.transport, offload=offload, executor=executor)

        def prepare():
            features = offload.info().features
            if "limiter" in features:
                self._limiter_params = offload._limiter()
                self._tenants = Tenants(self, offload.tenants.core, offload.tenants.clock)
                self._clock = Clock(self, offload._clocks())
            if "router" in features:
                self._routing = offload._routing_core()
            if "submit" in features:
                self._submit = offload._submit_core()
        try:
            await self._call(prepare)
        except BaseException:
            await self.aclose()
            raise
        return self

    @property
    def policy(self) -> Policy:
        """The request policy (:class:`~.policy.Policy`): ``await dev.policy.set(...)``, ``allow_methods``,
        ``get``."""
        with self._lock:
            if self._policy is None:
                self._policy = Policy(self, PolicyCore(self.core.regs))
            return self._policy

    def _call(self, fn, *args):
        """``fn(*args)`` on the worker thread (an awaitable)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    def _run(self, ops):
        if self._sync is not None:
            return self._call(self._sync._run, ops)
        return self._arun(ops)

    def _verdicts(self, records) -> list[Verdict]:
        return _decode(records, self._routing, self._tenants)

    async def _arun(self, ops):
        async with self._alock:
            return await arun(ops, self.transport)

    async def info(self) -> DeviceInfo:
        if self._sync is not None:
            return await self._call(self._sync.info)
        return await arun(self.core.info(), self.transport)

    async def read_register(self, name: str) -> int:
        if self._sync is not None:
            return await self._call(self._sync.read_register, name)
        return await arun(self.core.regs.read(name), self.transport)

    async def write_register(self, name: str, value: int) -> None:
        if self._sync is not None:
            return await self._call(self._sync.write_register, name, value)
        await arun(self.core.regs.write(name, value), self.transport)

    async def classify_many(self, requests) -> list[Verdict]:
        if self._sync is not None:
            return await self._call(self._sync.classify_many, requests)
        if self._submit is None:
            raise FeatureMissing("submit")
        records = await self._arun(self._submit.classify([(r, False) for r in _request_list(requests)]))
        return self._verdicts(records)

    async def classify(self, request: bytes) -> Verdict:
        """The verdict for one request. With a worker thread, concurrent calls are classified together: the calls
        that arrive while a batch runs form the next ``classify_many`` batch, in arrival order. So many coroutines
        each awaiting ``classify`` get the batch rate, and each still gets its own verdict (or its own error)."""
        _one_request(request)
        if self._sync is None:
            return (await self.classify_many([request]))[0]
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Run the waiting ``classify`` calls in batches until none is left."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    verdicts = await self._call(self._sync.classify_many, [r for r, _ in batch])
                except Exception:
                    # One request spoiled the batch (e.g. a header block too large for the window): each caller
                    # gets its own outcome instead.
                    for request, future in batch:
                        try:
                            verdict = await self._call(self._sync.classify, request)
                        except Exception as e:
                            if not future.done():
                                future.set_exception(e)
                        else:
                            if not future.done():
                                future.set_result(verdict)
                    continue
                for (_, future), verdict in zip(batch, verdicts):
                    if not future.done():
                        future.set_result(verdict)
        except BaseException as e:                          # cancelled: nobody is left waiting on a result
            for _, future in self._pending:
                if not future.done():
                    future.set_exception(e)
            self._pending = []
            raise
        finally:
            self._draining = False

    async def classify_frame(self, frame: bytes) -> Verdict:
        _one_request(frame, "frame")
        if self._sync is not None:
            return await self._call(self._sync.classify_frame, frame)
        if self._submit is None:
            raise FeatureMissing("submit")
        records = await self._arun(self._submit.classify([(frame, True)]))
        return self._verdicts(records)[0]

    async def stats(self, clear: bool = False) -> dict:
        if self._sync is not None:
            return await self._call(self._sync.stats, clear)
        return await self._arun(read_stats(self.core.regs, clear=clear))

    async def latency_histogram(self) -> LatencyHistogram:
        if self._sync is not None:
            return await self._call(self._sync.latency_histogram)
        return await self._arun(read_latency_histogram(self.core.regs))

    async def set_hash_key(self, key: bytes) -> None:
        """As :meth:`Offload.set_hash_key`."""
        if self._sync is not None:
            return await self._call(self._sync.set_hash_key, key)
        await self.routes.set_hash_key(key)

    async def set_fingerprint_key(self, secret: bytes) -> None:
        """As :meth:`Offload.set_fingerprint_key` (a worker-thread transport only)."""
        if self._sync is None:
            raise FeatureMissing("set_fingerprint_key over an AsyncTransport")
        return await self._call(self._sync.set_fingerprint_key, secret)

    async def aclose(self) -> None:
        """Close the transport (on the worker thread, then stop it)."""
        if self._sync is not None:
            try:
                await self._call(self._sync.close)
            finally:
                self._executor.shutdown(wait=False)
        else:
            self.transport.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    @property
    def tenants(self) -> Tenants:
        if self._limiter_params is None:
            raise FeatureMissing("limiter")
        if self._tenants is None:
            self._tenants = Tenants(self, TenantsCore(self.core.regs, self._limiter_params))
        return self._tenants

    @property
    def clock(self) -> Clock:
        if self._limiter_params is None:
            raise FeatureMissing("limiter")
        if self._clock is None:
            self._clock = Clock(self, ClockCore(self.core.regs))
        return self._clock

    @property
    def pools(self) -> Pools:
        if self._routing is None:
            raise FeatureMissing("router")
        if self._pools is None:
            self._pools = Pools(self, self._routing)
        return self._pools

    @property
    def routes(self) -> Routes:
        if self._routing is None:
            raise FeatureMissing("router")
        if self._routes is None:
            self._routes = Routes(self, self._routing)
        return self._routes


class _Opening:
    """What :func:`open_async` returns: await it, or use it with ``async with``."""

    def __init__(self, uri, clock, options):
        self._uri, self._clock, self._options = uri, clock, options
        self._dev: AsyncOffload | None = None

    async def _open(self) -> AsyncOffload:
        # On the worker thread: opening "sim" may compile the harness.
        return await AsyncOffload._start(lambda: open(self._uri, clock=self._clock, **self._options))

    def __await__(self):
        return self._open().__await__()

    async def __aenter__(self) -> AsyncOffload:
        self._dev = await self._open()
        return self._dev

    async def __aexit__(self, *exc):
        await self._dev.aclose()


def open_async(uri: str = "model", *, clock: str = "wall", **options) -> _Opening:
    """:func:`open` for asyncio code: ``async with wirespeed.open_async("model") as dev: await dev.classify(r)``
    (or ``dev = await wirespeed.open_async(uri)``, then ``await dev.aclose()``).

    Every URI works. The device is driven from one worker thread (:class:`AsyncOffload`), so no call blocks the
    event loop. Arguments are checked before anything is opened, as :func:`open` checks them."""
    check_clock_mode(clock)
    if not isinstance(uri, str):
        raise ConfigError("uri", uri, f"must be a str naming a device, e.g. 'model' or 'sim' (schemes: "
                                      f"{', '.join(SCHEMES)})")
    return _Opening(uri, clock, options)


def open(uri: str = "model", *, clock: str = "wall", **options) -> Offload:
    """Open the wirespeed core a URI names and check its ID block. See the module docstring for URIs.

    ``clock="wall"`` (the default) keeps the limiter's clock on the host's monotonic clock, so rates are per real
    second on every transport; ``clock="manual"`` leaves time to ``clock.step()`` (deterministic tests). Other
    options go to the transport."""
    check_clock_mode(clock)
    return Offload(open_transport(uri, **options), uri, clock=clock)
