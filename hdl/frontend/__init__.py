"""The L4 front end (Ethernet/IP/TCP to header bytes): :class:`~.l4_frontend.L4FrontEnd`, its layouts and
``frontend.rdl``.
"""
