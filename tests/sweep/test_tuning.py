"""Optuna samplers and pruners behind picollm's fingerprints (picollm.sweep.tuning, driven by picollm.sweep.batch)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from picollm.runs.layout import list_runs, read_metrics, read_status  # noqa: E402
from picollm.study.stats import pareto_mask  # noqa: E402
from picollm.sweep.batch import train_batch  # noqa: E402
from picollm.sweep.space import Space  # noqa: E402
from picollm.sweep.tuning import journal_path, storage, suggest_point  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOSS_COLUMNS = ["step", "avg_loss", "val_loss"]


def write_space(tmp_path: Path, corpus: str) -> Path:
    space = {"base": {"model": "kgram_mlp", "corpus": corpus, "max_steps": 40, "eval_interval": 10,
                      "eval_tokens": 512, "embed": 16, "hidden": 32, "threads": 1},
             "choices": {"lr": [1e-5, 1e-3, 3e-3, 1e-2], "k": [1, 2, 3]}}
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    return path


def trials(out: Path, name: str = "space") -> list:
    study = optuna.load_study(study_name=name, storage=storage(journal_path(out, name)))
    return study.trials


def told(out: Path) -> list:
    """(params, state, values) of each trial that got a config, in order."""
    return [(t.params, t.state, t.values) for t in trials(out) if "fingerprint" in t.user_attrs]


def tuned(tmp_path: Path, space: Path, out: str, **kw):
    return train_batch(space=str(space), out_dir=tmp_path / out, log_dir=tmp_path / "logs", console=False,
                       **{"sampler": "tpe", "n_runs": 6, "workers": 1, **kw})


def test_a_family_setting_is_a_parameter_of_that_family_and_numbers_are_ordinal():
    space = Space.from_dict({"choices": {"model": ["kgram_mlp", "transformer"], "lr": [3e-3, 1e-3]},
                             "family_choices": {"kgram_mlp": {"k": [1, 2, 3]}}}, "s")
    fixed = optuna.trial.FixedTrial({"model": "kgram_mlp", "lr": 1, "kgram_mlp.k": 2})
    point = suggest_point(fixed, space)
    assert point["model"] == "kgram_mlp" and point["lr"] == 3e-3 and point["k"] == 3  # sorted: [1e-3, 3e-3]
    assert "k" not in suggest_point(optuna.trial.FixedTrial({"model": "transformer", "lr": 0}), space)


def test_tpe_trains_n_distinct_configs_and_tells_repeats_their_recorded_result(corpus, tmp_path):
    space = write_space(tmp_path, corpus)
    report = tuned(tmp_path, space, "ck")
    assert report.exit_code == 0 and len(list_runs(tmp_path / "ck")) == 6
    done = trials(tmp_path / "ck")
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in done)
    assert len({t.user_attrs["fingerprint"] for t in done}) == 6
    first = {}
    for t in done:
        fp = t.user_attrs["fingerprint"]
        if t.user_attrs.get("duplicate"):
            assert t.values == first[fp].values and t.state == first[fp].state  # told, not trained again
        else:
            assert fp not in first
            first[fp] = t
    again = tuned(tmp_path, space, "ck")  # the same command: the study is complete, nothing trains
    assert again.outcomes == [] and len(trials(tmp_path / "ck")) == len(done)


def batch_command(space: Path, out: Path, logs: Path) -> list[str]:
    return [sys.executable, str(ROOT / "batch_train.py"), "--space", str(space), "--sampler", "tpe", "--n_runs", "6",
            "--workers", "1", "--out_dir", str(out), "--log_dir", str(logs)]


def test_kill_9_at_random_moments_then_rerun_gives_the_uninterrupted_study(corpus, tmp_path):
    space = write_space(tmp_path, corpus)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(batch_command(space, tmp_path / "whole", tmp_path / "logs"), env=env, check=True,
                   capture_output=True, timeout=600)
    rng = random.Random(7)
    killed = tmp_path / "killed"
    for _ in range(3):
        proc = subprocess.Popen(batch_command(space, killed, tmp_path / "logs"), env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 5.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the batch, its forkserver and its workers, at once
        proc.wait()
    subprocess.run(batch_command(space, killed, tmp_path / "logs"), env=env, check=True, capture_output=True,
                   timeout=600)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials(killed))
    assert told(killed) == told(tmp_path / "whole")  # a trial killed before its config has no fingerprint
    assert sorted(p.name for p in list_runs(killed)) == sorted(p.name for p in list_runs(tmp_path / "whole"))
    for run in list_runs(tmp_path / "whole"):  # resumed runs end with the metrics of uninterrupted ones
        pd.testing.assert_frame_equal(read_metrics(killed / run.name)[LOSS_COLUMNS], read_metrics(run)[LOSS_COLUMNS])


class Killed(BaseException):
    """Stands for kill -9 at one exact line: nothing after it runs, nothing catches it."""


@pytest.mark.parametrize("moment", ["after the ask", "after the config"])
def test_a_batch_killed_inside_an_ask_resumes_as_the_uninterrupted_study(corpus, tmp_path, monkeypatch, moment):
    from optuna.trial import Trial

    space = write_space(tmp_path, corpus)
    tuned(tmp_path, space, "whole")
    tuned(tmp_path, space, "killed", n_runs=3)
    set_attr = Trial.set_user_attr
    kill_at = "config" if moment == "after the ask" else "fingerprint"

    def killed_at(trial, key, value):
        if key == kill_at:
            raise Killed
        set_attr(trial, key, value)

    monkeypatch.setattr(Trial, "set_user_attr", killed_at)
    with pytest.raises(Killed):
        tuned(tmp_path, space, "killed")
    monkeypatch.setattr(Trial, "set_user_attr", set_attr)
    assert sum(t.state == optuna.trial.TrialState.RUNNING for t in trials(tmp_path / "killed")) == 1
    tuned(tmp_path, space, "killed")
    assert told(tmp_path / "killed") == told(tmp_path / "whole")
    cut_short = [t for t in trials(tmp_path / "killed") if t.user_attrs.get("killed")]
    assert len(cut_short) == (moment == "after the ask")  # one with its config is taken up, not failed


def test_pruned_runs_are_stopped_with_their_metrics_kept_and_never_retrained(corpus, tmp_path):
    space = write_space(tmp_path, corpus)
    report = tuned(tmp_path, space, "ck", n_runs=10, pruner="median")
    stopped = [o for o in report.outcomes if o.outcome == "stopped"]
    assert stopped and all("pruned by the median pruner" in o.reason for o in stopped)
    for o in stopped:
        status, metrics = read_status(o.run_dir), read_metrics(o.run_dir)
        assert status["status"] == "stopped" and metrics["step"].max() == status["step"] < 40
    pruned = [t for t in trials(tmp_path / "ck") if t.state == optuna.trial.TrialState.PRUNED]
    assert {t.user_attrs["run"] for t in pruned if not t.user_attrs.get("duplicate")} == {o.run for o in stopped}
    again = tuned(tmp_path, space, "ck", n_runs=10, pruner="median")
    assert again.outcomes == []


def test_nsga2_front_equals_the_pareto_front_of_the_study_plots(corpus, tmp_path):
    space = write_space(tmp_path, corpus)
    tuned(tmp_path, space, "ck", sampler="nsga2", objectives="val_loss,params", n_runs=8, workers=2)
    study = optuna.load_study(study_name="space", storage=storage(journal_path(tmp_path / "ck", "space")))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    values = np.array([t.values for t in complete])
    mask = pareto_mask(values[:, 1], values[:, 0])  # the summary's frontier: params (x) vs val loss (y)
    ours = {t.user_attrs["fingerprint"] for t, on in zip(complete, mask) if on}
    assert ours == {t.user_attrs["fingerprint"] for t in study.best_trials}


def test_sampler_seeds_of_different_batches_never_overlap():
    from picollm.sweep.tuning import trial_seed

    assert len({trial_seed(s, n) for s in range(5) for n in range(100)}) == 500
