"""The request policy in the pipeline model (docs/pipeline.md, "Request policy"): each check, each action and status,
the precedence between the checks and after the parser's errors, and that a request the policy decides never reaches
the limiter."""

import itertools
import random

import pytest

from wirespeed.hdl.parser.layouts import Method
from wirespeed.hdl.pipeline.layouts import POLICY_CHECKS, Action, PolicyAction, Reason
from wirespeed.host.models.frontend import FrontEndInfo
from wirespeed.host.models.parser import parse
from wirespeed.host.models.pipeline import RequestPolicy, early_verdict
from wirespeed.host.tools import traffic

SEED = 20261206
LOOKASIDE = FrontEndInfo()
ALLOW, REJECT, PUNT = (a.value for a in PolicyAction)

UPGRADE = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"
CONNECT = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"
ABSOLUTE = b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"
BREW = b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n"
PLAIN = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def verdict(packet, policy=RequestPolicy()):
    return early_verdict(parse(packet), LOOKASIDE, False, policy)


def test_defaults_reject_each_check_with_its_status():
    assert verdict(UPGRADE) == (Action.REJECT, Reason.UPGRADE, 400)
    assert verdict(CONNECT) == (Action.REJECT, Reason.CONNECT, 405)
    assert verdict(ABSOLUTE) == (Action.REJECT, Reason.TARGET_FORM, 400)
    assert verdict(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") == (Action.REJECT, Reason.TARGET_FORM, 400)
    assert verdict(BREW) == (Action.REJECT, Reason.METHOD_NOT_ALLOWED, 405)
    assert verdict(b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n") == (Action.REJECT, Reason.METHOD_NOT_ALLOWED, 405)
    assert verdict(b"get / HTTP/1.1\r\nHost: a\r\n\r\n") == (Action.REJECT, Reason.METHOD_NOT_ALLOWED, 405)
    for method in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"):
        assert verdict(method + b" /v1/x?y HTTP/1.1\r\nHost: a\r\n\r\n") is None, method


def test_reason_names_are_stable():
    assert {r.name.lower(): r.value for r in Reason if r.value >= 28} == {
        "connect": 28, "method_not_allowed": 29, "target_form": 30, "upgrade": 31}


@pytest.mark.parametrize("check, packet", [("upgrade", UPGRADE), ("connect", CONNECT), ("target_form", ABSOLUTE),
                                           ("method", BREW)])
@pytest.mark.parametrize("action, status", [(ALLOW, 400), (REJECT, 418), (PUNT, 451), (3, 599)])
def test_each_action_and_status(check, packet, action, status):
    policy = RequestPolicy(**{check: (action, status)}, allowed_methods=0xFFFF if check != "method" else 0x2BE)
    if check == "connect":          # CONNECT's target is authority-form: let target_form pass it
        policy = RequestPolicy(connect=(action, status), target_form=(ALLOW, 400), allowed_methods=0xFFFF)
    got = verdict(packet, policy)
    reason = {"upgrade": Reason.UPGRADE, "connect": Reason.CONNECT, "target_form": Reason.TARGET_FORM,
              "method": Reason.METHOD_NOT_ALLOWED}[check]
    if action == ALLOW:
        assert got is None
    elif action == PUNT:
        assert got == (Action.PUNT, reason, 0)
    else:                                                           # 1, and 3 acts as 1
        assert got == (Action.REJECT, reason, status)


def test_precedence_connect_method_target_form_upgrade():
    """A request every check covers gets the first one that fires, in POLICY_CHECKS order."""
    assert POLICY_CHECKS == ("connect", "method", "target_form", "upgrade")
    packet = b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"     # all four cover it
    reasons = [Reason.CONNECT, Reason.METHOD_NOT_ALLOWED, Reason.TARGET_FORM, Reason.UPGRADE]
    for allowed in range(len(POLICY_CHECKS) + 1):
        settings = {check: (ALLOW if i < allowed else PUNT, 400) for i, check in enumerate(POLICY_CHECKS)}
        got = verdict(packet, RequestPolicy(**settings))
        assert got == (None if allowed == 4 else (Action.PUNT, reasons[allowed], 0)), allowed


def test_parser_errors_come_before_the_policy():
    assert verdict(b"CONNECT a:443 HTTP/1.1\r\nUpgrade: h2c\r\n\r\n") == (Action.REJECT, Reason.MISSING_HOST, 400)
    assert verdict(b"BREW http://a/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")[1] == Reason.DUPLICATE_HOST
    assert verdict(b"GET / RTSP/1.0\r\nHost: a\r\n\r\n")[1] == Reason.BAD_REQUEST_LINE


def test_allowed_methods_is_indexed_by_method_code():
    for code in (m.value for m in Method if m is not Method.NONE):
        policy = RequestPolicy(allowed_methods=1 << code, connect=(ALLOW, 405), target_form=(ALLOW, 400))
        for method in Method:
            if method is Method.NONE:
                continue
            got = policy.verdict(method, True, False)
            assert (got is None) == (method.value == code), (code, method)


def test_random_policies_on_probe_traffic_follow_the_rules():
    """Random register contents against a literal reading of the rules, on the policy probes and mixed traffic."""
    rng = random.Random(SEED)
    packets = [traffic.policy_probe(rng) for _ in range(300)] + list(traffic.mix(rng, 300))
    for i, packet in enumerate(packets):
        settings = {check: (rng.randrange(4), rng.randrange(400, 600)) for check in POLICY_CHECKS}
        mask = rng.getrandbits(16)
        policy = RequestPolicy(**settings, allowed_methods=mask)
        desc = parse(packet)
        got = early_verdict(desc, LOOKASIDE, False, policy)
        if desc.errors:
            assert got[1].value <= Reason.TRUNCATED.value, f"seed={SEED} #{i}"
            continue
        covers = {"connect": desc.method == Method.CONNECT, "method": not mask >> desc.method.value & 1,
                  "target_form": not desc.origin_form, "upgrade": desc.upgrade}
        want = None
        for check in POLICY_CHECKS:
            action, status = settings[check]
            if covers[check] and action != ALLOW:
                reason = {"connect": Reason.CONNECT, "method": Reason.METHOD_NOT_ALLOWED,
                          "target_form": Reason.TARGET_FORM, "upgrade": Reason.UPGRADE}[check]
                want = (Action.PUNT, reason, 0) if action == PUNT else (Action.REJECT, reason, status)
                break
        assert got == want, f"seed={SEED} #{i}: {packet[:120]!r}"


def test_probe_kinds_cover_every_check():
    rng = random.Random(SEED)
    fired = set()
    for kind, _ in itertools.product(traffic.POLICY_KINDS, range(5)):
        got = verdict(traffic.policy_probe(rng, kind))
        fired.add(None if got is None else got[1])
    assert fired == {None, Reason.UPGRADE, Reason.CONNECT, Reason.TARGET_FORM, Reason.METHOD_NOT_ALLOWED}
