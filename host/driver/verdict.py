"""The verdict as gateway code sees it: :class:`Verdict`, decoded from the core's
:class:`~wirespeed.host.models.pipeline.VerdictRecord`.

core (result FIFO / verdict stream / ``tuser``) ─▶ :class:`VerdictRecord` (bits, field for field) ─▶ :class:`Verdict`

Field meanings and the rules that produce them: ``docs/pipeline.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...hdl.pipeline.layouts import ACTION_NAMES, FLAG_NAMES, REASON_NAMES
from ..models.pipeline import VerdictRecord

__all__ = ["Verdict", "flag_names", "decode_records"]

# Flag words seen so far -> their names: a batch has few distinct words, and building the set is most of a decode.
_FLAG_SETS: dict[int, frozenset] = {}
_FLAG_SETS_MAX = 1 << 12


def flag_names(flags: int) -> frozenset:
    """The names (``FLAG_NAMES``) of the bits set in a record's ``flags``."""
    names = _FLAG_SETS.get(flags)
    if names is None:
        names = frozenset(name for i, name in enumerate(FLAG_NAMES) if flags >> i & 1)
        if len(_FLAG_SETS) < _FLAG_SETS_MAX:
            _FLAG_SETS[flags] = names
    return names


@dataclass(frozen=True, slots=True)
class Verdict:
    """The core's answer for one request or frame.

    Attributes
    ----------
    action : str
        ``"forward"``, ``"reject"`` or ``"punt"``.
    status : int
        HTTP status: 200 forwarded; 400, 401, 429, 431 or 503 rejected, or the request policy's status (405 by
        default for CONNECT and methods outside the allowlist); 0 punted.
    reason : str
        A stable snake_case name (``"ok"``, ``"rate_limited"``, ``"bare_cr_lf"``, ``"not_tcp"`` …;
        ``docs/pipeline.md``).
    tenant : TenantId or None
        The id of the tenant whose buckets decided (``tenants.add`` returned it; the default tenant's for an unknown
        key under the default policy). It stays the tenant's while the table relocates it.
    pool : int or None
        The pool the route class chose, when the request got as far as routing.
    backend : int, str or None
        The backend the pool's table chose, when forwarded: its label as given to ``pools.set`` (an address
        string, or an int id).
    retry_after_s : float or None
        When rate limited: seconds until the request would be allowed.
    flags : frozenset of str
        Parser error flags and facts about the request (``docs/pipeline.md``, "Flags").
    hash : int
        The 32-bit Toeplitz hash the router computed.
    latency_cycles : int
        Core cycles from the packet's first beat to its verdict.
    """
    action: str
    status: int
    reason: str
    tenant: int | None
    pool: int | None
    backend: int | str | None
    retry_after_s: float | None
    flags: frozenset
    hash: int
    latency_cycles: int

    @classmethod
    def from_record(cls, rec: VerdictRecord, label=None, tenant_id=None) -> "Verdict":
        """Decode ``rec``; ``label(pool, backend_id)`` turns the hardware backend id into the pool's label, and
        ``tenant_id(slot)`` the tenant table slot into the tenant's id (without them: the raw numbers)."""
        backend = None
        if rec.backend_valid:
            backend = rec.backend if label is None else label(rec.pool, rec.backend)
        tenant = None
        if rec.tenant_valid:
            tenant = rec.tenant if tenant_id is None else tenant_id(rec.tenant)
        # Positional, in field order (a quarter faster than keywords; test_verdict_fields_are_in_from_records_order).
        # (.value is a slow property: ._value_.)
        return cls(ACTION_NAMES[rec.action._value_], rec.status, REASON_NAMES[rec.reason._value_], tenant,
                   rec.pool if rec.pool_valid else None, backend,
                   rec.retry_after_ns / 1e9 if rec.retry_valid else None, flag_names(rec.flags), rec.hash,
                   rec.latency_cycles)

    def as_dict(self) -> dict:
        return {"action": self.action, "status": self.status, "reason": self.reason, "tenant": self.tenant,
                "pool": self.pool, "backend": self.backend, "retry_after_s": self.retry_after_s,
                "flags": sorted(self.flags), "hash": self.hash, "latency_cycles": self.latency_cycles}


def decode_records(records, label=None, tenant_id=None) -> list[Verdict]:
    """:meth:`Verdict.from_record` of each record, in order; a record object that recurs in ``records`` is decoded
    once (the ``"software"`` transport gives one object per distinct record). ``label`` and ``tenant_id`` must not
    change during the call (the driver holds its lock)."""
    if len(records) == 1:
        return [Verdict.from_record(records[0], label, tenant_id)]
    ids = list(map(id, records))
    from_record = Verdict.from_record
    decoded = {i: from_record(rec, label, tenant_id) for i, rec in dict(zip(ids, records)).items()}
    return list(map(decoded.__getitem__, ids))
