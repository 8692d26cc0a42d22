"""Driver side of the request policy (``docs/pipeline.md``, "Request policy"): what the pipeline does with an
``Upgrade`` line, ``CONNECT``, a target that is not origin-form, and a method outside the allowlist.

gateway code ─▶ :class:`Policy` (``Offload.policy``) ─▶ :class:`PolicyCore` (sans-IO) ─▶ ``pipeline.policy_*``,
``pipeline.allowed_methods`` on any transport

Each check has a register holding its action (allow, reject with a status, punt); the reset values are the defaults:
reject ``Upgrade`` (400), ``CONNECT`` (405), a non-origin-form target (400), and any method outside GET, HEAD, POST,
PUT, DELETE, OPTIONS, PATCH (405).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...hdl.parser.layouts import Method
from ...hdl.pipeline.layouts import POLICY_CHECKS, PolicyAction
from ..errors import ConfigError
from .registers import Registers

__all__ = ["Policy", "PolicyCore", "PolicySetting", "ACTIONS", "CHECKS", "METHOD_NAMES"]

#: The checks, in precedence order (the first that fires decides).
CHECKS = POLICY_CHECKS
#: Action names, as ``Verdict.action`` spells the outcome (``allow`` lets the request go on to the limiter).
ACTIONS = ("allow", "reject", "punt")
#: Method names the allowlist takes: the parser's ``Method`` codes; ``OTHER`` stands for every other token.
METHOD_NAMES = tuple(m.name for m in Method if m is not Method.NONE)
#: HTTP statuses a reject may carry.
STATUS_RANGE = (400, 599)


@dataclass(frozen=True)
class PolicySetting:
    """One check's setting: ``action`` (``"allow"``, ``"reject"``, ``"punt"``) and the status of a reject."""
    action: str
    status: int


class PolicyCore:
    """The policy registers, free of I/O: each method is a generator of bus operations (see :mod:`.registers`)."""

    def __init__(self, regs: Registers):
        self.regs = regs

    @staticmethod
    def check_setting(check, action, status) -> tuple[int, int]:
        """The register fields ``(action, status)`` for a setting, or :class:`ConfigError` naming what is wrong."""
        if check not in CHECKS:
            raise ConfigError("check", check, f"must be one of {list(CHECKS)}")
        if action not in ACTIONS:
            raise ConfigError("action", action, f"must be one of {list(ACTIONS)}")
        lo, hi = STATUS_RANGE
        if isinstance(status, bool) or not isinstance(status, int) or not lo <= status <= hi:
            raise ConfigError("status", status, f"must be an HTTP status in {lo}..{hi}")
        return PolicyAction[action.upper()].value, status

    @staticmethod
    def method_mask(methods) -> int:
        """The ``allowed_methods`` mask for method names (any case), or :class:`ConfigError`."""
        if isinstance(methods, (str, bytes)):
            raise ConfigError("methods", methods, f"must be a list of method names from {list(METHOD_NAMES)}")
        mask = 0
        for name in methods:
            key = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            if not isinstance(key, str) or key.upper() not in METHOD_NAMES:
                raise ConfigError("methods", name, f"must be one of {list(METHOD_NAMES)} (OTHER: any other token)")
            mask |= 1 << Method[key.upper()].value
        return mask

    def set(self, check: str, action: str, status: int | None = None):
        """``status`` None: the status the register holds now."""
        if status is None:
            self.check_setting(check, action, STATUS_RANGE[0])
            status = yield from self.regs.read(f"pipeline.policy_{check}.status")
        code, status = self.check_setting(check, action, status)
        reg = f"pipeline.policy_{check}"
        fields = self.regs.regmap[reg]
        yield from self.regs.write(reg, (code << fields.field("action").lsb) | (status << fields.field("status").lsb))

    def allow_methods(self, methods):
        mask = self.method_mask(methods)
        yield from self.regs.write("pipeline.allowed_methods.mask", mask)

    def get(self):
        settings = {}
        for check in CHECKS:
            code = yield from self.regs.read(f"pipeline.policy_{check}.action")
            status = yield from self.regs.read(f"pipeline.policy_{check}.status")
            # The raw value 3 acts as reject (pipeline.rdl).
            action = "reject" if code == 3 else PolicyAction(code).name.lower()
            settings[check] = PolicySetting(action, status)
        mask = yield from self.regs.read("pipeline.allowed_methods.mask")
        settings["allowed_methods"] = tuple(name for name in METHOD_NAMES if mask >> Method[name].value & 1)
        return settings


class Policy:
    """The request policy of one :class:`~.offload.Offload` (``dev.policy``), or of an
    :class:`~.offload.AsyncOffload` (then each call returns an awaitable).

    ``set(check, action, status=None)``: ``check`` one of :data:`CHECKS` (``"connect"``, ``"method"``,
    ``"target_form"``, ``"upgrade"``), ``action`` one of :data:`ACTIONS`; ``status`` (400..599) is the reject's status,
    by default the one the check has now. ``allow_methods(names)`` sets the allowlist of the ``method`` check.
    ``get()`` returns ``{check: PolicySetting, ..., "allowed_methods": (names, ...)}``. Bad names or values raise
    :class:`~wirespeed.host.errors.ConfigError` naming the field, the value and the allowed set, before anything is
    written.
    """

    def __init__(self, offload, core: PolicyCore):
        self._offload = offload
        self.core = core

    def set(self, check: str, action: str, status: int | None = None):
        # Checked here, before any bus operation (and before an awaitable is made).
        PolicyCore.check_setting(check, action, STATUS_RANGE[0] if status is None else status)
        return self._offload._run(self.core.set(check, action, status))

    def allow_methods(self, methods):
        PolicyCore.method_mask(methods)
        return self._offload._run(self.core.allow_methods(methods))

    def get(self):
        return self._offload._run(self.core.get())
