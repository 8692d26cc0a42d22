"""Bit-exact models, one module per block (with its register block), and the device model behind ``"model"``.
"""
