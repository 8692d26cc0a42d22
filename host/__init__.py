"""Host side of wirespeed: register map, transports, the ``Offload`` driver, software models and the CLI."""
