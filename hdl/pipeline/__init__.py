"""The offload pipeline (parser → limiter → router → verdict): :class:`~.offload_pipeline.OffloadPipeline`,
the verdict layouts and ``pipeline.rdl``.
"""
