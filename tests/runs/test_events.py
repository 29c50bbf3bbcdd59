"""TensorBoard event files: read back with TensorBoard's own readers, they hold every metric row at its step,
the run's settings for the HParams dashboard in the run's own directory, and no step twice however often
they are rebuilt (back-fill run again, a run paused and resumed, rows recomputed with other values)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer  # noqa: E402
from tensorboard.plugins.hparams import api_pb2  # noqa: E402
from tensorboard.plugins.hparams import metadata as hp_metadata  # noqa: E402

import picollm.runs.events as tb  # noqa: E402
from picollm.cli import export  # noqa: E402
from picollm.config import RunConfig  # noqa: E402
from picollm.core.atomic import atomic_write_json
from picollm.core.errors import PicoError  # noqa: E402
from picollm.runs.layout import METRIC_COLUMNS, read_metrics, read_status, write_metrics  # noqa: E402
from picollm.train.loop import train_run  # noqa: E402


def tiny(corpus: str, out_dir: Path, **overrides) -> RunConfig:
    settings = dict(corpus=corpus, embed=16, hidden=32, layers=1, heads=2, block_size=16, batch_size=8,
                    max_steps=20, eval_interval=10, eval_tokens=2048, warmup_steps=5, out_dir=str(out_dir),
                    progress=False)
    settings.update(overrides)
    return RunConfig(**settings)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, corpus) -> Path:
    """Two finished runs of different families (so their settings differ), exported once."""
    root = tmp_path_factory.mktemp("tb") / "checkpoints"
    train_run(tiny(corpus, root, model="kgram_mlp"), quiet=True)
    train_run(tiny(corpus, root, model="lstm", lr=3e-3), quiet=True)
    assert export_all(root) == 0
    return root


def export_all(root: Path) -> int:
    """The back-fill, with no analyses to take test metrics from."""
    return export.main(["tensorboard", "--checkpoints", str(root), "--analysis", str(root.parent / "none")])


def accumulator(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalar_series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def expected_series(metrics, column: str) -> list[tuple[int, float]]:
    """The column's rows as TensorBoard stores them: float32, NaN (not measured) left out."""
    return [(int(step), float(np.float32(value))) for step, value in zip(metrics["step"], metrics[column])
            if not math.isnan(value)]


def session_start_hparams(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)[hp_metadata.SESSION_START_INFO_TAG]
    hparams = hp_metadata.parse_session_start_info_plugin_data(content).hparams
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}


def assert_events_match_metrics(run_dir: Path) -> None:
    acc, metrics = accumulator(run_dir), read_metrics(run_dir)
    for column in METRIC_COLUMNS[1:]:
        assert scalar_series(acc, tb.SCALAR_TAGS[column]) == expected_series(metrics, column), column


def test_every_metric_row_is_a_scalar_at_its_step(checkpoints, capsys):
    runs = sorted(p for p in checkpoints.iterdir())
    assert len(runs) == 2
    for run_dir in runs:
        assert_events_match_metrics(run_dir)
        assert list(read_metrics(run_dir)["step"]) == [0, 10, 20]
    # `tensorboard --logdir checkpoints` lists one run per run directory, under the run's name
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(checkpoints))
    assert set(multiplexer.Runs()) == {p.name for p in runs}


def test_hparams_are_in_the_runs_own_directory(checkpoints):
    for run_dir in checkpoints.iterdir():
        assert [p for p in run_dir.iterdir() if p.is_dir()] == []  # no sub-folder per add_hparams call
        assert len(list(run_dir.glob("*tfevents*"))) == 1
        acc, metrics = accumulator(run_dir), read_metrics(run_dir)
        tags = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
        # no experiment summary: TensorBoard would apply the first run's to every run of the logdir
        assert set(tags) == {hp_metadata.SESSION_START_INFO_TAG, hp_metadata.SESSION_END_INFO_TAG}
        end = hp_metadata.parse_session_end_info_plugin_data(tags[hp_metadata.SESSION_END_INFO_TAG])
        assert read_status(run_dir)["status"] == "done" and end.status == api_pb2.STATUS_SUCCESS
        last = int(metrics["step"].iloc[-1])
        trained = metrics[metrics["step"] > 0]["val_loss"]
        assert scalar_series(acc, "hparams/best_val_loss") == [(last, float(np.float32(trained.min())))]
        assert scalar_series(acc, "hparams/final_val_loss") == [(last, float(np.float32(trained.iloc[-1])))]
        assert "hparams/test_ppl" not in acc.Tags()["scalars"]  # not analysed
    kgram, lstm = (session_start_hparams(accumulator(next(checkpoints.glob(f"{family}-*"))))
                   for family in ("kgram_mlp", "lstm"))
    assert (kgram["model"], kgram["k"], kgram["lr"], kgram["batch_size"]) == ("kgram_mlp", 3, 1e-3, 8)
    assert (lstm["model"], lstm["lr"], lstm["batching"], lstm["corpus"]) == ("lstm", 3e-3, "stream", "toy")
    assert "k" not in lstm and "heads" not in lstm and "device" not in lstm  # ignored by the family; runtime
    assert kgram["norm"] == "true" and kgram["num_params"] > 0


def test_exporting_again_rewrites_nothing_and_duplicates_no_step(checkpoints, capsys):
    before = {p: p.read_bytes() for p in checkpoints.glob("*/*tfevents*")}
    assert export_all(checkpoints) == 0
    assert "2 run(s)" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in checkpoints.glob("*/*tfevents*")} == before
    for run_dir in checkpoints.iterdir():
        acc = accumulator(run_dir)
        for tag in acc.Tags()["scalars"]:
            steps = [step for step, _ in scalar_series(acc, tag)]
            assert len(steps) == len(set(steps)), tag


def test_a_resumed_run_and_recomputed_rows_leave_exactly_the_rows(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp", max_steps=30)
    run_dir = train_run(cfg, quiet=True, stop_at_step=20)
    first = tb.write_run_events(run_dir)
    assert read_status(run_dir)["status"] == "paused"
    hparams_tags = accumulator(run_dir).PluginTagToContent(hp_metadata.PLUGIN_NAME)
    assert hp_metadata.SESSION_END_INFO_TAG not in hparams_tags  # the run has not ended
    train_run(cfg, quiet=True)
    second = tb.write_run_events(run_dir)
    assert second.name > first.name and not first.exists()  # a new file, read whole by a running TensorBoard
    assert list(read_metrics(run_dir)["step"]) == [0, 10, 20, 30]
    assert_events_match_metrics(run_dir)
    # a killed run resumes from last.pt: its later rows are dropped, then recomputed with other timings
    rows = read_metrics(run_dir).to_dict("records")[:3]
    rows[2] = {**rows[2], "val_loss": 9.5, "tokens_per_sec": 123.0}
    write_metrics(run_dir, rows)
    tb.write_run_events(run_dir)
    assert_events_match_metrics(run_dir)
    assert scalar_series(accumulator(run_dir), "loss/val")[-1] == (20, 9.5)
    assert len(list(run_dir.glob("*tfevents*"))) == 1


class Killed(BaseException):
    """Stands for kill -9 at one exact line: nothing after it runs, nothing catches it."""


def test_a_kill_while_the_last_events_are_written_leaves_a_run_to_resume_not_a_done_one(corpus, tmp_path,
                                                                                           monkeypatch):
    import picollm.train.loop as train_module

    cfg = tiny(corpus, tmp_path, model="kgram_mlp")
    write, calls = tb.write_run_events, []

    def killed_at_the_end(run_dir, **kw):
        calls.append(run_dir)
        if len(calls) == 3:  # after the evaluations at steps 10 and 20: the run's last event file
            raise Killed
        return write(run_dir, **kw)

    monkeypatch.setattr(train_module, "write_run_events", killed_at_the_end)
    with pytest.raises(Killed):
        train_run(cfg, quiet=True)
    run_dir = tmp_path / cfg.run_name()
    assert read_status(run_dir)["status"] == "running"  # so a batch resumes it, and nothing is left half-done
    monkeypatch.setattr(train_module, "write_run_events", write)
    train_run(cfg, quiet=True)
    assert read_status(run_dir)["status"] == "done"
    assert_events_match_metrics(run_dir)
    ended = accumulator(run_dir).PluginTagToContent(hp_metadata.PLUGIN_NAME)
    assert hp_metadata.SESSION_END_INFO_TAG in ended


def test_test_metrics_come_from_an_analysis_of_the_current_best(checkpoints, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(next(checkpoints.glob("kgram_mlp-*")), run_dir)
    summary = tmp_path / "analysis" / "run" / "summary.json"
    best = read_status(run_dir)["best_step"]
    atomic_write_json(summary, {"checkpoints": {"best": best}, "test": {"test_ppl": 12.5, "test_loss": 2.5}})
    tb.write_run_events(run_dir, analysis_root=tmp_path / "analysis")
    acc, last = accumulator(run_dir), int(read_metrics(run_dir)["step"].iloc[-1])
    assert scalar_series(acc, "hparams/test_ppl") == [(last, 12.5)]
    assert scalar_series(acc, "hparams/test_loss") == [(last, 2.5)]
    # an analysis of an earlier best.pt says nothing about the current one
    atomic_write_json(summary, {"checkpoints": {"best": best - 10}, "test": {"test_ppl": 12.5}})
    tb.write_run_events(run_dir, analysis_root=tmp_path / "analysis")
    assert "hparams/test_ppl" not in accumulator(run_dir).Tags()["scalars"]


def test_without_tensorboard_nothing_is_written(checkpoints, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(next(checkpoints.glob("lstm-*")), run_dir)
    for path in run_dir.glob("*tfevents*"):
        path.unlink()
    monkeypatch.setattr(tb, "available", lambda: False)
    assert tb.write_run_events(run_dir) is None
    assert list(run_dir.glob("*tfevents*")) == []
    with pytest.raises(PicoError, match="pip install 'picollm\\[tensorboard\\]'"):
        export.main(["tensorboard", "--checkpoints", str(tmp_path)])


def test_export_of_a_missing_directory_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "picollm", "export", "tensorboard", "--checkpoints", "nowhere"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert "nowhere" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_installed_but_broken_tensorboard_disables_the_events(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard.summary", None)  # its import now fails
    assert tb.available.__wrapped__() is False


def test_a_run_without_metric_rows_is_skipped_with_a_warning(checkpoints, tmp_path, capsys):
    root = tmp_path / "checkpoints"
    for run_dir in checkpoints.iterdir():
        shutil.copytree(run_dir, root / run_dir.name)
    (next(root.glob("lstm-*")) / "metrics.csv").unlink()  # killed before its first evaluation
    assert export_all(root) == 0
    out, err = capsys.readouterr()
    assert "for 1 run(s)" in out and "(1 skipped)" in out
    assert err.count("\n") == 1 and err.startswith("warning: lstm-") and "metrics.csv is missing" in err
