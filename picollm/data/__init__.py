"""Corpora (registry, download, checksum, cache; no torch), tokenizers, and batching."""
