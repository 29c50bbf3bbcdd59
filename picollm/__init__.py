"""picollm: a batch-train-then-analyze lab for small language models."""

__version__ = "0.1.0"
