"""modelops_runtime: prepare and serve one model over the Open Inference Protocol (KServe V2)."""

__version__ = "0.1.0"
