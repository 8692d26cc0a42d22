"""Gateware of wirespeed (Amaranth 0.5): register bank, AXI4-Lite target, ID block, pipelines and the core top."""
