"""``wirespeed bench --gateway``: the latency the gateway adds, under an open-loop load at fixed offered rates.

Processes on loopback::

    bench process (this one)          mock process                     gateway process (one per device URI)
    open-loop load generator ───────▶ BenchBackend ◀──────────────────── wirespeed gateway --json
    (llhttp client on uvloop) ───────────────────────────────────────▶  (and the passthrough proxy, and,
                                                                          optionally, a LiteLLM proxy)

For each offered rate the same load goes straight to the mock (``direct``), through the passthrough proxy
(``passthrough``: a proxy hop in Python that does nothing else, :mod:`.bench_backends`), through a gateway on each
device URI (``software``, ``model``) and, when ``--peer-litellm`` names its binary, through a LiteLLM proxy in front
of the same mock. The targets take turns (:func:`measure`): each one's seconds are cut into ``rounds`` slices, run
direct, passthrough, software, …, direct, passthrough, …, so that a moment when the machine is busy with something
else lands on every row alike instead of on whichever row ran then. ``added_pX = pX(target) − pX(direct)`` for p50,
p99 and p99.9, each target's slices pooled. Each row also has the CPU each process spent per request (target,
backend, generator): the three share the machine's cores.

The load is open-loop (:func:`open_loop`): request *i* is due at ``t0 + i / rate`` whether or not earlier ones have
answered (woken at that instant by a timerfd, :class:`DueTimer`), and its latency runs from that scheduled time, so
a target that falls behind shows its queue in the tail instead of slowing the generator down (coordinated
omission). wrk is closed-loop and h2load reports no percentiles, hence this generator; its HTTP client is
:class:`.bench_client.RawClient` (llhttp on asyncio protocols, at about 40 % of aiohttp's CPU per request;
``client="aiohttp"`` for aiohttp's). Every run is bounded: ``rate × seconds`` requests, and a hard deadline
``grace_s`` after the last one of a slice is due; a request not answered by then counts as an error (a timeout),
and a request that failed or was not answered 200 counts as infinitely slow in the percentiles (so a tail of
failures reads as ``None``, not as fast).

``python -m wirespeed.host.tools.bench_gateway mock --port 0`` is the mock process
(:class:`.bench_backends.BenchBackend`: the :class:`~..gateway.mock.MockBackend`'s chat completions at a fraction of
its CPU), and ``… passthrough --backend URL --port 0`` the passthrough; each prints its URL and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bench_client import RawClient

__all__ = ["run", "print_report", "schedule", "latency_percentiles", "added_latency", "open_loop", "gateway_config",
           "litellm_config", "LoadRun", "TARGET_P99_ADDED_MS", "TARGET_RATE", "DEFAULT_RATES", "main"]

#: The generator's HTTP clients (:func:`measure`): llhttp on asyncio protocols (the default), or aiohttp's.
CLIENTS = ("raw", "aiohttp")
#: The issue's target: p99 added ≤ 0.5 ms at 1 000 req/s on ``"software"``.
TARGET_P99_ADDED_MS = 0.5
TARGET_RATE = 1000
DEFAULT_RATES = (500, 1000, 2000)
#: The percentiles reported, as (name, q in 0..100).
PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p999", 99.9))
TENANT_KEY = "sk-bench-1"
MODEL = "gpt-4o-mini"
BODY = json.dumps({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]},
                  separators=(",", ":")).encode()
#: A run is "sustained" when nothing failed and at least this share of the offered rate was answered.
SUSTAINED_SHARE = 0.95
_PROCESS_START_S = 120.0         # "model" loads the whole register-level core model; LiteLLM imports a lot
_TIMING = re.compile(r"([A-Za-z_]+);dur=([0-9.]+)")


# -- pure parts -------------------------------------------------------------------------------------------------------


def schedule(rate: float, seconds: float) -> np.ndarray:
    """The open-loop schedule: ``round(rate × seconds)`` start offsets in seconds, ``i / rate`` for request ``i``."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate={rate!r} and seconds={seconds!r} must be > 0")
    n = max(1, round(rate * seconds))
    return np.arange(n, dtype=np.float64) / float(rate)


def latency_percentiles(latencies_s) -> dict:
    """``{"p50_ms", "p99_ms", "p999_ms"}`` of ``latencies_s`` (seconds; ``inf`` for a request that failed), each the
    nearest-rank percentile in milliseconds, or None where it falls on a failure (or there are no requests)."""
    values = np.sort(np.asarray(latencies_s, dtype=np.float64))
    out = {}
    for name, q in PERCENTILES:
        if values.size == 0:
            out[f"{name}_ms"] = None
            continue
        # Rank ⌈q·n/100⌉, with q·n/100 rounded first: 99.9 × 1000 / 100 is 999.0000000000001 in floating point.
        rank = min(values.size, max(1, math.ceil(round(q * values.size / 100, 9))))
        v = float(values[rank - 1])
        out[f"{name}_ms"] = round(v * 1e3, 4) if math.isfinite(v) else None
    return out


def added_latency(row: dict, direct: dict) -> dict:
    """``{"added_p50_ms", ...}``: ``row``'s percentiles minus ``direct``'s (None where either is None)."""
    out = {}
    for name, _q in PERCENTILES:
        a, b = row.get(f"{name}_ms"), direct.get(f"{name}_ms")
        out[f"added_{name}_ms"] = None if a is None or b is None else round(a - b, 4)
    return out


def parse_server_timing(value) -> dict:
    """``Server-Timing: device;dur=0.012;desc="…", total;dur=0.9;…`` as ``{"device": 0.012, "total": 0.9}`` (ms);
    ``value`` as text or as the header's bytes."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("latin-1")
    return {name: float(dur) for name, dur in _TIMING.findall(value)}


def gateway_config(mock_url: str, *, device: str = "software") -> str:
    """The gateway's TOML for the bench: one tenant far above any rate the bench offers (100 000 requests/s, 10⁷
    tokens/s), one pool holding the mock, chat completions routed to it by ``x-session-id``."""
    return f"""\
device = "{device}"
listen = "127.0.0.1:0"
metrics = "127.0.0.1:0"
hash_secret = "wirespeed bench"

[[tenants]]
name = "bench"
key = "{TENANT_KEY}"
requests_per_s = 100000
tokens_per_s = 10000000

[[pools]]
name = "chat"
backends = ["{mock_url}"]

[[routes]]
prefix = "/v1/chat/completions"
pool = "chat"
affinity = "header:x-session-id"
"""


def litellm_config(mock_url: str, master_key: str) -> str:
    """A LiteLLM proxy configuration with the bench's model served by the mock (OpenAI-compatible, at ``/v1``).
    Its clients authenticate with ``master_key`` (the proxy refuses to start without a strong one), as the gateway's
    do with a tenant key."""
    return f"""\
general_settings:
  master_key: {master_key}
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {mock_url}/v1
      api_key: {TENANT_KEY}
litellm_settings:
  telemetry: false
"""


# -- the load generator -----------------------------------------------------------------------------------------------


@dataclass
class LoadRun:
    """One measured run at one offered rate against one URL.

    ``latencies`` holds, per scheduled request, seconds from its scheduled start to the end of its 200 answer's body
    (``inf`` when it failed, was answered otherwise, or was not answered by the deadline); ``lag`` the seconds from
    its scheduled start to the moment the generator sent it (the generator's own lateness); ``timings`` the target's
    ``Server-Timing`` values as they came (parsed by :meth:`summary`, not while the load runs: the generator then
    spends the same per request on every target)."""
    rate: float
    seconds: float
    latencies: np.ndarray
    lag: np.ndarray
    errors: int
    timeouts: int
    non_200: int
    ok: int
    span_s: float
    statuses: dict = field(default_factory=dict)
    timings: list = field(default_factory=list)

    @classmethod
    def pooled(cls, runs: list) -> "LoadRun":
        """Slices of one target's load (same rate) as one run: their requests together, their seconds and spans
        summed."""
        statuses: dict = {}
        for r in runs:
            for k, v in r.statuses.items():
                statuses[k] = statuses.get(k, 0) + v
        return cls(rate=runs[0].rate, seconds=sum(r.seconds for r in runs),
                   latencies=np.concatenate([r.latencies for r in runs]), lag=np.concatenate([r.lag for r in runs]),
                   errors=sum(r.errors for r in runs), timeouts=sum(r.timeouts for r in runs),
                   non_200=sum(r.non_200 for r in runs), ok=sum(r.ok for r in runs),
                   span_s=sum(r.span_s for r in runs), statuses=statuses,
                   timings=[t for r in runs for t in r.timings])

    def summary(self) -> dict:
        achieved = self.ok / max(self.seconds, self.span_s) if self.span_s > 0 else 0.0
        row = {"offered_rps": self.rate, "achieved_rps": round(achieved, 1), "requests": int(self.latencies.size),
               "ok": self.ok, "errors": self.errors, "timeouts": self.timeouts, "non_200": self.non_200,
               **latency_percentiles(self.latencies)}
        lag = self.lag[np.isfinite(self.lag)]
        row["generator_lag_p99_ms"] = round(float(np.percentile(lag, 99)) * 1e3, 4) if lag.size else None
        row["sustained"] = (self.errors == 0 and self.non_200 == 0
                            and achieved >= SUSTAINED_SHARE * self.rate)
        if self.statuses:
            row["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        if self.timings:
            row["server_timing_ms"] = _timing_summary(self.timings)
        return row


def _timing_summary(timings: list) -> dict:
    """p50/p99 of the gateway's own ``Server-Timing`` stages over the run, plus ``own`` (total − ttft: the gateway's
    time on a request outside the upstream's). ``timings``: the header values (text or bytes) or parsed ones."""
    timings = [t if isinstance(t, dict) else parse_server_timing(t) for t in timings]
    out = {}
    names = sorted({k for t in timings for k in t})
    for name in names + ["own"]:
        if name == "own":
            vals = [t["total"] - t["ttft"] for t in timings if "total" in t and "ttft" in t]
        else:
            vals = [t[name] for t in timings if name in t]
        if vals:
            out[name] = {"p50": round(float(np.percentile(vals, 50)), 4),
                         "p99": round(float(np.percentile(vals, 99)), 4)}
    return out


class DueTimer:
    """Wake the event loop at a ``time.perf_counter()`` instant to within microseconds: a Linux ``timerfd`` armed at
    that absolute ``CLOCK_MONOTONIC`` time (the clock ``perf_counter`` reads there), watched by the loop as a file.

    Why not ``asyncio.sleep``: uvloop's timers (libuv's) count whole milliseconds, and asyncio's own loop rounds its
    poll timeout up to one, so a request due mid-millisecond went out up to a millisecond late, in every row alike;
    that lateness is the generator's, not the target's, and it blurred the percentiles (``gen lag`` in the report).
    :meth:`open` gives None where there is no timerfd (not Linux); the generator then sleeps as before."""

    CLOCK_MONOTONIC, TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1

    def __init__(self, loop, libc, fd: int):
        import ctypes

        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class Itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]
        self.loop, self.fd, self._settime = loop, fd, libc.timerfd_settime
        self._spec = Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._waiter: asyncio.Future | None = None
        loop.add_reader(fd, self._fired)

    @classmethod
    def open(cls, loop) -> "DueTimer | None":
        if not sys.platform.startswith("linux") or time.get_clock_info("perf_counter").implementation != \
                "clock_gettime(CLOCK_MONOTONIC)":
            return None
        import ctypes
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(cls.CLOCK_MONOTONIC, cls.TFD_NONBLOCK | cls.TFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(loop, libc, fd) if fd >= 0 else None

    async def wait_until(self, when: float) -> None:
        """Return at ``when`` (``perf_counter`` seconds), or at once if it has passed."""
        spec = self._spec
        sec = int(when)
        spec.it_value.tv_sec, spec.it_value.tv_nsec = sec, max(1, int((when - sec) * 1e9))
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
            await asyncio.sleep(max(0.0, when - time.perf_counter()))
            return
        self._waiter = self.loop.create_future()
        await self._waiter

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


async def open_loop(session, url: str, rate: float, seconds: float, *, key: str = TENANT_KEY, grace_s: float = 2.0,
                    server_timing: bool = False, tag: str = "") -> LoadRun:
    """Offer ``rate`` requests/s for ``seconds`` to ``url`` (``POST``, :data:`BODY`) through ``session``.

    Bounded in count (``rate × seconds`` requests) and time (nothing is sent, nor waited for, past ``grace_s`` after
    the last scheduled start; what is still running then is cancelled and counted as a timeout)."""
    offsets = schedule(rate, seconds)
    n = offsets.size
    latencies = np.full(n, np.inf)
    lag = np.full(n, np.nan)
    statuses: dict = {}
    timings: list = []
    counts = {"errors": 0, "non_200": 0, "ok": 0}
    last_end = [0.0]
    clock = time.perf_counter
    t0 = clock() + 0.005
    hard_deadline = t0 + float(offsets[-1]) + grace_s

    raw = isinstance(session, RawClient)

    async def one(i: int, due: float) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                   "x-session-id": f"bench{tag}-{i}"}
        lag[i] = clock() - due
        try:
            if raw:
                status, answer_headers, _body = await session.post(url, BODY, headers)
                end = clock()
                value = answer_headers.get(b"server-timing")
            else:
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    end = clock()
                    status = response.status
                    value = response.headers.get("server-timing")
            if server_timing and value:
                timings.append(value)               # (parsed after the run)
        except asyncio.CancelledError:
            raise
        except Exception:       # connection refused or reset, bad response: an error, never a latency
            counts["errors"] += 1
            return
        statuses[status] = statuses.get(status, 0) + 1
        last_end[0] = max(last_end[0], end)
        if status == 200:
            latencies[i] = end - due
            counts["ok"] += 1
        else:
            counts["non_200"] += 1

    tasks = []
    # The requests still running, and an event set when the last one ends after the last was sent (waiting on the
    # whole task list at once took milliseconds, right when the last request's answer came back).
    running: set = set()
    all_done, sending = asyncio.Event(), [True]

    def finished(task) -> None:
        running.discard(task)
        if not running and not sending[0]:
            all_done.set()
    loop = asyncio.get_running_loop()
    timer = DueTimer.open(loop)
    try:
        for i in range(n):
            due = t0 + float(offsets[i])
            now = clock()
            if now > hard_deadline:
                break                   # the generator itself fell past the deadline: the rest count as not sent
            if due > now:
                await (timer.wait_until(due) if timer is not None else asyncio.sleep(due - now))
            task = loop.create_task(one(i, due))
            tasks.append(task)
            running.add(task)
            task.add_done_callback(finished)
    finally:
        sending[0] = False
        if timer is not None:
            timer.close()
    not_sent = n - len(tasks)
    timeouts = not_sent
    if running:
        try:
            await asyncio.wait_for(all_done.wait(), timeout=max(0.0, hard_deadline - clock()))
        except asyncio.TimeoutError:
            pass
    pending = list(running)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    timeouts += len(pending)
    span = (last_end[0] - t0) if last_end[0] else 0.0
    return LoadRun(rate=rate, seconds=seconds, latencies=latencies, lag=lag, errors=counts["errors"] + timeouts,
                   timeouts=timeouts, non_200=counts["non_200"], ok=counts["ok"], span_s=span, statuses=statuses,
                   timings=timings)


@dataclass
class Target:
    """One thing the load is sent to: ``name`` (a row's ``target``), the chat completions ``url``, the tenant ``key``,
    the gateway's ``metrics_url`` (None for any other target: then no ``Server-Timing`` is read either), and its
    process (None for ``direct``: the mock is measured as the backend)."""
    name: str
    url: str
    metrics_url: str | None
    key: str
    process: "_Process | None"


async def measure(targets: list, rate: float, seconds: float, *, rounds: int = 5, warmup_s: float = 0.5,
                  grace_s: float = 2.0, connections: int = 256, client: str = "raw", between=None,
                  cpu=None) -> list[dict]:
    """Each of ``targets`` (:class:`Target`) at ``rate`` for ``seconds`` in all, in ``rounds`` interleaved slices:
    target 1, target 2, …, then again, so that whatever else the machine does at some moment falls on every row
    alike, not on one; each on its own pooled keep-alive session, after a warm-up run (discarded). One
    :meth:`LoadRun.summary` per target, its slices pooled, with the gateway's fallback count over them when it has a
    ``metrics_url``, and ``cpu_us_per_request`` (warm-up included) when ``cpu(target)`` gives the ``(target,
    backend, generator)`` CPU seconds. ``between()`` runs before each warm-up and slice (the bench waits there
    for the processes to go idle). ``client``: ``"raw"`` (:class:`.bench_client.RawClient`) or ``"aiohttp"``."""
    import aiohttp
    from contextlib import AsyncExitStack
    between = between or (lambda: None)
    slice_s = seconds / rounds
    async with AsyncExitStack() as stack:
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
        sessions = []
        for _ in targets:
            if client == "raw":
                sessions.append(await stack.enter_async_context(RawClient(limit=connections)))
                continue
            connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60, force_close=False)
            sessions.append(await stack.enter_async_context(aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None), skip_auto_headers=("User-Agent",))))
        spent = [[0.0, 0.0, 0.0] for _ in targets]

        def count(i: int, before):
            if before is not None:
                after = cpu(targets[i])
                spent[i] = [None if s is None or a is None or b is None else s + b - a
                            for s, a, b in zip(spent[i], before, after)]
        for i, (t, s) in enumerate(zip(targets, sessions)):
            between()
            before = cpu(t) if cpu else None
            if warmup_s > 0:
                await open_loop(s, t.url, rate, warmup_s, key=t.key, grace_s=grace_s, tag="w")
            count(i, before)
        gc.collect()                        # nor the generator (see _serve_mock)
        gc.freeze()
        fallbacks = [await _fallbacks(s, t.metrics_url) if t.metrics_url else None for t, s in zip(targets, sessions)]
        runs = [[] for _ in targets]
        for k in range(rounds):
            for i, (t, s) in enumerate(zip(targets, sessions)):
                between()
                before = cpu(t) if cpu else None
                runs[i].append(await open_loop(s, t.url, rate, slice_s, key=t.key, grace_s=grace_s,
                                               server_timing=t.metrics_url is not None, tag=f"{k}."))
                count(i, before)
        rows = []
        for i, (t, s) in enumerate(zip(targets, sessions)):
            row = LoadRun.pooled(runs[i]).summary()
            if t.metrics_url:
                after = await _fallbacks(s, t.metrics_url)
                row["fallbacks"] = None if fallbacks[i] is None or after is None else round(after - fallbacks[i])
            if cpu:
                row["cpu_us_per_request"] = _cpu_per_request(
                    (0.0, 0.0, 0.0), spent[i], row["requests"] + round(rate * warmup_s))
            rows.append(row)
    return rows


async def _fallbacks(session, metrics_url: str):
    """The gateway's ``wirespeed_gateway_fallback_total`` summed over its causes (None if the scrape fails)."""
    try:
        if isinstance(session, RawClient):
            _status, _headers, body = await asyncio.wait_for(session.get(metrics_url), 5.0)
            text = body.decode()
        else:
            async with session.get(metrics_url, timeout=_client_timeout(5.0)) as r:
                text = await r.text()
    except Exception:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("wirespeed_gateway_fallback_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _client_timeout(seconds: float):
    import aiohttp
    return aiohttp.ClientTimeout(total=seconds)


# -- processes --------------------------------------------------------------------------------------------------------


class _Process:
    """A child process with its stderr in a log file; :meth:`stop` sends SIGTERM, then SIGKILL after a while."""

    def __init__(self, name: str, argv: list, log_dir: Path, env=None, stdin=subprocess.DEVNULL):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log_file, stdin=stdin, env=env)

    def first_line(self, timeout: float) -> str:
        """The child's first stdout line, waited for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name} printed no line within {timeout:.0f} s; {self.log_tail()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"{self.name} exited with {self.proc.wait()} before it was ready; "
                                       f"{self.log_tail()}")
                buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            text = []
        return "its log ends: " + " | ".join(text) if text else "its log is empty"

    def cpu_seconds(self) -> float | None:
        """CPU seconds the child's threads have run so far (Linux ``/proc/PID/task/*/schedstat``, in ns; the
        coarser user + system clock ticks of ``/proc/PID/stat`` where that is missing), or None."""
        total = 0
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                total += int((task / "schedstat").read_text().split()[0])
            return total / 1e9
        except (OSError, ValueError, IndexError):
            pass
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pipe in (self.proc.stdout, self.proc.stdin):
            if pipe:
                pipe.close()
        self._log_file.close()


def _quiesce(processes, *, limit_s: float = 20.0, idle_share: float = 0.05, step_s: float = 0.25) -> None:
    """Wait (at most ``limit_s``) until every child uses under ``idle_share`` of a core, so a target still working
    through a backlog does not run beside the next one."""
    deadline = time.monotonic() + limit_s
    last = [p.cpu_seconds() for p in processes]
    if any(c is None for c in last):
        time.sleep(0.5)
        return
    calm = 0
    while time.monotonic() < deadline and calm < 2:
        time.sleep(step_s)
        now = [p.cpu_seconds() for p in processes]
        busy = max(b - a for a, b in zip(last, now)) / step_s
        calm = calm + 1 if busy < idle_share else 0
        last = now


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_mock(log_dir: Path) -> tuple[_Process, str]:
    # Its stdin is a pipe from here: when this process ends, however it ends, the mock sees EOF and stops.
    p = _Process("mock", [sys.executable, "-m", "wirespeed.host.tools.bench_gateway", "mock", "--port", "0",
                          "--exit-on-eof"], log_dir, stdin=subprocess.PIPE)
    return p, p.first_line(60.0).strip()


def _start_passthrough(mock_url: str, log_dir: Path) -> tuple[_Process, str]:
    p = _Process("passthrough", [sys.executable, "-m", "wirespeed.host.tools.bench_gateway", "passthrough",
                                 "--backend", mock_url, "--port", "0", "--exit-on-eof"], log_dir,
                 stdin=subprocess.PIPE)
    return p, p.first_line(60.0).strip()


def _start_gateway(uri: str, mock_url: str, log_dir: Path) -> tuple[_Process, dict]:
    cfg = log_dir / f"gateway-{uri}.toml"
    cfg.write_text(gateway_config(mock_url, device=uri))
    name = "gateway-" + re.sub(r"[^A-Za-z0-9_.-]", "_", uri)
    p = _Process(name, [sys.executable, "-m", "wirespeed", "gateway", "--config", str(cfg), "--uri", uri,
                        "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0", "--json"], log_dir)
    line = p.first_line(_PROCESS_START_S)
    try:
        ready = json.loads(line)["ready"]
    except (ValueError, KeyError, TypeError):
        p.stop()
        raise RuntimeError(f"{name} printed {line!r}, not its ready line; {p.log_tail()}") from None
    return p, ready


def _start_litellm(binary: str, mock_url: str, log_dir: Path) -> tuple[_Process, str, str, str | None]:
    """A LiteLLM proxy (one worker, its defaults) in front of the mock; its base URL, master key and version once it
    answers a chat completion."""
    import secrets
    key = "sk-" + secrets.token_hex(32)
    cfg = log_dir / "litellm.yaml"
    cfg.write_text(litellm_config(mock_url, key))
    port = _free_port()
    # The local model-cost map: the machine may be offline, and a fetch at start would only add a delay.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    p = _Process("litellm", [binary, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)], log_dir,
                 env=env)
    base = f"http://127.0.0.1:{port}"
    version = None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, env=env)
        m = re.search(r"(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
        version = m.group(1) if m else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    deadline = time.monotonic() + _PROCESS_START_S
    last = "no answer"
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"litellm exited with {p.proc.returncode}; {p.log_tail()}")
        try:
            status, body = _post(f"{base}/v1/chat/completions", key)
            if status == 200:
                return p, base, key, version
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.5)
    p.stop()
    raise RuntimeError(f"litellm did not answer a chat completion within {_PROCESS_START_S:.0f} s ({last}); "
                       f"{p.log_tail()}")


def _post(url: str, key: str = TENANT_KEY) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, data=BODY, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def machine() -> dict:
    import aiohttp
    try:
        import uvloop
        uv = uvloop.__version__
    except ImportError:
        uv = None
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_count": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "uvloop": uv,
            "aiohttp": aiohttp.__version__, "platform": platform.platform(), "loadavg_at_start": load}


# -- the benchmark ----------------------------------------------------------------------------------------------------


def _cpu_per_request(before: tuple, after: tuple, requests: int) -> dict:
    """CPU µs per request over a warm-up and run of ``requests``: of the target process (None for ``direct``), the
    backend and the load generator (this process), from ``(target, backend, generator)`` CPU seconds before and
    after. The three share the machine's cores."""
    out = {}
    for name, a, b in zip(("target", "backend", "generator"), before, after):
        out[name] = None if a is None or b is None or requests <= 0 else round((b - a) / requests * 1e6)
    return out


def run(rates=DEFAULT_RATES, seconds: float = 5.0, uris=("software", "model"), *, peer_litellm: str | None = None,
        passthrough: bool = True, warmup_s: float = 0.5, grace_s: float = 2.0, rounds: int = 5,
        client: str = "raw", progress=None) -> dict:
    """The gateway benchmark: for each rate, direct to the mock and through each target (the passthrough proxy
    first, unless ``passthrough`` is False), ``seconds`` each, interleaved in ``rounds`` slices (:func:`measure`);
    ``client``: the generator's HTTP client (:data:`CLIENTS`); see the module doc.

    Returns
    -------
    dict
        ``rates``, ``seconds``, ``rounds``, ``client``, ``warmup_s``, ``rows`` (one per rate and target:
        ``target``, ``offered_rps``, ``achieved_rps``, ``requests``, ``ok``, ``errors`` (timeouts included),
        ``timeouts``, ``non_200``,
        ``p50_ms``/``p99_ms``/``p999_ms``, ``added_p50_ms``/``added_p99_ms``/``added_p999_ms`` (None on
        ``direct``), ``sustained``, ``generator_lag_p99_ms``, ``cpu_us_per_request`` (``target``, ``backend``,
        ``generator``); on a gateway also ``server_timing_ms`` and ``fallbacks``), ``target_p99_added_ms``,
        ``target_met`` (None when the software row at :data:`TARGET_RATE` was not run), ``machine`` and
        ``litellm`` (None, or its binary and version, or why it was not measured).
    """
    say = progress or (lambda msg: None)
    rates = [int(r) if float(r).is_integer() else float(r) for r in rates]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"rates must be > 0, got {rates!r}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, got {client!r}")
    report = {"rates": rates, "seconds": seconds, "rounds": rounds, "client": client, "warmup_s": warmup_s,
              "grace_s": grace_s, "rows": [], "target_p99_added_ms": TARGET_P99_ADDED_MS, "target_rate": TARGET_RATE,
              "target_met": None, "machine": machine(), "litellm": None}
    procs: list[_Process] = []
    with tempfile.TemporaryDirectory(prefix="wirespeed-bench-gw-") as tmp, \
            asyncio.Runner(loop_factory=_new_loop) as runner:
        log_dir = Path(tmp)
        try:
            say("starting the mock backend ...")
            mock, mock_url = _start_mock(log_dir)
            procs.append(mock)
            targets = [Target("direct", f"{mock_url}/v1/chat/completions", None, TENANT_KEY, None)]
            if passthrough:
                say("starting the passthrough proxy ...")
                px, px_url = _start_passthrough(mock_url, log_dir)
                procs.append(px)
                targets.append(Target("passthrough", f"{px_url}/v1/chat/completions", None, TENANT_KEY, px))
            for uri in uris:
                say(f"starting the gateway on {uri!r} ...")
                gw, ready = _start_gateway(uri, mock_url, log_dir)
                procs.append(gw)
                metrics = f"http://{ready['metrics']}/metrics" if ready.get("metrics") else None
                targets.append(Target(uri, f"http://{ready['listen']}/v1/chat/completions", metrics, TENANT_KEY, gw))
            if peer_litellm:
                say(f"starting the LiteLLM proxy ({peer_litellm}) ...")
                try:
                    lp, base, key, version = _start_litellm(peer_litellm, mock_url, log_dir)
                except (OSError, RuntimeError) as e:
                    report["litellm"] = {"bin": peer_litellm, "error": str(e)}
                    say(f"  LiteLLM not measured: {e}")
                else:
                    procs.append(lp)
                    report["litellm"] = {"bin": peer_litellm, "version": version}
                    targets.append(Target("litellm", f"{base}/v1/chat/completions", None, key, lp))
            # The slow device last in each round, so a backlog it leaves is worked off before the next direct slice.
            targets.sort(key=lambda t: t.name == "model")

            def cpu(t: Target) -> tuple:
                return (t.process.cpu_seconds() if t.process else None, mock.cpu_seconds(), time.process_time())
            for rate in rates:
                say(f"  {rate} req/s: {', '.join(t.name for t in targets)}, {rounds} rounds of "
                    f"{seconds / rounds:g} s each ...")
                rows = runner.run(measure(targets, rate, seconds, rounds=rounds, warmup_s=warmup_s, client=client,
                                          grace_s=grace_s, between=lambda: _quiesce(procs), cpu=cpu))
                direct = None
                for t, row in zip(targets, rows):
                    row = {"target": t.name, **row}
                    if t.name == "direct":
                        direct = row
                        row.update({f"added_{n}_ms": None for n, _q in PERCENTILES})
                    else:
                        row.update(added_latency(row, direct))
                    report["rows"].append(row)
        finally:
            for p in reversed(procs):
                p.stop()
    for row in report["rows"]:
        if row["target"] == "software" and row["offered_rps"] == TARGET_RATE:
            added = row.get("added_p99_ms")
            report["target_met"] = bool(row["sustained"] and added is not None and added <= TARGET_P99_ADDED_MS)
    return report


def _ms(v) -> str:
    return "fail" if v is None else f"{v:.3f}"


def print_report(report: dict, out=None) -> None:
    """The human-readable table."""
    out = out or sys.stdout
    m = report["machine"]
    print(f"gateway added latency: open-loop load ({report['client']} client), {report['seconds']} s per rate and "
          f"target in {report['rounds']} interleaved rounds, after a {report['warmup_s']} s warm-up; "
          f"{m['cpu_count']} CPUs, Python {m['python']}, uvloop {m['uvloop']}", file=out)
    print("latency from each request's scheduled start to the end of its answer; added = target - direct; "
          "'fail' = that percentile falls on a failed request;\ndevice, own = the gateway's Server-Timing (device "
          "decision; total - upstream); gen lag = the generator's own lateness in sending;\n"
          "cpu us/req = CPU per request of the target / the backend / the generator (they share the cores)", file=out)
    head = (f"{'offered':>7} {'target':<11} {'achieved':>8} {'requests':>8} {'errors':>6} {'non200':>6} "
            f"{'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>8} {'+p50':>7} {'+p99':>7} {'+p99.9':>7} "
            f"{'device p50':>10} {'own p50':>7} {'fallbacks':>9} {'gen lag p99':>11} {'cpu us/req':>14}  note")
    print(head, file=out)
    for r in report["rows"]:
        added = "" if r["target"] == "direct" else \
            f" {_ms(r.get('added_p50_ms')):>7} {_ms(r.get('added_p99_ms')):>7} {_ms(r.get('added_p999_ms')):>7}"
        if not added:
            added = f" {'':>7} {'':>7} {'':>7}"
        timing = r.get("server_timing_ms", {})
        device = f"{timing['device']['p50']:.3f}" if "device" in timing else ""
        own = f"{timing['own']['p50']:.3f}" if "own" in timing else ""
        lag = "" if r.get("generator_lag_p99_ms") is None else f"{r['generator_lag_p99_ms']:.3f}"
        fb = "" if r.get("fallbacks") is None else str(r["fallbacks"])
        note = "" if r["sustained"] else "NOT SUSTAINED"
        cpu = r.get("cpu_us_per_request") or {}
        cpu = "/".join("-" if cpu.get(k) is None else str(cpu[k]) for k in ("target", "backend", "generator"))
        print(f"{r['offered_rps']:>7} {r['target']:<11} {r['achieved_rps']:>8.1f} {r['requests']:>8} "
              f"{r['errors']:>6} {r['non_200']:>6} {_ms(r['p50_ms']):>8} {_ms(r['p99_ms']):>8} "
              f"{_ms(r['p999_ms']):>8}{added} {device:>10} {own:>7} {fb:>9} {lag:>11} {cpu:>14}  {note}", file=out)
    met = report["target_met"]
    if met is not None:
        print(f"target (p99 added <= {report['target_p99_added_ms']} ms at {report['target_rate']} req/s on "
              f"'software'): {'met' if met else 'NOT met'}", file=out)
    lite = report.get("litellm")
    if lite and lite.get("error"):
        print(f"LiteLLM not measured: {lite['error']}", file=out)


# -- the mock process -------------------------------------------------------------------------------------------------


async def _serve(server, exit_on_eof: bool = False) -> None:
    """Run ``server`` (a :mod:`.bench_backends` server, started) until SIGINT/SIGTERM, or EOF on stdin."""
    # The instruments must not pause for a full collection mid-run (the gateway freezes its start-up heap too,
    # host/gateway/run.py).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if exit_on_eof:
        def on_stdin() -> None:
            if not os.read(sys.stdin.fileno(), 4096):
                loop.remove_reader(sys.stdin.fileno())
                stop.set()
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await stop.wait()
    finally:
        await server.stop()


async def _serve_mock(host: str, port: int, exit_on_eof: bool = False) -> None:
    from .bench_backends import BenchBackend
    backend = BenchBackend(completion_tokens=8)
    backend.answer(BODY)                    # (loads the tokenizer now, not in the first measured request)
    print(await backend.start(host, port), flush=True)
    await _serve(backend, exit_on_eof)


async def _serve_passthrough(backend_url: str, host: str, port: int, exit_on_eof: bool = False) -> None:
    from .bench_backends import Passthrough
    proxy = Passthrough(backend_url)
    print(await proxy.start(host, port), flush=True)
    await _serve(proxy, exit_on_eof)


def main(argv=None) -> int:
    """``python -m wirespeed.host.tools.bench_gateway mock|passthrough …``: the bench's backend and passthrough
    processes (:mod:`.bench_backends`)."""
    p = argparse.ArgumentParser(prog="python -m wirespeed.host.tools.bench_gateway")
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("mock", help="serve the bench backend until SIGTERM; print its URL first")
    pp = sub.add_parser("passthrough", help="forward every request to --backend until SIGTERM; print its URL first")
    pp.add_argument("--backend", required=True, help="the backend's URL")
    for a in (sp, pp):
        a.add_argument("--host", default="127.0.0.1")
        a.add_argument("--port", type=int, default=0)
        a.add_argument("--exit-on-eof", action="store_true", help="also stop when stdin closes (the parent is gone)")
    args = p.parse_args(argv)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        if args.command == "mock":
            runner.run(_serve_mock(args.host, args.port, args.exit_on_eof))
        else:
            runner.run(_serve_passthrough(args.backend, args.host, args.port, args.exit_on_eof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
