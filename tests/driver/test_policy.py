"""``Offload.policy`` (host/driver/policy.py) on "model", "software" and, marked rtl, the Verilated core ("sim"):
the default request policy, each action, the method allowlist, that a request the policy decides spends no tokens, and
ConfigError for bad arguments (docs/pipeline.md, "Request policy")."""

import pytest

import wirespeed
from wirespeed.host.driver.policy import PolicySetting
from wirespeed.host.errors import ConfigError, WirespeedError

KEY = "sk-policy-tenant"
AUTH = b"Authorization: Bearer " + KEY.encode() + b"\r\n"
UPGRADE = b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
CONNECT = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n" + AUTH + b"\r\n"
ABSOLUTE = b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + AUTH + b"\r\n"
ASTERISK = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n" + AUTH + b"\r\n"
BREW = b"BREW / HTTP/1.1\r\nHost: h\r\n" + AUTH + b"\r\n"
GOOD = b"GET /v1/models HTTP/1.1\r\nHost: h\r\n" + AUTH + b"\r\n"


def _gateway(dev, burst=2):
    dev.pools.set(0, [1, 2, 3], size=251)
    dev.routes.default(0, key="tenant")
    return dev.tenants.add(KEY, requests_per_minute=60, burst=burst)


def _outcome(v):
    return v.action, v.status, v.reason


def check_policy_session(dev):
    """The session every transport runs; returns the verdicts for the parity check."""
    _gateway(dev)
    seen = []
    # Defaults.
    got = [_outcome(v) for v in dev.classify_many([UPGRADE, CONNECT, ABSOLUTE, ASTERISK, BREW])]
    assert got == [("reject", 400, "upgrade"), ("reject", 405, "connect"), ("reject", 400, "target_form"),
                   ("reject", 400, "target_form"), ("reject", 405, "method_not_allowed")]
    seen += got
    # Rejected and punted requests spend no tokens: the burst of 2 is intact afterwards.
    dev.policy.set("upgrade", "punt")
    got = [_outcome(v) for v in dev.classify_many([UPGRADE] * 3 + [BREW] * 3 + [GOOD] * 3)]
    assert got == [("punt", 0, "upgrade")] * 3 + [("reject", 405, "method_not_allowed")] * 3 + \
        [("forward", 200, "ok")] * 2 + [("reject", 429, "rate_limited")], got
    seen += got
    # allow: the request goes on to the limiter (now empty) instead.
    dev.policy.set("upgrade", "allow")
    dev.policy.set("target_form", "reject", status=421)
    dev.policy.allow_methods(["GET", "OTHER"])
    got = [_outcome(v) for v in dev.classify_many([UPGRADE, ABSOLUTE, BREW, CONNECT])]
    assert got == [("reject", 429, "rate_limited"), ("reject", 421, "target_form"), ("reject", 429, "rate_limited"),
                   ("reject", 405, "connect")], got
    seen += got
    settings = dev.policy.get()
    assert settings["upgrade"] == PolicySetting("allow", 400)
    assert settings["target_form"] == PolicySetting("reject", 421)
    assert settings["connect"] == PolicySetting("reject", 405)
    assert settings["allowed_methods"] == ("GET", "OTHER")
    return seen


@pytest.mark.parametrize("uri", ["model", "software"])
def test_policy_session(uri):
    with wirespeed.open(uri, clock="manual") as dev:
        check_policy_session(dev)


@pytest.mark.parametrize("uri", ["model", "software"])
def test_defaults_after_open(uri):
    with wirespeed.open(uri, clock="manual") as dev:
        settings = dev.policy.get()
        assert {k: v for k, v in settings.items() if k != "allowed_methods"} == {
            "connect": PolicySetting("reject", 405), "method": PolicySetting("reject", 405),
            "target_form": PolicySetting("reject", 400), "upgrade": PolicySetting("reject", 400)}
        assert settings["allowed_methods"] == ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


@pytest.mark.parametrize("call, field", [
    (lambda p: p.set("upgrad", "reject"), "check"),
    (lambda p: p.set("upgrade", "drop"), "action"),
    (lambda p: p.set("upgrade", "reject", status=200), "status"),
    (lambda p: p.set("upgrade", "reject", status=True), "status"),
    (lambda p: p.set("connect", "reject", status="405"), "status"),
    (lambda p: p.allow_methods(["GET", "BREW"]), "methods"),
    (lambda p: p.allow_methods("GET"), "methods"),
    (lambda p: p.allow_methods([None]), "methods"),
])
def test_bad_arguments_raise_config_error_and_write_nothing(call, field):
    with wirespeed.open("model", clock="manual") as dev:
        before = dev.policy.get()
        with pytest.raises(ConfigError) as info:
            call(dev.policy)
        assert isinstance(info.value, WirespeedError) and info.value.field == field
        assert dev.policy.get() == before


@pytest.mark.rtl
def test_policy_session_on_sim_equals_model():
    verdicts = {}
    for uri in ("sim", "model"):
        with wirespeed.open(uri, clock="manual") as dev:
            verdicts[uri] = check_policy_session(dev)
    assert verdicts["sim"] == verdicts["model"]
