"""Logging to the console (tqdm-safe) and to logs/<timestamp>-<stage>.log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


class _LazyFileHandler(logging.FileHandler):
    """A file handler that creates its directory and file at the first record, so a command that stops at
    a user mistake before logging anything leaves no empty log behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logging(stage: str, log_dir: str | Path = "logs", console: bool = True) -> Path:
    """Send picollm's log records to the console and to a new logs/<timestamp>-<stage>.log; return its path."""
    log_dir = Path(log_dir)
    path = log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{stage}.log"
    logger = get_logger()
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    file_handler = _LazyFileHandler(path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    if console:
        console_handler = _TqdmHandler()
        console_handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console_handler)
    logger.propagate = False
    return path


class _Collector(logging.Handler):
    def __init__(self, records: list[tuple[float, int, str]]) -> None:
        super().__init__(logging.INFO)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.levelno, record.getMessage()))


@contextmanager
def capture_records() -> Iterator[list[tuple[float, int, str]]]:
    """Collect picollm's INFO+ records as (time, level, message) while the block runs: a process whose log
    lines cannot reach the log file (a Ray task on another node) returns them to be replayed."""
    records: list[tuple[float, int, str]] = []
    logger, handler = get_logger(), _Collector(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def replay_records(records: list[tuple[float, int, str]], prefix: str = "") -> None:
    """Write captured records to picollm's log files with their original time and level; not to the
    console, like the lines of local workers."""
    logger = get_logger()
    for created, level, message in records:
        record = logger.makeRecord(logger.name, level, "(replayed)", 0, f"{prefix}{message}", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and level >= handler.level:
                handler.handle(record)
