"""picollm: a batch-train-then-analyze lab for small language models."""

from picollm.core.version import __version__

__all__ = ["__version__"]
