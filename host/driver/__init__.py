"""The driver API gateway code calls: :func:`wirespeed.open`, :class:`Offload`, tenants, pools and routes,
submission, verdicts and register access.
"""
