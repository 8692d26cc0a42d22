"""Verdict counters and the latency histogram: :class:`~.counters.Telemetry` and ``telemetry.rdl``.
"""
