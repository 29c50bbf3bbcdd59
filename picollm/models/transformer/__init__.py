"""The transformer family: config.py (settings and recipe, no torch) and model.py."""
