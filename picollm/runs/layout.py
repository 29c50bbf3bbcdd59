"""The run directory: paths, status, metrics, listing runs (its checkpoints and loading a run: runs.checkpoint).

    checkpoints/<family>-<corpus>-<fp8>/
        config.json   status.json   metrics.csv   tokenizer.json   best.pt   last.pt

Every file is written through picollm.core.atomic, so a run killed at any instant leaves either the old or the
new version of each file, never half of one.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from picollm.core.atomic import atomic_write_json, atomic_write_text
from picollm.core.errors import CheckpointError
from picollm.core.log import get_logger

STATUSES = ("running", "paused", "done", "stopped", "failed", "diverged", "interrupted")
#: a run in one of these states is never trained again ("stopped": ended on purpose, e.g. by successive
#: halving). The others are continued by the next train_run from last.pt: "paused" (at a step budget below
#: max_steps), "failed", "interrupted" (Ctrl-C, or the end of the batch that ran it) and "running" (a process
#: killed outright, which could not say so)
FINISHED = ("done", "stopped", "diverged")
#: what status.json says of a run that Ctrl-C (SIGINT) or its batch's end (SIGTERM) stopped mid-training
INTERRUPTED_REASON = "interrupted (Ctrl-C, or the batch that ran it stopped); run the same command again to resume"
#: the progress a status.json records, kept when a run that was training is said to have stopped
PROGRESS_KEYS = ("step", "max_steps", "best_val_loss", "best_step", "train_seconds")


#: what a damaged run file's error tells the user to do, unless the file has a better fix
RETRAIN = "delete the run directory and retrain"
#: a damaged status.json: training the run again resumes it from last.pt (a finished one ends at once) and
#: writes the file anew
STATUS_FIX = "run its training command (or batch) again: it resumes from last.pt and rewrites the file"
#: the types status.json's fields must have where they are present (the batch and the analysis compute with them)
STATUS_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "reason": (str,), "step": (int,), "max_steps": (int,), "best_step": (int, type(None)),
    "best_val_loss": (int, float, type(None)), "train_seconds": (int, float, type(None))}


def read_json(path: Path, fix: str = RETRAIN) -> dict:
    """Read a JSON object written by picollm; a missing or corrupt file, or one holding another JSON value, is a
    one-line CheckpointError that ends with `fix`."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a complete picollm run (re-run training for it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt ({e.__class__.__name__}); {fix}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is corrupt (a JSON {type(value).__name__}, not a JSON object); {fix}")
    return value


def read_status(run_dir: Path) -> dict:
    """status.json as a dict; {'status': 'new'} when the run has not started, and {'status': 'corrupt', 'reason':
    what is wrong and the fix} when it cannot be read or its fields are not what picollm writes."""
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"status": "new"}
    try:
        record = read_json(path, STATUS_FIX)
    except CheckpointError as e:
        return {"status": "corrupt", "reason": str(e)}
    wrong = [k for k, kinds in STATUS_TYPES.items()
             if k in record and (not isinstance(record[k], kinds) or isinstance(record[k], bool))]
    if record.get("status") not in STATUSES or wrong:
        what = (f"{', '.join(wrong)} of the wrong type" if wrong else
                f"status {record.get('status')!r} is not one of {', '.join(STATUSES)}")
        return {"status": "corrupt", "reason": f"{path} is corrupt ({what}); {STATUS_FIX}"}
    return record


def status_record(run_dir: Path, status: str, reason: str = "", **extra: Any) -> dict:
    """The status.json that write_status would write now (the start time carried over)."""
    assert status in STATUSES, status
    previous = read_status(run_dir)
    record = {**{k: v for k, v in previous.items() if k in ("started",)}, **extra}
    record.update(status=status, reason=reason, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    record.setdefault("started", record["updated"])
    return record


def save_status(run_dir: Path, record: dict) -> None:
    atomic_write_json(Path(run_dir) / "status.json", record)


def write_status(run_dir: Path, status: str, reason: str = "", **extra: Any) -> dict:
    record = status_record(run_dir, status, reason, **extra)
    save_status(run_dir, record)
    return record


def mark_stopped_training(run_dir: Path, status: str, reason: str) -> None:
    """Say in status.json why a run that was training ("running") stopped, keeping its progress: 'interrupted'
    after Ctrl-C or its batch's end, 'failed' when its worker died. A run that had already ended is left alone."""
    previous = read_status(run_dir)
    if previous["status"] == "running":
        write_status(run_dir, status, reason, **progress_of(previous))


def progress_of(status: dict) -> dict:
    """The progress a status.json records (step, best loss, ...), to keep when its run's status changes."""
    return {k: status[k] for k in PROGRESS_KEYS if k in status}


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temp files a writer killed mid-write left in a run directory (atomic_write's .*.tmp); only
    for a run no live process writes to, e.g. one a batch is about to resume."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


#: the columns of metrics.csv: one row per evaluation (step 0 is the untrained model)
METRIC_COLUMNS = [
    "step", "epoch", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy",
    "grad_norm_preclip", "grad_norm_postclip", "max_param_grad", "weight_norm", "learning_rate",
    "tokens_per_sec", "elapsed_sec",
]
#: columns only some runs' metrics.csv has (and only then): val_loss_raw, the trained weights' own val loss
#: beside val_loss of their moving average (--ema)
OPTIONAL_METRIC_COLUMNS = ["val_loss_raw"]


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    import pandas as pd  # pandas only for the metric files: a dry run reads statuses and configs without it

    columns = METRIC_COLUMNS + [c for c in OPTIONAL_METRIC_COLUMNS if any(c in row for row in rows)]
    atomic_write_text(Path(run_dir) / "metrics.csv", pd.DataFrame(rows, columns=columns).to_csv(index=False))


#: the columns of train_log.csv: the mean training loss and the learning rate every --log_interval steps (and
#: at every evaluation, so no window straddles a checkpoint and resuming keeps the log exact)
TRAIN_LOG_COLUMNS = ["step", "train_loss", "learning_rate", "tokens_seen", "elapsed_sec"]


def write_train_log(run_dir: Path, rows: list[dict]) -> None:
    import pandas as pd  # pandas only for the metric files: a dry run reads statuses and configs without it

    atomic_write_text(Path(run_dir) / "train_log.csv", pd.DataFrame(rows, columns=TRAIN_LOG_COLUMNS).to_csv(index=False))


def read_train_log(run_dir: Path | str):
    """train_log.csv as a DataFrame, or None for a run trained before it existed, or without rows; a damaged file
    is None too, with a one-line warning (the log is a finer view of the curves, never needed for a result)."""
    import pandas as pd  # pandas only for the metric files: a dry run reads statuses and configs without it

    path = Path(run_dir) / "train_log.csv"
    if not path.exists():
        return None
    try:
        log = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:  # ValueError: also bytes that are not UTF-8
        problem = e.__class__.__name__
    else:
        missing = [c for c in TRAIN_LOG_COLUMNS if c not in log.columns]
        text = [c for c in TRAIN_LOG_COLUMNS if c in log.columns and not pd.api.types.is_numeric_dtype(log[c])]
        problem = f"no {', '.join(missing)} column" if missing else f"text in {', '.join(text)}" if text else ""
    if problem:
        get_logger().warning(f"warning: {path} is unreadable ({problem}); the curves are drawn from metrics.csv")
        return None
    return log if len(log) else None


def read_metrics(run_dir: Path | str):
    """metrics.csv as a DataFrame; the one reader of the file.

    A last row cut off mid-line (the file copied while being written, a full disk) is dropped with a one-line
    warning, so its half-filled values are never taken for the final metrics; any other malformed row, or a
    missing file, is a one-line CheckpointError.
    """
    import pandas as pd  # pandas only for the metric files: a dry run reads statuses and configs without it

    path = Path(run_dir) / "metrics.csv"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a complete picollm run (re-run training for it)") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text; delete the run directory and retrain") from None
    lines = text.splitlines()
    if not lines or "step" not in lines[0].split(",") or "val_loss" not in lines[0].split(","):
        raise CheckpointError(f"{path} has no metrics header; delete the run directory and retrain")
    width = lines[0].count(",")
    ragged = [i for i, line in enumerate(lines[1:], 1) if line.count(",") != width]
    if ragged == [len(lines) - 1] or (len(lines) > 1 and not text.endswith("\n") and not ragged):
        get_logger().warning(f"warning: {path}: its last row is incomplete (cut off mid-write) and was ignored; "
                             "re-running training for this run rewrites the file from last.pt")
        lines, ragged = lines[:-1], []
    if ragged:
        raise CheckpointError(f"{path} is corrupt (row(s) {', '.join(map(str, ragged[:5]))} have the wrong number "
                              "of fields); delete the run directory and retrain")
    try:
        metrics = pd.read_csv(io.StringIO("\n".join(lines) + "\n"))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise CheckpointError(f"{path} is corrupt ({e.__class__.__name__}); delete the run directory and retrain") from None
    if metrics.empty:
        raise CheckpointError(f"{path} has no metric rows; delete the run directory and retrain")
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    text = [c for c in METRIC_COLUMNS + OPTIONAL_METRIC_COLUMNS
            if c in metrics.columns and not pd.api.types.is_numeric_dtype(metrics[c])]
    if missing or text:
        what = f"no {', '.join(missing)} column" if missing else f"text where numbers belong in {', '.join(text)}"
        raise CheckpointError(f"{path} is corrupt ({what}); delete the run directory and retrain")
    return metrics


def list_runs(root: Path | str = "checkpoints") -> list[Path]:
    """Every run directory (one holding a config.json) under root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").exists())


def run_summary(run_dir: Path | str) -> dict[str, Any]:
    """One flat row describing a run: its key settings, status, and the metrics at its best evaluation."""

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    status = read_status(run_dir)
    row: dict[str, Any] = {"run": run_dir.name, "model": config.get("model"), "corpus": config.get("corpus"),
                           "params": config.get("num_params"), "status": status.get("status"),
                           "reason": status.get("reason", "")}
    if (run_dir / "metrics.csv").exists():
        m = read_metrics(run_dir)
        trained = m[m["step"] > 0]
        if len(trained):
            best = trained.loc[trained["val_loss"].idxmin()] if trained["val_loss"].notna().any() else trained.iloc[-1]
            row.update(step=int(trained["step"].iloc[-1]), best_step=int(best["step"]), val_loss=float(best["val_loss"]),
                       val_ppl=float(best["perplexity"]), val_acc=float(best["token_accuracy"]),
                       initial_val_loss=float(m["val_loss"].iloc[0]), final_train_loss=float(trained["avg_loss"].iloc[-1]),
                       tokens_per_sec=float(trained["tokens_per_sec"].mean()), train_seconds=float(trained["elapsed_sec"].iloc[-1]))
    return row
