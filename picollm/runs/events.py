"""TensorBoard event files for every run (the optional extra: pip install 'picollm[tensorboard]').

    checkpoints/<run>/events.out.tfevents.<ns>.picollm-metrics

`tensorboard --logdir checkpoints` then lists each run under its own directory name, with every metric column
as a scalar series over steps and, in the HParams dashboard, the run's settings beside its final metrics.
Runs trained before the extra was installed are back-filled with `picollm export tensorboard`.

How the file is kept exact:

* It is rebuilt whole from metrics.csv and status.json at each refresh, never appended to: a resumed run
  recomputes its metric rows from last.pt, and a rebuilt file cannot hold a step twice nor a point the rows no
  longer have. It holds one event per evaluation, so a rebuild is cheap; unchanged content writes nothing.
* Each rebuild gets a new name that sorts after the old one, and the old file is then removed. TensorBoard's
  data server keeps every event file it has opened open and reads only what gets appended to it, so a file
  replaced under the same name would never be read again by a running TensorBoard; a new file is read from
  its start, and its points replace the old ones of each series from their first step on.
* Other event files may be added beside it, e.g. a finer per-step train-loss log under another `source` of
  replace_event_file, or an append-only SummaryWriter file: TensorBoard merges every event file of a
  directory into its run, and series with their own tags do not interfere.
* The HParams plugin reads each run's session-start summary. No experiment summary is written: the plugin
  would take the first one it finds as the whole logdir's, hiding the settings of the other model families;
  without one it builds the table from every run's settings and takes every scalar tag as a metric.
"""

from __future__ import annotations

import functools
import io
import math
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import fields
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picollm.config import RUNTIME_FIELDS, RunConfig
from picollm.core.atomic import atomic_write
from picollm.core.errors import CheckpointError, DataError
from picollm.core.log import get_logger
from picollm.data.corpora import corpus_name
from picollm.runs.layout import read_json, read_metrics, read_status

if TYPE_CHECKING:
    import pandas as pd
    from tensorboard.compat.proto.event_pb2 import Event

#: metrics.csv column -> scalar tag; the part before "/" is the section TensorBoard groups charts under. A
#: column missing here (added to metrics.csv later) is still written, as metrics/<column>.
SCALAR_TAGS = {
    "avg_loss": "loss/train", "val_loss": "loss/val",
    "perplexity": "val/perplexity", "token_accuracy": "val/token_accuracy",
    "learning_rate": "optim/learning_rate", "grad_norm_preclip": "optim/grad_norm_preclip",
    "grad_norm_postclip": "optim/grad_norm_postclip", "max_param_grad": "optim/max_param_grad",
    "weight_norm": "optim/weight_norm",
    "epoch": "progress/epoch", "tokens_seen": "progress/tokens_seen",
    "tokens_per_sec": "progress/tokens_per_sec", "elapsed_sec": "progress/elapsed_sec",
}
#: the final metrics beside the settings in the HParams dashboard (the series' last values are metrics too)
HPARAM_METRICS_PREFIX = "hparams/"
SOURCE = "metrics"  # the event file built from metrics.csv; other sources get files of their own
#: the analysis's test metrics shown when the analysis evaluated the run's current best.pt
TEST_METRICS = ("test_loss", "test_ppl", "test_acc")


@functools.cache
def available() -> bool:
    """Whether the tensorboard extra is installed and imports. One installed but broken (by a protobuf it
    cannot load, say) is a warning, not an error: it must not fail training for the sake of a viewer."""
    if find_spec("tensorboard") is None:
        return False
    try:
        import torch.utils.tensorboard.summary  # noqa: F401
    except Exception as e:
        message = str(e).splitlines()[0] if str(e) else ""
        get_logger().warning(f"warning: tensorboard is installed but does not import "
                             f"({e.__class__.__name__}: {message}); no TensorBoard event files are written")
        return False
    return True


def write_run_events(run_dir: Path | str, *, analysis_root: Path | str | None = None,
                     status: dict | None = None) -> Path | None:
    """Write (or rebuild) the run's event file from its metric rows, status and settings; return its path.

    status: the status.json about to be written (default: the one on disk); the trainer writes a run's last
    event file before its final status, so a run that says "done" has its events, even after a kill.

    analysis_root: where analyze_all_checkpoints put its analyses (analysis_runs); the run's test metrics are
    added when its analysis evaluated the run's current best.pt. Returns None, writing nothing, when
    tensorboard is not installed. A run without config.json or metric rows is a one-line CheckpointError.
    """
    if not available():
        return None
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    status = read_status(run_dir) if status is None else status
    metrics = read_metrics(run_dir)
    start = _start_time(run_dir, status)
    test = known_test_metrics(run_dir, status, analysis_root) if analysis_root is not None else {}
    events = [_file_version_event(start), *_hparams_events(config, status, start),
              *_scalar_events(metrics, start), _final_metrics_event(metrics, test, start)]
    return replace_event_file(run_dir, SOURCE, events)


def replace_event_file(run_dir: Path, source: str, events: Iterable[Event]) -> Path:
    """Make `events` the whole content of the run's event file of this source, under a new name that sorts
    after the old file's, which is then removed (see the module docstring); return the file's path."""
    # the tensorboard extra: callers write event files only once available() says it imports
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event.SerializeToString())
    data = buffer.getvalue()
    suffix = f".picollm-{source}"
    current = sorted(run_dir.glob(f"events.out.tfevents.*{suffix}"))
    if current and current[-1].read_bytes() == data:  # e.g. a finished run back-filled again
        return _keep_newest(run_dir, suffix)
    stamp = max([time.time_ns()] + [_stamp(p) + 1 for p in current])  # sorts last even if the clock went back
    # the staging name lacks "tfevents", so TensorBoard never reads the file half-written, and ends in .tmp, so
    # one a kill leaves behind is removed with the run's other leftovers (runs.remove_leftovers)
    staging = run_dir / f".picollm-events-{uuid.uuid4().hex}.tmp"
    atomic_write(staging, lambda f: f.write(data))
    os.replace(staging, run_dir / f"events.out.tfevents.{stamp:019d}{suffix}")
    return _keep_newest(run_dir, suffix)


def _keep_newest(run_dir: Path, suffix: str) -> Path:
    """Remove all but the newest event file of a source; two writers racing on one run (the trainer and a
    back-fill) thus end with the one file that sorts last, whichever of them wrote it."""
    *older, newest = sorted(run_dir.glob(f"events.out.tfevents.*{suffix}"))
    for path in older:
        path.unlink(missing_ok=True)
    return newest


def _stamp(path: Path) -> int:
    try:
        return int(path.name.split(".")[3])
    except (IndexError, ValueError):
        return 0


def _start_time(run_dir: Path, status: dict) -> float:
    """The run's start, from status.json (else config.json's time): each point's wall time is this plus the
    row's training seconds, so a rebuild of unchanged rows is byte-identical and TensorBoard's relative time
    axis shows training time, without the gaps of pauses."""
    try:
        return time.mktime(time.strptime(str(status.get("started")), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return (run_dir / "config.json").stat().st_mtime


def _event(step: int, wall_time: float, summary: Any) -> Event:
    # the tensorboard extra: callers write event files only once available() says it imports
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(step=step, wall_time=wall_time, summary=summary)


def _file_version_event(start: float) -> Event:
    # the tensorboard extra: callers write event files only once available() says it imports
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(wall_time=start, file_version="brain.Event:2")


def _scalars(values: dict[str, float]) -> Any:
    """One Summary holding a scalar per tag; NaN values (not measured: step 0's train loss) are left out."""
    # the tensorboard extra: callers write event files only once available() says it imports
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard.summary import scalar

    return Summary(value=[scalar(tag, v).value[0] for tag, v in values.items() if not math.isnan(v)])


def _scalar_events(metrics: pd.DataFrame, start: float) -> list[Event]:
    tags = {c: SCALAR_TAGS.get(c, f"metrics/{c}") for c in metrics.columns
            if c != "step" and metrics[c].dtype.kind in "fiu"}
    return [_event(int(row["step"]), start + _seconds(row),
                   _scalars({tag: float(row[c]) for c, tag in tags.items()}))
            for row in metrics.to_dict("records")]


def _seconds(row: dict | pd.Series) -> float:
    seconds = float(row.get("elapsed_sec", math.nan))
    return seconds if math.isfinite(seconds) else 0.0


def final_metrics(metrics: pd.DataFrame, test: dict[str, float]) -> dict[str, float]:
    """The HParams dashboard's final metrics: best val loss (over the trained steps, as the trainer keeps
    best.pt), final val loss, and the test metrics when known. NaN where a run has none (diverged at once)."""
    trained = metrics[metrics["step"] > 0]["val_loss"]
    values = {"best_val_loss": float(trained.min()) if len(trained) else math.nan,
              "final_val_loss": float(metrics["val_loss"].iloc[-1]), **test}
    return {HPARAM_METRICS_PREFIX + k: v for k, v in values.items()}


def _final_metrics_event(metrics: pd.DataFrame, test: dict[str, float], start: float) -> Event:
    last = metrics.iloc[-1]
    return _event(int(last["step"]), start + _seconds(last), _scalars(final_metrics(metrics, test)))


def hparam_values(config: dict) -> dict[str, Any]:
    """The run's settings for the HParams dashboard: every setting that changes results and applies to the run
    (config.json holds None for the ones its family or schedule ignores), its size and vocabulary."""
    values: dict[str, Any] = {}
    for name in (f.name for f in fields(RunConfig) if f.name not in RUNTIME_FIELDS):
        value = config.get(name)
        if value is None or value == "":
            continue
        # torch's hparams() would file a bool as the number 0/1; as text it shows and filters as true/false
        values[name] = str(value).lower() if isinstance(value, bool) else value
    try:
        values["corpus"] = corpus_name(str(config.get("corpus")))  # a file's stem, not its full path
    except DataError:
        pass
    values.update({k: config[k] for k in ("num_params", "vocab_size") if isinstance(config.get(k), int)})
    return values


def _hparams_events(config: dict, status: dict, start: float) -> list[Event]:
    """The session-start summary (settings), and the session-end one once the run has ended well."""
    # the tensorboard extra: callers write event files only once available() says it imports
    from torch.utils.tensorboard.summary import hparams

    _experiment, session_start, session_end = hparams(hparam_values(config), {})
    events = [_event(0, start, session_start)]
    if status.get("status") in ("done", "stopped"):  # hparams() can only say "success"
        events.append(_event(0, start, session_end))
    return events


def known_test_metrics(run_dir: Path, status: dict, analysis_root: Path | str) -> dict[str, float]:
    """test_loss, test_ppl, test_acc from <analysis_root>/<run>/summary.json when that analysis evaluated the
    run's current best.pt (its best step is status.json's); {} when not analysed, or trained on since."""
    path = Path(analysis_root) / run_dir.name / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = read_json(path)
    except CheckpointError:
        return {}
    best = summary.get("checkpoints", {}).get("best")
    if best is None or best != status.get("best_step"):
        return {}
    test = summary.get("test") or {}
    return {k: float(test[k]) for k in TEST_METRICS if isinstance(test.get(k), int | float)}
