"""Platform wrappers: the ECP5 boards, the UART-to-AXI4-Lite bridge and the OpenNIC shell plug-in.
"""
