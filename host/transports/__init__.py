"""One module per transport: how register accesses (and the stream path) reach a device.
"""
