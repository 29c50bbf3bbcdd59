"""Logging to the console (tqdm-safe) and to logs/<timestamp>-<stage>.log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

LOGGER_NAME = "picollm"


class _TqdmHandler(logging.Handler):
    """Console handler that prints above active progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:
            self.handleError(record)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logging(stage: str, log_dir: str | Path = "logs", console: bool = True) -> Path:
    """Send picollm's log records to the console and to a new logs/<timestamp>-<stage>.log; return its path."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{stage}.log"
    logger = get_logger()
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    if console:
        console_handler = _TqdmHandler()
        console_handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console_handler)
    logger.propagate = False
    return path
