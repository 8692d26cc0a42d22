"""Gateware of wirespeed (Amaranth 0.5), one folder per block.

``bus/`` (AXI4-Lite, AXI4-Stream, register bank, register-map compiler), ``parser/``, ``frontend/``, ``limiter/``,
``router/``, ``telemetry/``, ``pipeline/``, ``id/``, ``core/`` (the top) and ``platform/`` (boards, UART bridge,
OpenNIC). Nothing here imports :mod:`wirespeed.host`.
"""
