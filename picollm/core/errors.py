"""One exception type for user mistakes: the CLIs print its message on one line and exit 2."""


class PicoError(Exception):
    """A problem the user can fix (bad flag, missing corpus, corrupt checkpoint).

    The message is a single line that names the problem and the fix.
    """


class ConfigError(PicoError, ValueError):
    """An invalid setting: unknown model family, k < 1, embed not divisible by heads, ..."""


class DataError(PicoError):
    """A corpus that cannot be found, downloaded or verified."""


class CheckpointError(PicoError):
    """A run directory or checkpoint that is missing, half-written or corrupt."""


class DiskFullError(PicoError):
    """A write that found the disk full (or the quota spent); what was written before stays intact."""
