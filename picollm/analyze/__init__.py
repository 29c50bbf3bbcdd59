"""One run in depth: generation and decoding, per-token annotations, test metrics, influence functions."""
