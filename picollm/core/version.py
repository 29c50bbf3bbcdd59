"""picollm's version, written once: the package, `picollm --version`, checkpoints and config.json read it here."""

__version__ = "0.1.0"
