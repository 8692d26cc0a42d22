"""The ID block at offset 0: magic, version, build hash, features and parameters (``id.rdl``).
"""
