"""The trainer: metrics and files, determinism, resume == uninterrupted, skip when done, divergence."""

import math

import pandas as pd
import pytest
import torch

import picollm.train as train_mod
from picollm.config import RunConfig
from picollm.errors import CheckpointError, ConfigError
from picollm.runs import METRIC_COLUMNS, load_checkpoint, load_run, read_status
from picollm.schedule import lr_at
from picollm.train import train_run

LOSS_COLUMNS = ["step", "epoch", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy",
                "grad_norm_preclip", "grad_norm_postclip", "max_param_grad", "weight_norm", "learning_rate"]


def tiny(corpus, tmp_path, **overrides) -> RunConfig:
    settings = dict(corpus=corpus, embed=16, hidden=32, layers=1, heads=2, block_size=16, batch_size=8,
                    max_steps=30, eval_interval=10, eval_tokens=2048, warmup_steps=5, out_dir=str(tmp_path),
                    progress=False)
    settings.update(overrides)
    return RunConfig(**settings)


def metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


@pytest.mark.parametrize("family", ["kgram_mlp", "lstm", "xlstm", "transformer"])
def test_run_directory_is_complete_and_learning_happens(family, corpus, tmp_path):
    cfg = tiny(corpus, tmp_path, model=family, max_steps=60, lr=1e-2)
    run_dir = train_run(cfg)
    assert run_dir.name == cfg.run_name() and run_dir.parent == tmp_path
    for name in ["config.json", "status.json", "metrics.csv", "tokenizer.json", "best.pt", "last.pt"]:
        assert (run_dir / name).stat().st_size > 0, name
    m = metrics(run_dir)
    assert list(m.columns) == METRIC_COLUMNS
    assert list(m["step"]) == [0, 10, 20, 30, 40, 50, 60]
    assert m["val_loss"].iloc[-1] < m["val_loss"].iloc[0] - 0.5  # real learning, not noise
    assert read_status(run_dir)["status"] == "done"
    ckpt = load_checkpoint(run_dir / "last.pt")  # weights_only=True inside
    assert ckpt["step"] == 60
    cfg2, tok, model, best = load_run(run_dir)
    assert cfg2.fingerprint() == cfg.fingerprint() and best["val_loss"] == pytest.approx(m["val_loss"].min())


def test_same_config_and_seed_give_identical_metrics(corpus, tmp_path):
    a = train_run(tiny(corpus, tmp_path / "a", model="transformer", dropout=0.1))
    b = train_run(tiny(corpus, tmp_path / "b", model="transformer", dropout=0.1))
    pd.testing.assert_frame_equal(metrics(a)[LOSS_COLUMNS], metrics(b)[LOSS_COLUMNS])
    c = train_run(tiny(corpus, tmp_path / "c", model="transformer", dropout=0.1, seed=7))
    assert not metrics(a)["val_loss"].equals(metrics(c)["val_loss"])


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("family,kill_after_evals", [("lstm", 2), ("transformer", 3), ("xlstm", 1), ("kgram_mlp", 2)])
def test_resume_equals_uninterrupted(family, kill_after_evals, corpus, tmp_path, monkeypatch):
    overrides = dict(model=family, dropout=0.1, max_steps=40)
    whole = train_run(tiny(corpus, tmp_path / "whole", **overrides))

    cfg = tiny(corpus, tmp_path / "broken", **overrides)
    real_evaluate = train_mod.evaluate
    calls = {"n": 0}

    def dying_evaluate(*args, **kwargs):  # crash mid-run, after some checkpoints were written
        calls["n"] += 1
        if calls["n"] > kill_after_evals + 1:  # +1: the step-0 baseline evaluation
            raise Interrupt("simulated crash")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", dying_evaluate)
    with pytest.raises(Interrupt):
        train_run(cfg)
    run_dir = tmp_path / "broken" / cfg.run_name()
    assert read_status(run_dir)["status"] == "failed"
    assert load_checkpoint(run_dir / "last.pt")["step"] == 10 * kill_after_evals
    monkeypatch.setattr(train_mod, "evaluate", real_evaluate)
    resumed = train_run(cfg)
    pd.testing.assert_frame_equal(metrics(whole)[LOSS_COLUMNS], metrics(resumed)[LOSS_COLUMNS])
    a, b = load_checkpoint(whole / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_trains_nothing(corpus, tmp_path, monkeypatch):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp")
    run_dir = train_run(cfg)
    before = (run_dir / "last.pt").stat().st_mtime_ns
    monkeypatch.setattr(train_mod, "_train", lambda *a, **k: pytest.fail("a finished run was retrained"))
    assert train_run(cfg) == run_dir
    assert (run_dir / "last.pt").stat().st_mtime_ns == before


def test_nan_loss_ends_run_as_diverged_with_metrics_kept(corpus, tmp_path, monkeypatch):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp", max_steps=40)
    real_ce = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    class FakeF:
        @staticmethod
        def cross_entropy(*args, **kwargs):
            loss = real_ce(*args, **kwargs)
            if kwargs.get("reduction") == "none":  # evaluation
                return loss
            calls["n"] += 1
            return loss * math.nan if calls["n"] > 15 else loss

    monkeypatch.setattr(train_mod, "F", FakeF)
    run_dir = train_run(cfg)
    status = read_status(run_dir)
    assert status["status"] == "diverged" and "non-finite" in status["reason"]
    assert list(metrics(run_dir)["step"]) == [0, 10]  # the evaluations before the blow-up are kept
    monkeypatch.setattr(train_mod, "_train", lambda *a, **k: pytest.fail("a diverged run was retrained"))
    train_run(cfg)


def test_early_stopping_records_why(corpus, tmp_path, monkeypatch):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp", max_steps=100, early_stop_patience=2)
    losses = iter([5.0, 3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1, 3.2])
    monkeypatch.setattr(train_mod, "evaluate",
                        lambda *a, **k: {"loss": (v := next(losses)), "perplexity": math.exp(v), "accuracy": 0.1, "tokens": 1})
    run_dir = train_run(cfg)
    status = read_status(run_dir)
    assert status["status"] == "done" and status["reason"].startswith("early stopping")
    assert metrics(run_dir)["step"].iloc[-1] == 40
    assert load_checkpoint(run_dir / "best.pt")["step"] == 20


def test_epochs_set_the_number_of_steps(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp", epochs=0.5, max_steps=0, eval_interval=1000)
    run_dir = train_run(cfg)
    m = metrics(run_dir)
    assert m["epoch"].iloc[-1] == pytest.approx(0.5, abs=0.05)


def test_schedule_warmup_then_cosine_to_floor():
    cfg = RunConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, max_steps=110)
    assert lr_at(cfg, 0, 110) == pytest.approx(1e-4)
    assert lr_at(cfg, 9, 110) == pytest.approx(1e-3)
    assert lr_at(cfg, 60, 110) == pytest.approx(0.55e-3)
    assert lr_at(cfg, 110, 110) == pytest.approx(1e-4)


def test_corrupt_checkpoint_is_a_one_line_error(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp")
    run_dir = train_run(cfg)
    (run_dir / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_run(run_dir)
    assert "\n" not in str(err.value)


def test_block_size_longer_than_split_is_a_clear_error(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("abcdefghij" * 30)
    with pytest.raises(ConfigError, match="block_size"):
        train_run(RunConfig(corpus=str(small), model="kgram_mlp", block_size=64, out_dir=str(tmp_path), progress=False))


def test_pause_at_a_step_budget_then_continue_equals_one_run(corpus, tmp_path):
    overrides = dict(model="lstm", max_steps=40)
    whole = train_run(tiny(corpus, tmp_path / "whole", **overrides))
    cfg = tiny(corpus, tmp_path / "paused", **overrides)
    run_dir = train_run(cfg, stop_at_step=20)
    status = read_status(run_dir)
    assert status["status"] == "paused" and status["step"] == 20
    train_run(cfg)
    assert read_status(run_dir)["status"] == "done"
    pd.testing.assert_frame_equal(metrics(whole)[LOSS_COLUMNS], metrics(run_dir)[LOSS_COLUMNS])


def test_plateau_schedule_decays_lr_when_val_loss_stalls(corpus, tmp_path, monkeypatch):
    cfg = tiny(corpus, tmp_path, model="kgram_mlp", max_steps=60, schedule="plateau", plateau_patience=2,
               plateau_factor=0.5, warmup_steps=0, lr=1e-3)
    losses = iter([5.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9])  # best at step 10, then no improvement
    monkeypatch.setattr(train_mod, "evaluate",
                        lambda *a, **k: {"loss": (v := next(losses)), "perplexity": math.exp(v), "accuracy": 0.1, "tokens": 1})
    run_dir = train_run(cfg)
    lrs = list(metrics(run_dir)["learning_rate"])
    # row lr = lr used for the steps before that evaluation; two stalls (steps 20, 30) halve it for steps 31+
    assert lrs[1:] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
