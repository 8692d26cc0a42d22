"""The core top (:class:`~.top.WirespeedCore`): every block behind one AXI4-Lite bank, and ``core.rdl``, which
places each block's registers.
"""
