"""The trainer: metrics and files, determinism, resume == uninterrupted, skip when done, divergence."""

import errno
import math
import os

import pandas as pd
import pytest
import torch
from conftest import family_params

import picollm.train.loop as train_mod
import picollm.train.loss as loss_mod
import picollm.train.optimizers as optimizers
from picollm.config import RunConfig
from picollm.core.errors import CheckpointError, ConfigError, DiskFullError
from picollm.models import build_model
from picollm.runs.checkpoint import load_checkpoint, load_run
from picollm.runs.layout import METRIC_COLUMNS, read_status
from picollm.train.loop import train_run
from picollm.train.schedule import lr_at

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


@pytest.mark.parametrize("family", family_params())
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


#: the new optimizers and schedules: their state (Muon's momentum, the epoch counter of the step schedule)
#: must survive a crash like AdamW's
NEW_RECIPES = {
    "muon-wsd": dict(optimizer="muon", schedule="wsd", decay_frac=0.5, qk_norm=True, positional="rotary"),
    # 17 steps per epoch on the toy corpus: the 40 steps cross two epoch boundaries and the resume point (20)
    "sgd-step": dict(optimizer="sgd", lr=0.5, momentum=0.9, schedule="step", decay_start_epoch=1, lr_decay=0.7,
                     init_range=0.1, norm=False, tie_weights=False, batch_size=64, block_size=32),
}


@pytest.mark.parametrize("family,kill_after_evals,recipe", [
    ("lstm", 2, {}), ("transformer", 3, {"optimizer": "adamw"}), ("xlstm", 1, {}), ("kgram_mlp", 2, {}),
    ("transformer", 2, NEW_RECIPES["muon-wsd"]), ("xlstm", 2, {"optimizer": "muon", "schedule": "wsd"}),
    ("lstm", 2, NEW_RECIPES["sgd-step"]), ("lstm", 2, {"dropout_warmup": 0.8, "locked_dropout": True}),
    ("transformer", 2, {"dropout_warmup": 0.8})])
def test_resume_equals_uninterrupted(family, kill_after_evals, recipe, corpus, tmp_path, monkeypatch):
    overrides = dict(model=family, dropout=0.1, max_steps=40, **recipe)
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

    monkeypatch.setattr(loss_mod, "F", FakeF)
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
    cfg = RunConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, max_steps=110, schedule="cosine")
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


def test_train_log_holds_every_log_interval_steps_and_survives_a_resume(corpus, tmp_path):
    from picollm.runs.layout import TRAIN_LOG_COLUMNS, read_train_log

    whole = train_run(tiny(corpus, tmp_path / "whole", model="lstm", max_steps=40, log_interval=4))
    log = read_train_log(whole)
    assert list(log.columns) == TRAIN_LOG_COLUMNS
    # every 4th step, and every evaluation (every 10), so no window straddles a checkpoint
    assert log["step"].tolist() == [4, 8, 10, 12, 16, 20, 24, 28, 30, 32, 36, 40]
    assert (log["learning_rate"] > 0).all() and log["elapsed_sec"].is_monotonic_increasing
    cfg = tiny(corpus, tmp_path / "paused", model="lstm", max_steps=40, log_interval=4)
    train_run(cfg, stop_at_step=20)
    resumed = train_run(cfg)
    pd.testing.assert_frame_equal(read_train_log(resumed)[["step", "train_loss", "learning_rate"]],
                                  log[["step", "train_loss", "learning_rate"]])


# --------------------------------------------------------------------------------------------------
# optimizers and the fingerprints of runs trained before they existed
# --------------------------------------------------------------------------------------------------
#: fingerprints computed before --optimizer, --qk_norm, ... existed, each with the settings that train exactly
#: as the defaults did then: such configs must keep their run directories' names
OLD_RECIPE = dict(optimizer="adamw", schedule="cosine", lr=1e-3, min_lr_ratio=0.1)  # the rates: the transformer's
OLD_TRANSFORMER = dict(positional="learned", qk_norm=False, canon=0, attn_gate=False, value_embed=False,
                       embed_norm=False)
FINGERPRINTS_BEFORE_TIME_TO_QUALITY = {
    "transformer": ({**OLD_RECIPE, **OLD_TRANSFORMER},
                    "6b736e61f3c659803facee7932eda377ab78fe3ab4346921e8680163bad3d5a9"),
    "lstm": ({"model": "lstm", **OLD_RECIPE}, "43509d16d34691308e9a4f46e89c9356f3e7f06d9090f1f65c9f40562a0a8100"),
    "xlstm": ({"model": "xlstm", **OLD_RECIPE, "batching": "stream"},
              "fce57bbeb127439f1fed9b2588e80137242acdc669ae4afb71316fb8fece62a4"),
    "kgram_mlp": ({"model": "kgram_mlp"}, "7e764f0feb64fcc02f536660e467cdcbb3fe36434a5f09753dc3de33e0c4c02f"),
    "plateau": ({**OLD_RECIPE, **OLD_TRANSFORMER, "schedule": "plateau", "lr": 3e-3},
                "7a792164b478786099e4ac0478afb57d1a27f17f71ac282d9c12d9be86ee67bb"),
    "lstm-ptb-epochs": ({"model": "lstm", **OLD_RECIPE, "corpus": "ptb", "epochs": 2.0, "tie_weights": False},
                        "f0877d9697e8ffad556e00f4f84f7735565114eed86041be6d922c8ae3e1704b"),
    "constant": ({**OLD_RECIPE, **OLD_TRANSFORMER, "schedule": "constant", "warmup_steps": 0},
                 "9ecb8a714b86dbca52c84085f9ace1f7772287177d8ea21dd0b709d0fb975a21"),
}


@pytest.mark.parametrize("name", FINGERPRINTS_BEFORE_TIME_TO_QUALITY)
def test_configs_that_train_as_before_keep_their_fingerprint(name):
    settings, fingerprint = FINGERPRINTS_BEFORE_TIME_TO_QUALITY[name]
    cfg = RunConfig(**settings)
    assert cfg.fingerprint() == fingerprint
    # the new settings spelled out at the values that train as before change nothing
    legacy = dict(mlp_activation="gelu", zero_init_proj=False, init_range=0.0)
    assert cfg.replace(**legacy).fingerprint() == fingerprint
    assert cfg.replace(optimizer="muon").fingerprint() != fingerprint
    assert cfg.replace(schedule="wsd").fingerprint() != fingerprint


@pytest.mark.parametrize("family,recipe_changed", [("transformer", True), ("lstm", True), ("xlstm", True),
                                                   ("kgram_mlp", False)])
def test_a_new_default_recipe_never_reuses_an_old_run_directory(family, recipe_changed):
    old = FINGERPRINTS_BEFORE_TIME_TO_QUALITY[family][1]
    assert (RunConfig(model=family).fingerprint() != old) == recipe_changed


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    cfg = RunConfig(model="transformer", embed=16, layers=2, heads=2, tie_weights=False, optimizer="muon")
    model = build_model(cfg, 23)
    opt = optimizers.make_optimizer(model, cfg, torch.device("cpu"))
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    on_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert on_muon == {n for n, p in model.named_parameters()
                       if p.dim() == 2 and n.startswith("blocks.") and ".gate." not in n}
    assert "blocks.0.attn.gate.weight" in on_adamw  # the attention gates' rows: one switch per head
    assert {"wte.weight", "head.weight", "ln_f.weight"} <= on_adamw and not on_muon & on_adamw
    assert on_muon | on_adamw == set(names.values())
    assert {"blocks.0.attn.q.weight", "blocks.0.attn.k.weight", "blocks.0.attn.v.weight"} <= on_muon  # the recipe
    lstm_cfg = RunConfig(model="lstm", embed=16, hidden=32, optimizer="muon")
    lstm = build_model(lstm_cfg, 23)
    on_muon = {id(p) for p in optimizers.hidden_matrices(lstm)}
    assert id(lstm.rnn.weight_hh_l0) in on_muon and id(lstm.embedding.weight) not in on_muon


def _three_steps(cfg: RunConfig, split_qkv: bool) -> tuple[list[float], torch.Tensor]:
    """Three optimizer steps of a tiny transformer built with the given layout: losses, first-block q/k/v."""
    from picollm.models.transformer.config import TransformerConfig
    from picollm.models.transformer.model import Transformer

    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=23, embed=16, layers=2, heads=2, split_qkv=split_qkv))
    opt = optimizers.make_optimizer(model, cfg, torch.device("cpu"))
    batches = torch.randint(0, 23, (3, 4, 9), generator=torch.Generator().manual_seed(1))
    losses = []
    for batch in batches:
        logits, _ = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    attn = model.blocks[0].attn
    return losses, attn.qkv.weight.detach() if not split_qkv else torch.cat([attn.q.weight, attn.k.weight,
                                                                              attn.v.weight]).detach()


def test_split_qkv_changes_only_what_muon_does():
    adamw = RunConfig(model="transformer", optimizer="adamw")
    assert adamw.resolved().split_qkv is False  # so AdamW runs keep their names and their checkpoints' layout
    losses, weights = _three_steps(adamw, split_qkv=False)
    split_losses, split_weights = _three_steps(adamw, split_qkv=True)
    assert losses == split_losses and torch.equal(weights, split_weights)  # elementwise steps: bit for bit
    muon = RunConfig(model="transformer", optimizer="muon")
    losses, weights = _three_steps(muon, split_qkv=False)
    split_losses, split_weights = _three_steps(muon, split_qkv=True)
    assert losses[0] == split_losses[0] and not torch.allclose(weights, split_weights, atol=1e-4)


def test_muon_matrices_follow_the_schedule_at_muon_lr(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path, model="transformer", optimizer="muon", schedule="wsd", muon_lr=0.05, lr=2e-3,
               max_steps=40, warmup_steps=0, min_lr_ratio=0.1, decay_frac=0.4)
    run_dir = train_run(cfg)
    muon_state, adamw_state = load_checkpoint(run_dir / "last.pt")["optimizer"]["optimizers"]
    factor = lr_at(cfg, 39, 40) / cfg.lr  # the rate of the last step, a fraction of the peak
    assert 0.1 < factor < 0.25  # well down the decay, above the floor
    assert muon_state["param_groups"][0]["lr"] == pytest.approx(0.05 * factor)
    assert all(g["lr"] == pytest.approx(2e-3 * factor) for g in adamw_state["param_groups"])
    assert metrics(run_dir)["val_loss"].iloc[-1] < metrics(run_dir)["val_loss"].iloc[0] - 0.5


def test_sgd_is_plain_sgd_unless_momentum_is_asked_for():
    cfg = RunConfig(model="kgram_mlp", embed=8, hidden=16, optimizer="sgd", lr=0.3, weight_decay=0.0)
    model = build_model(cfg, 11)
    opt = optimizers.make_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD) and all(g["momentum"] == 0 for g in opt.param_groups)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):  # with momentum, the second step would differ from -lr * grad
        opt.zero_grad()
        logits, _ = model(torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(0)))
        logits.square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        for p, b, g in zip(model.parameters(), before, grads):
            assert torch.allclose(p, b - 0.3 * g)
    with_momentum = optimizers.make_optimizer(model, cfg.replace(momentum=0.9), torch.device("cpu"))
    assert all(g["momentum"] == 0.9 for g in with_momentum.param_groups)


def test_a_muon_run_is_reproducible(corpus, tmp_path):
    settings = dict(model="transformer", dropout=0.1, **NEW_RECIPES["muon-wsd"])
    a = train_run(tiny(corpus, tmp_path / "a", **settings))
    b = train_run(tiny(corpus, tmp_path / "b", **settings))
    pd.testing.assert_frame_equal(metrics(a)[LOSS_COLUMNS], metrics(b)[LOSS_COLUMNS])


def test_ctrl_c_leaves_the_run_interrupted_and_a_rerun_ends_as_if_it_never_was(corpus, tmp_path):
    base = RunConfig(model="kgram_mlp", corpus=corpus, embed=8, hidden=16, block_size=8, batch_size=4, max_steps=20,
                     eval_interval=5, eval_tokens=512, progress=False)
    whole = train_run(base.replace(out_dir=str(tmp_path / "whole")), quiet=True)
    cut = base.replace(out_dir=str(tmp_path / "cut"))

    def ctrl_c(step: int, val_loss: float) -> None:
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cut, quiet=True, on_evaluation=ctrl_c)
    run_dir = tmp_path / "cut" / cut.run_name()
    status = read_status(run_dir)
    assert status["status"] == "interrupted" and status["step"] == 10, status
    assert "run the same command again to resume" in status["reason"]
    assert train_run(cut, quiet=True) == run_dir and read_status(run_dir)["status"] == "done"
    timings = ["tokens_per_sec", "elapsed_sec"]
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv").drop(columns=timings),
                                  pd.read_csv(whole / "metrics.csv").drop(columns=timings))


def test_a_full_disk_mid_run_keeps_last_pt_and_the_rerun_ends_as_if_it_never_was(corpus, tmp_path, monkeypatch):
    base = RunConfig(model="kgram_mlp", corpus=corpus, embed=8, hidden=16, block_size=8, batch_size=4, max_steps=20,
                     eval_interval=5, eval_tokens=512, progress=False)
    whole = train_run(base.replace(out_dir=str(tmp_path / "whole")), quiet=True)
    cut = base.replace(out_dir=str(tmp_path / "cut"))
    real_fsync, saves = os.fsync, []

    def fsync(fd: int) -> None:  # the disk fills up during the third save of last.pt (step 15)
        if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            saves.append(fd)
            if len(saves) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFullError) as err:
        train_run(cut, quiet=True)
    run_dir = tmp_path / "cut" / cut.run_name()
    message = str(err.value)
    assert len(message.splitlines()) == 1 and f"disk full writing {run_dir / 'last.pt'}" in message
    assert load_checkpoint(run_dir / "last.pt")["step"] == 10 and not list(run_dir.glob(".*.tmp"))
    assert read_status(run_dir)["status"] == "failed"
    monkeypatch.undo()
    train_run(cut, quiet=True)
    timings = ["tokens_per_sec", "elapsed_sec"]
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "metrics.csv").drop(columns=timings),
                                  pd.read_csv(whole / "metrics.csv").drop(columns=timings))
