"""The gateway's TOML configuration (``wirespeed.host.gateway.config``): the issue's sample reads as written, every
bad field fails in one line naming the file, the table, the field and the limit, and ``apply`` configures a device
whose verdicts then follow it."""

import pytest

import wirespeed
from wirespeed.host.errors import ConfigError
from wirespeed.host.gateway.config import GatewayConfigError, apply, load_config, parse_config

SAMPLE = '''
device = "software"               # any wirespeed.open URI
listen = "127.0.0.1:8080"
metrics = "127.0.0.1:9464"

[[tenants]]
name = "acme"
key = "sk-acme-1"
requests_per_minute = 600         # any of the driver's rate keywords
tokens_per_minute = 100000

[[tenants]]
name = "tiny"
key = "sk-tiny-1"
requests_per_s = 1
burst = 1

[[pools]]
name = "chat"
backends = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
weights = [2, 1]                  # optional

[[pools]]
name = "embed"
backends = ["10.0.0.1:8000"]

[[routes]]
prefix = "/v1/chat/completions"
pool = "chat"
affinity = "header:x-session-id"  # or "tenant" or "l4"

[[routes]]
prefix = "/v1/embeddings"
pool = "embed"
'''


def test_the_sample_reads_as_written(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(SAMPLE)
    c = load_config(path)
    assert (c.device, c.listen, c.metrics) == ("software", "127.0.0.1:8080", "127.0.0.1:9464")
    assert [(t.name, t.key, t.rates) for t in c.tenants] == [
        ("acme", "sk-acme-1", {"requests_per_minute": 600, "tokens_per_minute": 100000}),
        ("tiny", "sk-tiny-1", {"requests_per_s": 1, "burst": 1})]
    assert [(p.name, p.backends, p.weights) for p in c.pools] == [
        ("chat", ("http://127.0.0.1:9001", "http://127.0.0.1:9002"), (2, 1)), ("embed", ("10.0.0.1:8000",), None)]
    assert [(r.prefix, r.pool, r.affinity) for r in c.routes] == [
        ("/v1/chat/completions", "chat", "header:x-session-id"), ("/v1/embeddings", "embed", "tenant")]


@pytest.mark.parametrize("edit, where, field, limit", [
    (("requests_per_minute = 600", "requests_per_minute = -5"), '[[tenants]] #1 \'acme\'', "requests_per_minute",
     "> 0"),
    (("requests_per_minute = 600", "requests_per_hour = 600"), "[[tenants]] #1", "requests_per_hour",
     "unknown field"),
    (('key = "sk-tiny-1"', 'key = "sk-acme-1"'), "[[tenants]] #2", "key", "unique"),
    (('key = "sk-tiny-1"', 'key = ""'), "[[tenants]] #2", "key", "non-empty"),
    (("weights = [2, 1]", "weights = [2]"), "[[pools]] #1 'chat'", "weights", "2 numbers > 0"),
    (('backends = ["10.0.0.1:8000"]', "backends = []"), "[[pools]] #2 'embed'", "backends", "non-empty list"),
    (('backends = ["10.0.0.1:8000"]', "backends = [8000]"), "[[pools]] #2 'embed'", "backends", "http://HOST:PORT"),
    (('backends = ["10.0.0.1:8000"]', 'backends = ["http://u:secret@10.0.0.1:8000"]'), "[[pools]] #2 'embed'",
     "backends", "no user info"),
    (('backends = ["10.0.0.1:8000"]', 'backends = ["ftp://10.0.0.1"]'), "[[pools]] #2 'embed'", "backends",
     "https://HOST:PORT"),
    (('backends = ["10.0.0.1:8000"]', 'backends = ["10.0.0.1:99999"]'), "[[pools]] #2 'embed'", "backends",
     "HOST:PORT"),
    (('backends = ["10.0.0.1:8000"]', 'backends = ["10.0.0.1:8000"]\napi_key = "a"\napi_key_env = "B"'),
     "[[pools]] #2 'embed'", "api_key_env", "not both"),
    (('backends = ["10.0.0.1:8000"]', 'backends = ["10.0.0.1:8000"]\napi_key_env = "WIRESPEED_TEST_UNSET_KEY"'),
     "[[pools]] #2 'embed'", "api_key_env", "set and not empty"),
    (('backends = ["10.0.0.1:8000"]', 'backends = ["10.0.0.1:8000"]\napi_key = "sk-\\u00e9"'),
     "[[pools]] #2 'embed'", "api_key", "printable ASCII"),
    (('pool = "embed"', 'pool = "nope"'), "[[routes]] #2", "pool", "must name a [[pools]] table: chat, embed"),
    (('affinity = "header:x-session-id"', 'affinity = "cookie"'), "[[routes]] #1", "affinity", "'header:<name>'"),
    (('prefix = "/v1/embeddings"', 'prefix = "v1"'), "[[routes]] #2", "prefix", "starting with '/'"),
    (('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:99999"'), "", "listen", "0..65535"),
    (('device = "software"', 'device = 3'), "", "device", "non-empty string"),
    (("[[routes]]", "[[rout]]"), "", "rout", "unknown field"),
])
def test_a_bad_field_is_named_in_one_line(tmp_path, edit, where, field, limit):
    path = tmp_path / "gw.toml"
    assert edit[0] in SAMPLE
    path.write_text(SAMPLE.replace(edit[0], edit[1], 1))
    with pytest.raises(GatewayConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: {where}".rstrip())
    assert f"{field}=" in message and limit in message
    assert isinstance(e.value, ConfigError) and e.value.field == field


def test_unreadable_and_malformed_files_are_named(tmp_path):
    with pytest.raises(GatewayConfigError, match="cannot be read"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(GatewayConfigError, match="not valid TOML"):
        parse_config("device = ", "gw.toml")


def test_apply_configures_a_device_whose_verdicts_follow_it():
    c = parse_config(SAMPLE, "gw.toml")
    with wirespeed.open(c.device, clock="manual") as dev:
        ids = apply(c, dev)
        assert set(ids) == {"acme", "tiny"}
        # acme's per-minute rates became the driver's per-second ones (600/min = 10/s), tiny's as written.
        acme, tiny = dev.tenants.get(ids["acme"]), dev.tenants.get(ids["tiny"])
        assert (acme.requests_per_s, tiny.requests_per_s, tiny.burst) == (10, 1, 1)

        def ask(path, key, session=None):
            extra = f"x-session-id: {session}\r\n" if session else ""
            return dev.classify(f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n{extra}"
                                f"Content-Length: 2\r\n\r\n{{}}".encode())

        v = ask("/v1/chat/completions", "sk-acme-1", "s1")
        assert (v.action, v.tenant) == ("forward", ids["acme"])
        assert v.backend in ("http://127.0.0.1:9001", "http://127.0.0.1:9002")
        assert ask("/v1/chat/completions", "sk-acme-1", "s1").backend == v.backend      # the session stays
        assert ask("/v1/embeddings", "sk-acme-1").backend == "10.0.0.1:8000"
        # tiny: 1 request per second, burst 1: the second request at once is rate limited.
        assert ask("/v1/embeddings", "sk-tiny-1").action == "forward"
        assert ask("/v1/embeddings", "sk-tiny-1").reason == "rate_limited"
        assert ask("/v1/embeddings", "sk-unknown").action == "reject"


def test_a_value_the_driver_refuses_names_its_table():
    bad = SAMPLE.replace("requests_per_minute = 600", "requests_per_minute = 1e-9")
    c = parse_config(bad, "gw.toml")
    with wirespeed.open("software", clock="manual") as dev:
        with pytest.raises(GatewayConfigError) as e:
            apply(c, dev)
    assert str(e.value).startswith("gw.toml: [[tenants]] #1 'acme': ") and "\n" not in str(e.value)


def test_a_pools_api_key_from_the_file_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "gw.toml"
    monkeypatch.setenv("WIRESPEED_TEST_EMBED_KEY", "sk-from-env")
    path.write_text(SAMPLE.replace('weights = [2, 1]', 'weights = [2, 1]\napi_key = "sk-in-file"')
                    .replace('backends = ["10.0.0.1:8000"]',
                             'backends = ["10.0.0.1:8000"]\napi_key_env = "WIRESPEED_TEST_EMBED_KEY"'))
    c = load_config(path)
    assert [p.api_key for p in c.pools] == ["sk-in-file", "sk-from-env"]
    assert "sk-in-file" not in repr(c.pools[0])                          # not in logs or tracebacks
    assert load_config(_write(tmp_path, SAMPLE)).pools[0].api_key is None


def _write(tmp_path, text: str):
    path = tmp_path / "other.toml"
    path.write_text(text)
    return path
