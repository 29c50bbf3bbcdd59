"""The K-gram MLP family: config.py (settings, no torch) and model.py."""
