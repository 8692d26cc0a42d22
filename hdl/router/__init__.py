"""The hash router (Toeplitz + Maglev): :class:`~.hash_router.Router`, its layouts and ``router.rdl``.
"""
