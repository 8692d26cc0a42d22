"""Bit-exact model of the offload pipeline: one packet in, one :class:`VerdictRecord` out.

packet ─▶ :func:`~.frontend.process_frame` ─▶ :func:`~.parser.parse` ─▶ :func:`combine` (limiter, router) ─▶ record

:func:`combine` is the verdict stage of :mod:`wirespeed.hdl.pipeline.offload_pipeline` written in Python;
:class:`PipelineBlock` is the register-level model of ``pipeline.rdl`` (submit window, doorbell, result FIFO) behind the
``"model"`` URI, with the same cycle timing as the RTL. Rules: ``docs/pipeline.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...hdl.limiter.rate_limiter import LIMIT_LATENCY_CYCLES
from ...hdl.limiter.layouts import Decision
from ...hdl.parser.layouts import ErrorFlag, KeySource, Method
from ...hdl.pipeline.offload_pipeline import DECISION_LATENCY_CYCLES, RESULT_DEPTH, SUBMIT_START_CYCLES
from ...hdl.router.layouts import STATUS_UNAVAILABLE
from ...hdl.pipeline.layouts import (DEFAULT_ALLOWED_METHODS, FLAG_NAMES, LATENCY_MAX, POLICY_CHECKS,
                                    POLICY_REASONS, Action, PolicyAction, Reason, reason_for_parser_error,
                                    reason_for_punt)
from ...hdl.pipeline.layouts import VerdictRecord as VerdictRecordLayout
from .frontend import payload_beat_ready_cycles, process_frame
# When, within an access, the bank samples a read and a written value takes effect (calibrated against the RTL).
from .limiter import READ_SAMPLE_CYCLE, WRITE_EFFECT_CYCLE
from .parser import Descriptor, parse
from ..records import LayoutRecord
from .register_bank import BlockModel
from .router import RouteRequest

__all__ = ["VerdictRecord", "RECORD_WORDS", "RequestPolicy",
           "combine", "verdict_fields", "early_verdict", "route_request", "request_flags", "Outcome",
           "classify_packet", "PipelineBlock", "limiter_now_cycle"]

#: 32-bit words of one record in the result FIFO window (``pipeline.result[0..]``).
RECORD_WORDS = -(-VerdictRecordLayout.as_shape().size // 32)


@dataclass(frozen=True, slots=True)
class VerdictRecord(LayoutRecord, layout=VerdictRecordLayout):
    """Mirrors :class:`wirespeed.hdl.pipeline.layouts.VerdictRecord` field for field."""
    action: Action = Action.FORWARD
    status: int = 0
    reason: Reason = Reason.OK
    tenant_valid: bool = False
    tenant: int = 0
    pool_valid: bool = False
    pool: int = 0
    backend_valid: bool = False
    backend: int = 0
    retry_valid: bool = False
    retry_after_ns: int = 0
    flags: int = 0
    hash: int = 0
    latency_cycles: int = 0

    def to_words(self) -> list[int]:
        bits = self.to_bits()
        return [(bits >> (32 * i)) & 0xFFFFFFFF for i in range(RECORD_WORDS)]

    @classmethod
    def from_words(cls, words) -> "VerdictRecord":
        return cls.from_bits(sum(w << (32 * i) for i, w in enumerate(words)))

_FLAG = {name: 1 << i for i, name in enumerate(FLAG_NAMES)}
_TOO_LARGE = ErrorFlag.header_too_large.bit_length() - 1
_TRUNCATED = ErrorFlag.truncated.bit_length() - 1


_CONNECT = Method.CONNECT.value
_METHODS_AT_RESET = sum(1 << Method[name].value for name in DEFAULT_ALLOWED_METHODS)


@dataclass(frozen=True)
class RequestPolicy:
    """What the policy registers hold (``pipeline.policy_*``, ``pipeline.allowed_methods``): per check of
    :data:`POLICY_CHECKS`, ``(action, status)`` with the raw 2-bit action (3 acts as reject) and the 10-bit status;
    ``allowed_methods`` a 16-bit mask indexed by ``Method`` code. The defaults are the reset values."""
    connect: tuple = (PolicyAction.REJECT.value, 405)
    method: tuple = (PolicyAction.REJECT.value, 405)
    target_form: tuple = (PolicyAction.REJECT.value, 400)
    upgrade: tuple = (PolicyAction.REJECT.value, 400)
    allowed_methods: int = _METHODS_AT_RESET

    def __post_init__(self):
        # Each check's outcome when it fires (None: allow), in precedence order.
        outcomes = []
        for check in POLICY_CHECKS:
            action, status = getattr(self, check)
            reason = POLICY_REASONS[check]
            outcomes.append(None if action == PolicyAction.ALLOW.value else
                            (Action.PUNT, reason, 0) if action == PolicyAction.PUNT.value else
                            (Action.REJECT, reason, status))
        object.__setattr__(self, "_outcomes", tuple(outcomes))

    def verdict(self, method: Method, origin_form: bool, upgrade: bool):
        """``(action, reason, status)`` of the first check (:data:`POLICY_CHECKS` order) that fires on a request
        with this method, target form and Upgrade bit, or None when none does (the request goes on)."""
        connect, not_allowed, target_form, upgrade_out = self._outcomes
        code = method.value
        if connect is not None and code == _CONNECT:
            return connect
        if not_allowed is not None and not self.allowed_methods >> code & 1:
            return not_allowed
        if target_form is not None and not origin_form:
            return target_form
        if upgrade_out is not None and upgrade:
            return upgrade_out
        return None


_DEFAULT_POLICY = RequestPolicy()


def early_verdict(desc: Descriptor, info, bad_tkeep: bool, policy: RequestPolicy = _DEFAULT_POLICY):
    """``(action, reason, status)`` decided before the limiter, or None when the request goes on to it: bad_tkeep,
    the front end's punt, a parser error, then the request policy."""
    if bad_tkeep:
        return Action.PUNT, Reason.BAD_TKEEP, 0
    if info.punt:
        return Action.PUNT, reason_for_punt(info.reason), 0
    errors = int(desc.errors)
    if errors:
        first = (errors & -errors).bit_length() - 1
        if info.inline and first == _TOO_LARGE:
            return Action.PUNT, Reason.HEADER_TOO_LARGE, 0
        if info.inline and first == _TRUNCATED:
            return Action.PUNT, Reason.HEADER_SPANS_SEGMENTS, 0
        return Action.REJECT, reason_for_parser_error(first), 431 if first == _TOO_LARGE else 400
    return policy.verdict(desc.method, desc.origin_form, desc.upgrade)


def route_request(desc: Descriptor, info) -> RouteRequest:
    l4_valid = bool(info.inline and not info.punt)
    return RouteRequest(route_class=desc.route_class, key_present=desc.key_source is not KeySource.NONE,
                        key_fp=desc.key_fp, extra_present=desc.extra_present, extra_fp=desc.extra_fp,
                        l4_valid=l4_valid, l4_v6=info.l4_v6, l4_ports=True, l4_src=info.l4_src, l4_dst=info.l4_dst,
                        l4_sport=info.l4_sport, l4_dport=info.l4_dport)


def request_flags(desc: Descriptor, info, bad_tkeep: bool, mmio: bool) -> int:
    """The flags the join knows (all but ``tenant_found``)."""
    flags = int(desc.errors)
    for name, on in (("bad_tkeep", bad_tkeep), ("inline", info.inline), ("l4_valid", info.inline and not info.punt),
                     ("route_match", desc.route_match), ("key_present", desc.key_source is not KeySource.NONE),
                     ("cl_present", desc.cl_present), ("chunked", desc.chunked), ("complete", desc.complete),
                     ("mmio", mmio)):
        if on:
            flags |= _FLAG[name]
    return flags


def combine(early, flags: int, lim, route, latency_cycles: int) -> VerdictRecord:
    """The verdict stage: ``early`` from :func:`early_verdict`; ``lim`` the limiter's verdict (None when it did not
    run); ``route`` the router's verdict (it always runs)."""
    lim_fields = None if lim is None else (lim.decision, lim.status, lim.tenant_found, lim.tenant, lim.cost,
                                           lim.retry_after_ns)
    route_fields = (route.status, route.pool, route.backend, route.hash)
    return VerdictRecord(*verdict_fields(early, flags, lim_fields, route_fields, latency_cycles))


def verdict_fields(early, flags: int, lim, route, latency_cycles: int) -> tuple:
    """:func:`combine` on field tuples: ``lim`` a :class:`~.limiter.LimitVerdict`'s fields in order (or None),
    ``route`` a :class:`~.router.RouteVerdict`'s; returns the :class:`VerdictRecord`'s fields in order."""
    ran = early is None
    route_status, route_pool, route_backend, route_hash = route
    if ran:
        lim_decision, lim_status, lim_found, lim_tenant, _, lim_retry_ns = lim
    else:
        lim_decision, lim_status, lim_found, lim_tenant, lim_retry_ns = None, 0, False, 0, 0
    lim_reject = ran and lim_decision is Decision.REJECT
    lim_punt = ran and lim_decision is Decision.PUNT
    no_backend = route_status == STATUS_UNAVAILABLE
    rate_limited = lim_reject and lim_status == 429
    if not ran:
        action, reason, status = early
    elif lim_reject:
        action, status = Action.REJECT, lim_status
        reason = Reason.RATE_LIMITED if rate_limited else Reason.UNKNOWN_TENANT
    elif lim_punt:
        action, reason, status = Action.PUNT, Reason.UNKNOWN_TENANT, 0
    elif no_backend:
        action, reason, status = Action.REJECT, Reason.NO_BACKEND, STATUS_UNAVAILABLE
    else:
        action, reason, status = Action.FORWARD, Reason.OK, 200
    forward = ran and not (lim_reject or lim_punt or no_backend)
    tenant_valid = ran and not lim_punt and not (lim_reject and not rate_limited)
    pool_valid = ran and not lim_reject and not lim_punt
    if ran and lim_found:
        flags |= _FLAG["tenant_found"]
    return (action, status, reason,
            tenant_valid, lim_tenant if tenant_valid else 0,
            pool_valid, route_pool if pool_valid else 0,
            forward, route_backend if forward else 0,
            rate_limited, lim_retry_ns if rate_limited else 0,
            flags, route_hash, min(latency_cycles, LATENCY_MAX))


@dataclass(frozen=True)
class Outcome:
    """What one packet does in the pipeline: its record, and when (cycles after its first beat, no stall)."""
    record: VerdictRecord
    descriptor: Descriptor
    info: object
    latency_cycles: int
    limiter_ran: bool


def classify_packet(packet: bytes, inline: bool, width: int, parser_config, frontend_config, limiter, router,
                    now_at, mmio: bool = True, bad_tkeep: bool = False,
                    policy: RequestPolicy = _DEFAULT_POLICY, ready=None) -> Outcome:
    """Run one packet through the model pipeline.

    Parameters
    ----------
    limiter : LimiterModel
        Decides (and updates its buckets) when the request reaches it.
    router : RouterModel
        Routes every packet (it has no state a request changes, only counters).
    now_at : callable
        ``now_at(latency_cycles)``: the limiter clock (ns) in the cycle the limiter accepts a request whose verdict
        comes ``latency_cycles`` after the packet's first beat.
    policy : RequestPolicy
        The policy registers.
    ready : list of int, optional
        When each payload beat leaves the front end, in cycles after the packet's first beat (less
        ``FRONTEND_LATENCY_CYCLES``); default :func:`payload_beat_ready_cycles`, the packet on its own.
    """
    info, payload = process_frame(packet, inline, frontend_config)
    desc = parse(payload, parser_config)
    stop_beat = desc.stop_index(len(payload)) // width if payload else 0
    if ready is None:
        ready = payload_beat_ready_cycles(packet, inline, frontend_config, width)
    latency = ready[min(stop_beat, len(ready) - 1)] + DECISION_LATENCY_CYCLES
    early = early_verdict(desc, info, bad_tkeep, policy)
    flags = request_flags(desc, info, bad_tkeep, mmio)
    lim = limiter.decide(desc, now_at(latency)) if early is None else None
    route = router.route(route_request(desc, info))
    return Outcome(combine(early, flags, lim, route, latency), desc, info, latency, early is None)


class PipelineBlock(BlockModel):
    """``pipeline.*`` registers as the RTL drives them: the submit window, the doorbell and the result FIFO.

    A doorbell runs the packet through :func:`classify_packet` at once, timing each event as the RTL does: the first
    beat enters :data:`SUBMIT_START_CYCLES` after the doorbell's pulse; the limiter samples its clock
    ``LIMIT_LATENCY_CYCLES + 1`` cycles before the verdict; the verdict enters the result FIFO (and telemetry) in its
    cycle, and ``status.results`` counts it from the next one.

    Parameters
    ----------
    core : CoreModel
        The core model, for the other blocks (parser, limiter, router, telemetry) and the front end's registers.
    """

    PREFIX = "pipeline."

    def __init__(self, core, submit_bytes: int):
        super().__init__(core.bank)
        self.core = core
        self.width = core.params.width_bytes
        self.submit_bytes = submit_bytes
        self.depth_beats = submit_bytes // self.width
        self._gather = bytearray(self.width)          # the RTL's gather register (stale bytes stay)
        self._gwords = 0
        self._packet = bytearray()                    # full beats pushed for the open packet
        self._queued_beats = []                       # cycle each doorbelled beat leaves the FIFO
        self._results: list[tuple[int, VerdictRecord]] = []   # (cycle counted in status.results, record)
        self._stream_free = 0                         # first cycle the MMIO source is free again
        self._policy = None                           # RequestPolicy of the policy registers, until one is written
        #: Every outcome, in order (for tests and the bench).
        self.outcomes: list[Outcome] = []
        self._set("submit_capacity.bytes", submit_bytes)
        self._set("result_capacity.entries", RESULT_DEPTH)
        self._publish(0)

    # -- bus events --

    def before_read(self, reg: str, cycle: int) -> None:
        self._publish(cycle + READ_SAMPLE_CYCLE)

    def after_write(self, reg: str, cycle: int) -> None:
        name = reg[len(self.PREFIX):]
        at = cycle + WRITE_EFFECT_CYCLE
        if name == "submit_data":
            self._word(self._value("submit_data"), at)
        elif name == "doorbell":
            self._doorbell(self._field("doorbell", "len"), bool(self._field("doorbell", "inline")), at)
        elif name.startswith("policy_") or name == "allowed_methods":
            self._policy = None
        elif name == "result_pop":
            if self._fired("result_pop.go"):
                visible = [r for r in self._results if r[0] <= at]
                if visible:
                    self._results.remove(visible[0])

    def policy(self) -> RequestPolicy:
        """The request policy the registers hold."""
        if self._policy is None:
            checks = {check: (self._field(f"policy_{check}", "action"), self._field(f"policy_{check}", "status"))
                      for check in POLICY_CHECKS}
            self._policy = RequestPolicy(**checks, allowed_methods=self._field("allowed_methods", "mask"))
        return self._policy

    # -- behaviour --

    def _level(self, cycle: int) -> int:
        return len(self._packet) // self.width + sum(1 for c in self._queued_beats if c >= cycle)

    def _push_ok(self, at: int) -> bool:
        if self._level(at) >= self.depth_beats:
            self.bank.incr("pipeline.overflows.count")
            return False
        return True

    def _word(self, word: int, at: int) -> None:
        w = self.width
        if self._gwords == w // 4:
            if self._push_ok(at):
                self._packet += self._gather
            self._gather[0:4] = word.to_bytes(4, "little")
            self._gwords = 1
        else:
            self._gather[4 * self._gwords:4 * self._gwords + 4] = word.to_bytes(4, "little")
            self._gwords += 1

    def _doorbell(self, length: int, inline: bool, at: int) -> None:
        w = self.width
        full = len(self._packet)
        n_valid = 0 if length < full else min(length - full, w)
        packet = bytes(self._packet) + bytes(self._gather[:n_valid])
        beats = full // w + 1
        self._packet = bytearray()
        self._gwords = 0
        if not self._push_ok(at):
            return
        self.bank.incr("pipeline.submitted.count")
        first = max(at + SUBMIT_START_CYCLES, self._stream_free)
        self._stream_free = first + beats
        self._queued_beats += [first + i for i in range(beats)]
        self._queued_beats = [c for c in self._queued_beats if c >= at]
        outcome = self.core.classify(packet, inline, first)
        self.outcomes.append(outcome)
        self._results.append((first + outcome.latency_cycles + 1, outcome.record))

    def _publish(self, cycle: int) -> None:
        visible = [rec for c, rec in self._results if c <= cycle]
        free = self.depth_beats - self._level(cycle)
        self._set("status.results", len(visible))
        self._set("status.free_beats", min(free, 0xFFFF))
        words = visible[0].to_words() if visible else [0] * RECORD_WORDS
        for i, word in enumerate(words):
            self._set(f"result[{i}].value", word)


#: A stream batch (``classify_stream``) lasts its beats plus this many cycles: the last packet's verdict comes at most
#: DECISION_LATENCY_CYCLES (+1 inline) after its last beat, and its egress copy leaves right behind it.
STREAM_TAIL_CYCLES = DECISION_LATENCY_CYCLES + 8
#: The model cycle of a stream batch's first beat, counted from the end of the access before it.
STREAM_START_CYCLE = 0


def stream_batch_cycles(beats: int) -> int:
    """Cycles a stream batch of ``beats`` beats takes, on ``"sim"`` and in the model alike."""
    return beats + STREAM_TAIL_CYCLES


def limiter_now_cycle(first_cycle: int, latency_cycles: int) -> int:
    """The cycle the limiter accepts (and samples its clock for) a request whose packet entered at
    ``first_cycle``: the verdict register and the limiter's pipeline before the verdict."""
    return first_cycle + latency_cycles - 1 - LIMIT_LATENCY_CYCLES

