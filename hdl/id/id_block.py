"""ID block: identifies the core to the driver (magic, version, build hash, features, parameters).

Sits at offset 0 of the register map (``id.rdl`` beside this file). The magic and version are constants in the
``.rdl``; everything that depends on the build is driven here from :class:`CoreParams`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..bus.regmap import core_regmap
from ..limiter.layouts import LimiterParams
from ..router.layouts import RouterParams
from ..bus.regbank import hw_signature

__all__ = ["CoreParams", "IdBlock", "build_hash", "FEATURES"]

#: Feature bits, in the order of the ``id.features`` fields.
FEATURES = ("parser", "limiter", "router", "frontend", "submit")


@dataclass(frozen=True)
class CoreParams:
    """Elaboration parameters of the core, reported by the ID block.

    Attributes
    ----------
    width_bytes : int
        W, bytes per stream beat (4..64, a power of two).
    tenants : int
        Tenant table slots: the limiter's capacity, 0 without a limiter.
    maglev_size : int
        Maglev table entries per buffer (0: no router).
    clock_hz : int
        Nominal core clock in Hz (1 kHz .. 1 GHz).
    features : frozenset[str]
        Pipelines present, from :data:`FEATURES`.
    limiter : LimiterParams or None
        The limiter's parameters. With feature ``limiter`` and no ``limiter``, it is
        ``LimiterParams(capacity=tenants or 4096, clock_hz=clock_hz)``; ``tenants`` and ``clock_hz`` must agree with it.
    router : RouterParams or None
        The router's parameters. With feature ``router`` and no ``router``, it is
        ``RouterParams(table_entries=maglev_size or 8192)``; ``maglev_size`` must agree with it.

    submit_bytes : int
        Size of the MMIO submit window in bytes (a multiple of 4·W, at least the parser's default header limit + 1
        so that the driver never needs to split a header block).

    The ``parser`` feature puts the header parser (at ``width_bytes``) in the core. With the parser, the limiter and
    the router, the core is the whole offload pipeline, and the ``frontend`` and ``submit`` features come with it
    (``docs/pipeline.md``).
    """
    width_bytes: int = 8
    tenants: int = 0
    maglev_size: int = 0
    clock_hz: int = 200_000_000
    features: frozenset = frozenset({"parser", "limiter", "router"})
    limiter: LimiterParams | None = None
    router: RouterParams | None = None
    submit_bytes: int = 16384

    def __post_init__(self):
        if self.width_bytes not in (4, 8, 16, 32, 64):
            raise ValueError(f"width_bytes must be one of 4, 8, 16, 32, 64, got {self.width_bytes}")
        if not 0 <= self.tenants < 2**32:
            raise ValueError(f"tenants must be in 0..2**32-1, got {self.tenants}")
        if not 0 <= self.maglev_size < 2**32:
            raise ValueError(f"maglev_size must be in 0..2**32-1, got {self.maglev_size}")
        if not 1_000 <= self.clock_hz <= 1_000_000_000:
            raise ValueError(f"clock_hz must be in 1e3..1e9, got {self.clock_hz}")
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {FEATURES}")
        features = frozenset(self.features)
        limiter = self.limiter
        if limiter is None and "limiter" in features:
            limiter = LimiterParams(capacity=self.tenants or 4096, clock_hz=self.clock_hz)
        if limiter is not None:
            if not isinstance(limiter, LimiterParams):
                raise ValueError(f"limiter must be a LimiterParams, got {limiter!r}")
            if self.tenants not in (0, limiter.capacity):
                raise ValueError(f"tenants ({self.tenants}) must equal limiter.capacity ({limiter.capacity})")
            if limiter.clock_hz != self.clock_hz:
                raise ValueError(f"limiter.clock_hz ({limiter.clock_hz}) must equal clock_hz ({self.clock_hz})")
            features |= {"limiter"}
            object.__setattr__(self, "tenants", limiter.capacity)
        elif self.tenants:
            raise ValueError(f"tenants ({self.tenants}) needs the limiter feature")
        router = self.router
        if router is None and "router" in features:
            router = RouterParams(table_entries=self.maglev_size or 8192)
        if router is not None:
            if not isinstance(router, RouterParams):
                raise ValueError(f"router must be a RouterParams, got {router!r}")
            if self.maglev_size not in (0, router.table_entries):
                raise ValueError(f"maglev_size ({self.maglev_size}) must equal router.table_entries "
                                 f"({router.table_entries})")
            features |= {"router"}
            object.__setattr__(self, "maglev_size", router.table_entries)
        elif self.maglev_size:
            raise ValueError(f"maglev_size ({self.maglev_size}) needs the router feature")
        if "parser" in features and self.width_bytes not in (4, 8, 16):
            raise ValueError(f"width_bytes {self.width_bytes}: the parser supports W = 4, 8 or 16")
        if {"parser", "limiter", "router"} <= features:
            features |= {"frontend", "submit"}
        elif features & {"frontend", "submit"}:
            raise ValueError("features frontend and submit need the whole pipeline: parser, limiter and router")
        if self.submit_bytes % (4 * self.width_bytes) or not 8704 <= self.submit_bytes <= 1 << 20:
            raise ValueError(f"submit_bytes = {self.submit_bytes!r}: must be a multiple of {4 * self.width_bytes} "
                             f"in 8704..1048576 (the default header limit 8192 + 1, rounded up, fits)")
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "limiter", limiter)
        object.__setattr__(self, "router", router)


def build_hash(params: CoreParams) -> int:
    """32-bit build hash: SHA-256 over the gateware sources (every ``.py`` and ``.rdl`` under ``hdl/``, by path
    relative to it) and the parameters.

    The host model computes the same value, so "model" and "sim" report the same ID block.
    """
    h = hashlib.sha256()
    hdl = Path(__file__).resolve().parent.parent
    sources = [p for p in hdl.rglob("*") if p.suffix in (".py", ".rdl") and "__pycache__" not in p.parts]
    for path in sorted(sources, key=lambda p: p.relative_to(hdl).as_posix()):
        name = path.relative_to(hdl).as_posix()
        h.update(name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n") + b"\0")
    fields = asdict(params)
    fields["features"] = sorted(params.features)
    h.update(repr(sorted(fields.items())).encode())
    return int.from_bytes(h.digest()[:4], "big")


class IdBlock(wiring.Component):
    """Drives the build-dependent fields of the ID registers.

    Attributes
    ----------
    regs : In(hw signature of ``id``)
        Connect to ``bank.hw.id``.
    bus_error : In(1)
        One pulse per bus transaction answered with an error; counted in ``id.bus_errors``.
    """

    def __init__(self, params: CoreParams):
        self.params = params
        sig = hw_signature(core_regmap().submap("id")).members["id"].signature
        super().__init__({"regs": In(sig), "bus_error": In(1)})

    def elaborate(self, platform):
        m = Module()
        p, regs = self.params, self.regs
        uptime = Signal(64)
        m.d.sync += uptime.eq(uptime + 1)
        m.d.comb += [
            regs.build_hash.value.eq(build_hash(p)),
            regs.params_stream.width_bytes.eq(p.width_bytes),
            regs.params_tenants.value.eq(p.tenants),
            regs.params_maglev.value.eq(p.maglev_size),
            regs.params_clock.hz.eq(p.clock_hz),
            regs.uptime_cycles.cycles.eq(uptime),
            regs.bus_errors.count_incr.eq(self.bus_error),
        ]
        for name in FEATURES:
            m.d.comb += getattr(regs.features, name).eq(name in p.features)
        return m
