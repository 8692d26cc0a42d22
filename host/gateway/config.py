"""The gateway's configuration: a TOML file read with :mod:`tomllib`, checked whole before anything starts.

::

    device = "software"               # any wirespeed.open URI
    listen = "127.0.0.1:8080"
    metrics = "127.0.0.1:9464"

    [[tenants]]
    name = "acme"
    key = "sk-acme-1"
    requests_per_minute = 600         # any of the driver's rate keywords
    tokens_per_minute = 100000

    [[pools]]
    name = "chat"
    backends = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    weights = [2, 1]                  # optional

    [[routes]]
    prefix = "/v1/chat/completions"
    pool = "chat"
    affinity = "header:x-session-id"  # or "tenant" or "l4"

A bad configuration raises :class:`GatewayConfigError`, one line naming the file, the table, the field and the
limit, e.g. ``gw.toml: [[tenants]] #1 'acme': requests_per_minute=-5 is invalid: must be a number > 0 (leave it
out for no limit)``.
:func:`apply` then writes it to an open device through the driver, so the driver's own checks (a rate finer than
the hardware's time quantum, more backends than a pool holds) are named the same way.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..driver.tenants import RATE_KEYWORDS
from ..errors import ConfigError, WirespeedError

__all__ = ["GatewayConfig", "Tenant", "Pool", "Route", "GatewayConfigError", "load_config", "parse_config", "apply",
           "apply_async", "device_secret",
           "RATE_KEYS"]

#: The rate keywords of ``tenants.add``, as a tenant table may give them.
RATE_KEYS = RATE_KEYWORDS
_TOP_KEYS = ("device", "listen", "metrics", "hash_secret", "tenants", "pools", "routes")
_AFFINITIES = ("tenant", "l4")


class GatewayConfigError(ConfigError):
    """A configuration the gateway cannot start with: ``str()`` is one line naming the file, the table, the field and
    the limit. ``where`` is the file and table part."""

    def __init__(self, where: str, field: str, value, limit: str):
        self.where = where
        super().__init__(field, value, limit)
        self.args = (f"{where}: {field}={value!r} is invalid: {limit}",)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Tenant:
    name: str
    key: str
    rates: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Pool:
    name: str
    backends: tuple
    weights: tuple | None = None
    #: The key the gateway sends its backends (the client's own is never forwarded), or None for none.
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Route:
    prefix: str
    pool: str
    affinity: str = "tenant"


@dataclass(frozen=True)
class GatewayConfig:
    path: str
    device: str = "software"
    listen: str = "127.0.0.1:8080"
    metrics: str | None = None
    tenants: tuple = ()
    pools: tuple = ()
    routes: tuple = ()
    hash_secret: str | None = None

    def pool_index(self, name: str) -> int:
        return [p.name for p in self.pools].index(name)


def _address(where: str, name: str, value) -> str:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not (sep and host and port.isdigit() and 0 <= int(port) <= 65535):
        raise GatewayConfigError(where, name, value, "must be HOST:PORT with a port in 0..65535 (0: the OS picks "
                                 "one)")
    return value


def _string(where: str, name: str, value, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise GatewayConfigError(where, name, value, "must be a non-empty string")
    return value


def _unknown(where: str, table: dict, allowed) -> None:
    for name in table:
        if name not in allowed:
            raise GatewayConfigError(where, name, table[name], f"unknown field; the fields are {', '.join(allowed)}")


def _tables(path: str, data: dict, name: str) -> list[tuple[str, dict]]:
    tables = data.get(name, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise GatewayConfigError(path, name, tables, f"must be an array of tables ([[{name}]])")
    return [(f"{path}: [[{name}]] #{i + 1}" + (f" {t['name']!r}" if isinstance(t.get("name"), str) else ""), t)
            for i, t in enumerate(tables)]


def _tenant(where: str, t: dict) -> Tenant:
    _unknown(where, t, ("name", "key", *RATE_KEYS))
    rates = {}
    for name in RATE_KEYS:
        if name in t:
            value = t[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise GatewayConfigError(where, name, value, "must be a number > 0 (leave it out for no limit)")
            rates[name] = value
    return Tenant(_string(where, "name", t.get("name")), _string(where, "key", t.get("key")), rates)


def backend_url(backend: str) -> str:
    """The URL the gateway sends a backend's requests to: the backend as written, or ``http://`` before a bare
    ``HOST:PORT``."""
    return backend if "://" in backend else f"http://{backend}"


def _backend_ok(backend) -> bool:
    if not isinstance(backend, str):
        return False
    try:
        parts = urlsplit(backend_url(backend))
        parts.port                                  # (raises on a port that is not a number in range)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname) and parts.username is None
            and parts.password is None and not parts.query and not parts.fragment)


def _pool(where: str, t: dict) -> Pool:
    _unknown(where, t, ("name", "backends", "weights", "api_key", "api_key_env"))
    backends = t.get("backends")
    if not isinstance(backends, list) or not backends:
        raise GatewayConfigError(where, "backends", backends, "must be a non-empty list of backend URLs")
    for backend in backends:
        if not _backend_ok(backend):
            raise GatewayConfigError(where, "backends", backend, "must be http://HOST:PORT or https://HOST:PORT "
                                     "(a path prefix allowed; no user info, query or fragment), or HOST:PORT")
    weights = t.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(backends) or not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights):
            raise GatewayConfigError(where, "weights", weights,
                                     f"must be {len(backends)} numbers > 0, one per backend")
        weights = tuple(weights)
    api_key = None
    if "api_key" in t and "api_key_env" in t:
        raise GatewayConfigError(where, "api_key_env", t["api_key_env"], "give api_key or api_key_env, not both")
    if "api_key" in t:
        api_key = _string(where, "api_key", t["api_key"])
    elif "api_key_env" in t:
        name = _string(where, "api_key_env", t["api_key_env"])
        api_key = os.environ.get(name)
        if not api_key:
            raise GatewayConfigError(where, "api_key_env", name, "must name an environment variable that is set and "
                                     "not empty")
    if api_key is not None and not (api_key.isascii() and api_key.isprintable()):
        raise GatewayConfigError(where, "api_key", "…", "must be printable ASCII (it goes in a header)")
    return Pool(_string(where, "name", t.get("name")), tuple(backends), weights, api_key)


def _route(where: str, t: dict, pools: set) -> Route:
    _unknown(where, t, ("prefix", "pool", "affinity"))
    prefix = t.get("prefix")
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise GatewayConfigError(where, "prefix", prefix, "must be a path starting with '/'")
    pool = t.get("pool")
    if pool not in pools:
        raise GatewayConfigError(where, "pool", pool, f"must name a [[pools]] table: {', '.join(sorted(pools))}")
    affinity = t.get("affinity", "tenant")
    if not isinstance(affinity, str) or not (affinity in _AFFINITIES or (
            affinity.startswith("header:") and len(affinity) > len("header:"))):
        raise GatewayConfigError(where, "affinity", affinity, "must be 'tenant', 'l4' or 'header:<name>'")
    return Route(prefix, pool, affinity)


def parse_config(text: str, path: str = "<config>") -> GatewayConfig:
    """The configuration in ``text`` (TOML), checked whole; ``path`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError(path, "toml", text[:40], f"not valid TOML: {exc}") from None
    _unknown(path, data, _TOP_KEYS)
    device = _string(path, "device", data.get("device", "software"))
    listen = _address(path, "listen", data.get("listen", "127.0.0.1:8080"))
    metrics = data.get("metrics")
    if metrics is not None:
        _address(path, "metrics", metrics)
    hash_secret = data.get("hash_secret")
    if hash_secret is not None:
        _string(path, "hash_secret", hash_secret)
    tenants = [_tenant(w, t) for w, t in _tables(path, data, "tenants")]
    pools = [_pool(w, t) for w, t in _tables(path, data, "pools")]
    for kind, items, attr in (("tenants", tenants, "name"), ("tenants", tenants, "key"), ("pools", pools, "name")):
        seen = set()
        for i, item in enumerate(items):
            value = getattr(item, attr)
            if value in seen:
                raise GatewayConfigError(f"{path}: [[{kind}]] #{i + 1}", attr, value, f"must be unique; an earlier "
                                         f"[[{kind}]] table has it")
            seen.add(value)
    routes = [_route(w, t, {p.name for p in pools}) for w, t in _tables(path, data, "routes")]
    return GatewayConfig(path, device, listen, metrics, tuple(tenants), tuple(pools), tuple(routes), hash_secret)


def load_config(path) -> GatewayConfig:
    """The configuration in the TOML file ``path``, checked whole (:func:`parse_config`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise GatewayConfigError(str(p), "file", str(p), f"cannot be read: {exc.strerror}") from None
    return parse_config(text, str(p))


def device_secret(config: GatewayConfig) -> bytes:
    """The secret behind the router's Toeplitz key and the API-key fingerprint key: ``hash_secret`` when the file
    sets one, else one derived from the tenants' keys. Either way every replica reading the same file gets the same
    keys, so a session hashes to the same backend on each, while a client that knows only its own key cannot
    compute another's hash (unless it is the only tenant: set ``hash_secret`` then)."""
    text = config.hash_secret if config.hash_secret is not None else "\n".join(t.key for t in config.tenants)
    return hashlib.blake2b(text.encode(), person=b"wirespeed-gw").digest()


def _steps(config: GatewayConfig, dev):
    """``(where, method, args, kwargs)`` of each driver call that writes ``config`` to ``dev``, in order."""
    secret = device_secret(config)
    yield config.path, dev.set_fingerprint_key, (secret,), {}
    toeplitz_key = hashlib.blake2b(secret, digest_size=40, person=b"wirespeed-rss").digest()
    yield config.path, dev.set_hash_key, (toeplitz_key,), {}
    for i, pool in enumerate(config.pools):
        yield (f"{config.path}: [[pools]] #{i + 1} {pool.name!r}", dev.pools.set,
               (i, list(pool.backends), list(pool.weights) if pool.weights else None), {})
    for i, route in enumerate(config.routes):
        yield (f"{config.path}: [[routes]] #{i + 1}", dev.routes.add, (route.prefix, config.pool_index(route.pool)),
               {"key": route.affinity})
    for i, t in enumerate(config.tenants):
        yield f"{config.path}: [[tenants]] #{i + 1} {t.name!r}", dev.tenants.add, (t.key,), t.rates


def _named(where: str, exc: Exception) -> GatewayConfigError:
    if isinstance(exc, ConfigError):
        return GatewayConfigError(where, exc.field, exc.value, exc.limit)
    return GatewayConfigError(where, "value", None, str(exc))


def _tenant_ids(config: GatewayConfig, results: list) -> dict:
    """``{tenant name: tenant id}`` from the results of :func:`_steps`' calls: the tenants are added last."""
    return dict(zip((t.name for t in config.tenants), results[len(results) - len(config.tenants):]))


def apply(config: GatewayConfig, dev) -> dict:
    """Write ``config`` to the open device ``dev`` (an :class:`~wirespeed.host.driver.offload.Offload`): the keys
    (:func:`device_secret`), the pools (in file order: the first is pool 0), the routes and the tenants. Returns
    ``{tenant name: tenant id}``. A value the driver refuses raises :class:`GatewayConfigError` naming the table it
    came from."""
    results = []
    for where, method, args, kwargs in _steps(config, dev):
        try:
            results.append(method(*args, **kwargs))
        except WirespeedError as exc:
            raise _named(where, exc) from exc
    return _tenant_ids(config, results)


async def apply_async(config: GatewayConfig, dev) -> dict:
    """:func:`apply` for an :class:`~wirespeed.host.driver.offload.AsyncOffload` (every call awaited)."""
    results = []
    for where, method, args, kwargs in _steps(config, dev):
        try:
            results.append(await method(*args, **kwargs))
        except WirespeedError as exc:
            raise _named(where, exc) from exc
    return _tenant_ids(config, results)
