"""--compile_loss: the training loss through torch.compile where the logits are large; the eager loss's numbers
up to rounding; kept across a resume; eager again when the build fails."""

import logging

import pytest
import torch
from conftest import tiny_transformer as tiny

import picollm.train.loop as train_mod
import picollm.train.loss as loss_mod
from picollm.config import RunConfig
from picollm.runs.checkpoint import checkpoint_path, load_checkpoint
from picollm.train.loop import train_run
from picollm.train.loss import COMPILE_MIN_LOGITS, TrainingLoss, rows_cross_entropy, wants_compiled_loss

CPU = torch.device("cpu")


def compiled_loss_of(run_dir) -> bool:
    return load_checkpoint(checkpoint_path(run_dir, "last"))["train_state"]["compiled_loss"]


def test_auto_compiles_large_logits_on_a_cpu_only():
    assert wants_compiled_loss("auto", CPU, COMPILE_MIN_LOGITS)
    assert not wants_compiled_loss("auto", CPU, COMPILE_MIN_LOGITS - 1)
    assert not wants_compiled_loss("auto", torch.device("cuda"), 10**9)
    assert wants_compiled_loss("on", CPU, 1) and not wants_compiled_loss("off", CPU, 10**9)


def test_compile_loss_is_not_in_the_fingerprint():
    assert len({RunConfig(compile_loss=c).run_name() for c in ("auto", "on", "off")}) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_loss_is_the_eager_one(dtype):
    torch.manual_seed(0)
    logits = torch.randn(4, 8, 300).to(dtype).requires_grad_()
    y = torch.randint(0, 300, (4, 8))
    eager = rows_cross_entropy(logits, y)
    (eager_grad,) = torch.autograd.grad(eager, logits)
    loss = TrainingLoss(compiled=True)
    compiled = loss(logits, y)
    (compiled_grad,) = torch.autograd.grad(compiled, logits)
    assert loss.compiled and compiled.dtype == torch.float32
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


# force_disable_caches (so no kernel built earlier on this machine serves the call) makes torch say so once
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled:UserWarning")
def test_a_failed_build_warns_and_trains_eager(caplog):
    torch._dynamo.reset()  # no graph compiled by an earlier test may serve this call
    loss = TrainingLoss(compiled=True)
    logits, y = torch.randn(2, 3, 5, requires_grad=True), torch.randint(0, 5, (2, 3))
    # a machine without a C++ compiler; no cached kernels to fall back on
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",), "force_disable_caches": True}), \
            caplog.at_level(logging.WARNING):
        value = loss(logits, y)
    assert not loss.compiled and "eager loss" in caplog.text
    torch.testing.assert_close(value, rows_cross_entropy(logits, y))


def test_a_run_trains_with_the_compiled_loss_and_records_it(corpus, tmp_path):
    eager = train_run(tiny(corpus, tmp_path / "off", compile_loss="off"))
    compiled = train_run(tiny(corpus, tmp_path / "on", compile_loss="on"))
    assert compiled.name == eager.name  # the same run, trained either way
    assert compiled_loss_of(compiled) and not compiled_loss_of(eager)
    losses = [load_checkpoint(checkpoint_path(d, "last"))["metrics"][-1]["avg_loss"] for d in (eager, compiled)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)


def test_a_resumed_run_keeps_the_loss_it_started_with(corpus, tmp_path, monkeypatch):
    cfg = tiny(corpus, tmp_path)  # auto: eager at this size
    train_run(cfg, stop_at_step=10)
    monkeypatch.setattr(loss_mod, "COMPILE_MIN_LOGITS", 1)  # auto would now compile
    run_dir = train_run(cfg)
    assert not compiled_loss_of(run_dir)
    ckpt = {"train_state": {"step": 10}}  # no "compiled_loss": written before the setting existed
    assert not train_mod.run_compiled_loss(cfg, CPU, ckpt, 10**6)
    assert train_mod.run_compiled_loss(cfg.replace(compile_loss="on"), CPU, ckpt, 10)  # asked for: obeyed
