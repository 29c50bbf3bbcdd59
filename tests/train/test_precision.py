"""--precision: bf16 autocast where it pays, fp32 elsewhere; not in the fingerprint; kept across a resume."""

import json

import pytest
import torch
from conftest import tiny_transformer as tiny

import picollm.core.devices as devices
import picollm.train.loop as train_mod
from picollm.config import RunConfig
from picollm.core.devices import resolve_precision
from picollm.train.loop import train_run

CPU = torch.device("cpu")


def used(run_dir) -> str:
    return json.loads((run_dir / "config.json").read_text())["precision_used"]


@pytest.mark.parametrize("has_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_on_cpus_with_bf16_units(has_bf16, expected, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"  # as before --precision existed
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_auto_keeps_small_models_in_fp32_on_a_cpu(monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    small, large = devices.BF16_MIN_PARAMS - 1, devices.BF16_MIN_PARAMS
    assert resolve_precision("auto", CPU, small) == "fp32" and resolve_precision("auto", CPU, large) == "bf16"
    assert resolve_precision("bf16", CPU, small) == "bf16"  # asked for: obeyed
    assert resolve_precision("auto", torch.device("cuda"), small) == "bf16"


def test_precision_is_not_in_the_fingerprint():
    names = {RunConfig(precision=p).run_name() for p in ("auto", "fp32", "bf16")}
    assert len(names) == 1


def test_a_bf16_run_multiplies_in_bf16_and_records_it(corpus, tmp_path, monkeypatch):
    dtypes: set[torch.dtype] = set()
    build = train_mod.build_model

    def watched(cfg, vocab_size):
        model = build(cfg, vocab_size)
        model.head.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype) if model.training else None)
        return model

    monkeypatch.setattr(train_mod, "build_model", watched)
    run_dir = train_run(tiny(corpus, tmp_path / "bf16", precision="bf16"))
    assert dtypes == {torch.bfloat16} and used(run_dir) == "bf16"
    dtypes.clear()
    run_dir = train_run(tiny(corpus, tmp_path / "fp32", precision="fp32"))
    assert dtypes == {torch.float32} and used(run_dir) == "fp32"


def test_a_resumed_run_keeps_the_precision_it_started_with(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "BF16_MIN_PARAMS", 0)  # auto picks bf16 for this tiny model too
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    cfg = tiny(corpus, tmp_path)
    train_run(cfg, stop_at_step=10)  # auto = fp32 on this (pretended) CPU
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    run_dir = train_run(cfg)  # auto would now be bf16
    assert used(run_dir) == "fp32"
    fresh = train_run(cfg.replace(out_dir=str(tmp_path / "fresh")))
    assert used(fresh) == "bf16"


def test_a_last_pt_from_before_precision_resumes_as_it_trained(corpus, tmp_path):
    cfg = tiny(corpus, tmp_path)
    ckpt = {"train_state": {"step": 10}}  # no "precision": written before the setting existed
    assert train_mod.run_precision(cfg, CPU, ckpt, 10**6) == "fp32"
    assert train_mod.run_precision(cfg.replace(precision="bf16"), CPU, ckpt, 10**6) == "bf16"  # asked for: obeyed
