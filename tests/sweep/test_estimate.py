"""The dry run's time estimate: measured steps, evaluations, workers, and nothing written."""

import json
import re
import time

import pytest

import picollm.train.loop as loop
from picollm.config import RunConfig
from picollm.sweep.batch import train_batch
from picollm.sweep.estimate import batch_seconds, format_duration, run_seconds, seconds_per_step


def test_batch_seconds_hands_each_run_to_the_first_free_worker():
    assert batch_seconds([10, 10, 10, 10], workers=2) == 20
    assert batch_seconds([30, 10, 10, 10], workers=2) == 30  # the long run on one worker, three short on the other
    assert batch_seconds([5, 7], workers=8) == 7
    assert batch_seconds([], workers=2) == 0


def test_run_seconds_adds_the_evaluations_as_forward_passes():
    cfg = RunConfig(max_steps=100, eval_interval=50, eval_tokens=3 * 64 * 32, block_size=64, batch_size=32)
    # 100 steps + 3 evaluations (steps 0, 50, 100) of 3 batches' worth of tokens at a third of a step each
    assert run_seconds(cfg, 100, 0.5, valid_tokens=10**6) == pytest.approx(0.5 * (100 + 3))
    whole = cfg.replace(eval_tokens=0)
    assert run_seconds(whole, 100, 0.5, valid_tokens=64 * 32) == pytest.approx(0.5 * (100 + 1))


def test_format_duration():
    assert [format_duration(s) for s in (4, 59.4, 600, 3600, 3 * 3600 + 5 * 60)] == \
        ["4 s", "59 s", "10 min", "1 h 00 min", "3 h 05 min"]


def test_seconds_per_step_trains_in_a_scratch_folder(corpus, tmp_path):
    cfg = RunConfig(corpus=corpus, model="kgram_mlp", embed=8, hidden=16, block_size=8, batch_size=4,
                    max_steps=1000, out_dir=str(tmp_path / "runs"))
    assert 0 < seconds_per_step(cfg, 3, threads=1) < 60
    assert not (tmp_path / "runs").exists()


def test_seconds_per_step_leaves_out_the_warm_up(corpus, tmp_path, monkeypatch):
    cfg = RunConfig(corpus=corpus, model="kgram_mlp", embed=8, hidden=16, block_size=8, batch_size=4,
                    max_steps=1000, out_dir=str(tmp_path / "runs"))
    step, calls = loop.train_step, []

    def slow_first(*args, **kwargs):  # a first step that builds kernels, as the compiled loss's does
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2.0)
        return step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", slow_first)
    assert seconds_per_step(cfg, 12, threads=1) < 0.1 and len(calls) == 12


def test_dry_run_estimate_prints_a_time_per_run_and_for_the_batch(corpus, tmp_path, capsys):
    space = {"base": {"corpus": corpus, "embed": 8, "hidden": 16, "layers": 1, "heads": 2, "block_size": 8,
                      "batch_size": 4, "max_steps": 40, "eval_interval": 20, "eval_tokens": 256},
             "configs": [{"model": "kgram_mlp"}, {"model": "lstm"}]}
    (tmp_path / "s.json").write_text(json.dumps(space))
    report = train_batch(space=str(tmp_path / "s.json"), dry_run=True, estimate=3, workers=1,
                         out_dir=tmp_path / "runs", log_dir=tmp_path / "logs")
    assert [o.outcome for o in report.outcomes] == ["planned"] * 2
    out = capsys.readouterr().out
    assert re.search(r" steps +time\n", out)
    assert len(re.findall(r" 40 +\d+ s\n", out)) == 2
    assert re.search(r"estimated wall time: \d+ s with 1 workers x \d+ threads", out)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()
