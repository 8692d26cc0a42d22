"""Host side of wirespeed.

``driver/`` (the ``Offload`` API), ``transports/``, ``models/`` (bit-exact models), ``tools/`` (the CLI and its
commands), and small libraries beside them: errors, layout records, key derivation, RSS/Toeplitz, Maglev and tenant
placement.
"""
