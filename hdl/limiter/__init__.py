"""The token-bucket rate limiter: :class:`~.rate_limiter.RateLimiter`, its layouts and ``limiter.rdl``.
"""
