"""The gateway's Prometheus metrics (prometheus-client), served on ``--metrics``: per-stage latency histograms, request
and token counters, backend health, and the device's own counters and latency histogram as ``wirespeed_device_*``.

:class:`~.server.Gateway` ─▶ :class:`GatewayMetrics` (observe per request) ─▶ ``GET /metrics`` (text format)
device ``stats()`` (counters and latency histogram, one snapshot) ─▶ :class:`DeviceCollector` ─┘

Every gateway has its own registry, so two gateways in one process (tests) do not share series.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..driver.stats import LatencyHistogram

__all__ = ["GatewayMetrics", "DeviceCollector", "RequestCollector", "TokenCollector", "STAGES", "LATENCY_BUCKETS_S"]

#: Stages of a request, as in the ``Server-Timing`` header: the device's decision, waiting for a pooled upstream
#: connection, connecting, the first byte of the response (TTFT for a stream), and the whole request.
STAGES = ("device", "queue", "connect", "ttft", "total")
#: Fine below a millisecond (the gateway's own share), coarse above (the model's).
LATENCY_BUCKETS_S = (
    5e-6, 1e-5, 2e-5, 3e-5, 5e-5, 7.5e-5, 1e-4, 1.5e-4, 2e-4, 2.5e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7.5e-4, 1e-3,
    1.25e-3, 1.5e-3, 2e-3, 3e-3, 5e-3, 7.5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LABELS = ("route", "tenant", "backend", "status")


class _Histogram:
    """One label set's observations: a count per bucket of :data:`LATENCY_BUCKETS_S` (the last one above them all)
    and their sum."""
    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum += seconds

    def family_buckets(self) -> list:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as a ``HistogramMetricFamily`` takes them."""
        buckets, seen = [], 0
        for bound, n in zip(LATENCY_BUCKETS_S, self.counts):
            seen += n
            buckets.append((repr(float(bound)), seen))
        buckets.append(("+Inf", seen + self.counts[-1]))
        return buckets


class RequestCollector:
    """``wirespeed_gateway_requests``, ``wirespeed_gateway_stage_seconds`` and ``wirespeed_gateway_added_seconds``:
    counted per request in plain lists (:meth:`observe`), turned into the exposition's series at each scrape
    (:meth:`collect`, a prometheus-client custom collector).

    Why not prometheus-client's ``Histogram``: its ``observe`` takes a lock and walks the bucket bounds in Python for
    every value, six times per request here; this is one ``bisect`` each. :meth:`observe` and the scrape both run on
    the gateway's event-loop thread, so no lock is needed. A bucket counts the values ``<=`` its bound, as
    prometheus-client's does."""

    def __init__(self):
        # (route, tenant, backend, status) -> [requests, {stage: _Histogram}, added _Histogram or None]
        self._series: dict = {}

    def observe(self, labels: tuple, stages: dict, added_s: float | None) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0, {}, None]
        series[0] += 1
        histograms = series[1]
        for name, seconds in stages.items():
            h = histograms.get(name)
            if h is None:
                h = histograms[name] = _Histogram()
            h.add(seconds)
        if added_s is not None:
            if series[2] is None:
                series[2] = _Histogram()
            series[2].add(added_s)

    def collect(self):
        requests = CounterMetricFamily("wirespeed_gateway_requests", "Requests answered", labels=_LABELS)
        stage = HistogramMetricFamily("wirespeed_gateway_stage_seconds", "Time per stage of a request",
                                      labels=("stage",) + _LABELS)
        added = HistogramMetricFamily("wirespeed_gateway_added_seconds", "Time the gateway adds: total minus upstream",
                                      labels=_LABELS)
        for labels, (count, histograms, own) in list(self._series.items()):
            requests.add_metric(labels, count)
            for name in STAGES:
                if name in histograms:
                    stage.add_metric((name,) + labels, histograms[name].family_buckets(), histograms[name].sum)
            if own is not None:
                added.add_metric(labels, own.family_buckets(), own.sum)
        yield from (requests, stage, added)


class TokenCollector:
    """``wirespeed_gateway_tokens{kind, tenant}``: LLM tokens reserved on admit, used (settled), refunded and debited,
    summed in a plain dict (:meth:`add`, twice per request) and turned into a counter family at each scrape. As
    :class:`RequestCollector`, instead of prometheus-client's ``Counter``, whose ``inc`` takes a lock."""

    def __init__(self):
        self._counts: dict = {}                    # (kind, tenant) -> tokens

    def add(self, kind: str, tenant: str, tokens: int) -> None:
        key = (kind, tenant)
        self._counts[key] = self._counts.get(key, 0) + tokens

    def value(self, kind: str, tenant: str) -> int:
        return self._counts.get((kind, tenant), 0)

    def collect(self):
        family = CounterMetricFamily("wirespeed_gateway_tokens", "LLM tokens: reserved on admit, used (settled), "
                                     "refunded and debited", labels=("kind", "tenant"))
        for labels, n in list(self._counts.items()):
            family.add_metric(labels, n)
        yield family


class DeviceCollector:
    """``wirespeed_device_*`` from the last device snapshot (:meth:`GatewayMetrics.refresh_device` takes it before
    each scrape, since the device is read asynchronously and a collector is not). The latency histogram comes from
    the same snapshot as the counters."""

    def __init__(self):
        self.stats: dict | None = None
        self.histogram = None
        self.clock_hz: int | None = None

    def collect(self):
        if self.stats is None:
            return
        s = self.stats
        events = CounterMetricFamily("wirespeed_device_events", "Verdicts the device gave", value=s["events"])
        actions = CounterMetricFamily("wirespeed_device_actions", "Verdicts by action", labels=["action"])
        for name, n in s["actions"].items():
            actions.add_metric([name], n)
        reasons = CounterMetricFamily("wirespeed_device_reasons", "Verdicts by reason", labels=["reason"])
        for name, n in s["reasons"].items():
            reasons.add_metric([name], n)
        errors = CounterMetricFamily("wirespeed_device_errors", "Parser error flags raised", labels=["flag"])
        for name, n in s["errors"].items():
            errors.add_metric([name], n)
        cycle = CounterMetricFamily("wirespeed_device_cycles", "Device clock cycles at the snapshot",
                                    value=s["cycle"])
        yield from (events, actions, reasons, errors, cycle)
        if self.histogram is not None:
            h = self.histogram
            buckets, seen = [], 0
            for _low, high, n in h.buckets:
                seen += n
                buckets.append(("+Inf" if high is None else str(high), seen))
            if buckets[-1][0] != "+Inf":
                buckets.append(("+Inf", seen))
            yield HistogramMetricFamily("wirespeed_device_latency_cycles",
                                        "Device latency, first beat to verdict, in core cycles (log2 buckets)",
                                        buckets=buckets, sum_value=h.sum)
            yield GaugeMetricFamily("wirespeed_device_latency_max_cycles", "Largest device latency seen, in cycles",
                                    value=h.max)
        if self.clock_hz:
            yield GaugeMetricFamily("wirespeed_device_clock_hz", "The device's core clock", value=self.clock_hz)


class GatewayMetrics:
    """The gateway's series, in a registry of its own.

    Attributes
    ----------
    per_request : RequestCollector
        ``wirespeed_gateway_requests{route, tenant, backend, status}``,
        ``wirespeed_gateway_stage_seconds{stage, route, tenant, backend, status}`` (each of :data:`STAGES`) and
        ``wirespeed_gateway_added_seconds{route, tenant, backend, status}`` (the gateway's own time, total minus the
        upstream's: connect to the end of the response).
    tokens : TokenCollector
        ``wirespeed_gateway_tokens{kind, tenant}``.
    """

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.per_request = RequestCollector()
        r.register(self.per_request)
        self.fallback = Counter("wirespeed_gateway_fallback", "Requests classified by the software fallback "
                                "because the device errored or stalled", ("cause",), registry=r)
        self.tokens = TokenCollector()
        r.register(self.tokens)
        self.backend_up = Gauge("wirespeed_gateway_backend_up", "1 while the backend is up", ("pool", "backend"),
                                registry=r)
        self.backend_failures = Counter("wirespeed_gateway_backend_failures", "Connect failures and 5xx answers",
                                        ("backend",), registry=r)
        self.retries = Counter("wirespeed_gateway_retries", "Requests sent to another backend after a connect "
                               "failure", ("pool",), registry=r)
        self.device = DeviceCollector()
        r.register(self.device)

    def add_tokens(self, kind: str, tenant: str, tokens: int) -> None:
        """Count ``tokens`` in ``wirespeed_gateway_tokens{kind, tenant}`` (kind: reserved, used, refunded, debited)."""
        self.tokens.add(kind, tenant, tokens)

    def observe(self, labels: tuple, stages: dict, added_s: float | None) -> None:
        """One answered request: ``labels`` (route, tenant, backend, status) and its stage times in seconds."""
        self.per_request.observe(labels, stages, added_s)

    async def refresh_device(self, dev) -> None:
        """Read the device's counters and latency histogram, from one snapshot, for the next scrape."""
        stats = await dev.stats()
        latency = stats["latency"]
        self.device.stats = stats
        self.device.histogram = LatencyHistogram.from_counts(latency["histogram"], latency["sum"], latency["max"])

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
