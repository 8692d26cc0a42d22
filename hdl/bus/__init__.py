"""Shared bus pieces: AXI4-Lite and AXI4-Stream signatures, the byte-beat stream, the register bank and the
register-map compiler that reads the ``.rdl`` files (pure Python; the host imports it too).
"""
