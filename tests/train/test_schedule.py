"""Learning-rate schedules: warmup-stable-decay, step decay by epoch, and the Zaremba PTB preset's rates; the
dropout rates' warmup."""

import pytest
import torch
from conftest import family_params

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.models import build_model
from picollm.sweep.space import PRESETS
from picollm.train.loop import steps_per_epoch, total_steps
from picollm.train.schedule import DropoutWarmup, Schedule, lr_at


def test_wsd_warms_up_holds_then_decays_linearly_to_the_floor_over_its_own_budget():
    cfg = RunConfig(lr=2e-3, schedule="wsd", warmup_steps=10, decay_frac=0.4, min_lr_ratio=0.0, max_steps=100)
    assert lr_at(cfg, 0, 100) == pytest.approx(2e-4)
    assert lr_at(cfg, 9, 100) == pytest.approx(2e-3)
    assert lr_at(cfg, 59, 100) == pytest.approx(2e-3)  # stable until 60% of the run
    assert lr_at(cfg, 60, 100) == pytest.approx(2e-3)
    assert lr_at(cfg, 80, 100) == pytest.approx(1e-3)  # half-way down the decay
    assert lr_at(cfg, 99, 100) == pytest.approx(2e-3 / 40)
    # the same recipe in a run of 1,000 steps decays at its own end, not at step 60
    assert lr_at(cfg, 80, 1000) == pytest.approx(2e-3)
    assert lr_at(cfg, 800, 1000) == pytest.approx(1e-3)


def test_wsd_decays_to_the_floor_and_never_inside_the_warmup():
    cfg = RunConfig(lr=1.0, schedule="wsd", warmup_steps=8, decay_frac=0.9, min_lr_ratio=0.1, max_steps=10)
    assert lr_at(cfg, 7, 10) == pytest.approx(1.0)  # warmup ends at full rate
    assert lr_at(cfg, 8, 10) == pytest.approx(1.0)  # the decay starts after it: 2 steps, not 9
    assert lr_at(cfg, 9, 10) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(cfg, 10, 10) == pytest.approx(0.1)


def test_step_schedule_halves_every_epoch_after_decay_start_epoch():
    cfg = RunConfig(lr=1.0, schedule="step", decay_start_epoch=4, lr_decay=0.5, warmup_steps=0, max_steps=700)
    schedule = Schedule(cfg, 700, steps_per_epoch=100)
    rates = [schedule.lr(epoch * 100 + offset) for epoch in range(7) for offset in (0, 99)]
    # TensorFlow's PTB tutorial: lr * lr_decay ** max(0, i + 1 - max_epoch) in epoch i (0-based)
    assert rates == pytest.approx([1.0] * 8 + [0.5, 0.5, 0.25, 0.25, 0.125, 0.125])


def test_schedule_settings_are_checked_and_fingerprinted_only_where_they_apply():
    with pytest.raises(ConfigError, match="--decay_frac"):
        RunConfig(schedule="wsd", decay_frac=0.0)
    with pytest.raises(ConfigError, match="--lr_decay"):
        RunConfig(schedule="step", lr_decay=1.5)
    with pytest.raises(ConfigError, match="--schedule must be one of"):
        RunConfig(schedule="linear")
    cosine = RunConfig(schedule="cosine")
    assert cosine.replace(decay_frac=0.7, lr_decay=0.9).fingerprint() == cosine.fingerprint()
    wsd = RunConfig(schedule="wsd")
    assert wsd.replace(decay_frac=0.7).fingerprint() != wsd.fingerprint()
    step = RunConfig(schedule="step")
    assert step.replace(min_lr_ratio=0.5).fingerprint() == step.fingerprint()  # step has no floor
    assert step.replace(decay_start_epoch=2).fingerprint() != step.fingerprint()


def test_ptb_zaremba_small_preset_runs_the_papers_schedule():
    cfg = RunConfig(**PRESETS["ptb-zaremba-small"]["base"])
    assert (cfg.model, cfg.layers, cfg.embed, cfg.hidden, cfg.tie_weights, cfg.norm, cfg.dropout) == (
        "lstm", 2, 200, 200, False, False, 0.0)
    assert (cfg.optimizer, cfg.momentum, cfg.init_range, cfg.eval_tokens) == ("sgd", 0.0, 0.1, 0)
    # the paper's lr 1 and clip 5 on a loss summed over 20 BPTT steps = lr 20 and clip 0.25 on their mean
    assert cfg.lr * cfg.grad_clip == pytest.approx(1.0 * 5.0) and cfg.lr == cfg.block_size
    ptb_train_tokens = 929_589
    per_epoch = steps_per_epoch(cfg, ptb_train_tokens)
    assert per_epoch == 2324 and cfg.eval_interval == per_epoch  # one evaluation per epoch
    schedule = Schedule(cfg, total_steps(cfg, ptb_train_tokens), per_epoch)
    assert schedule.max_steps == 13 * per_epoch
    epoch_rates = [schedule.lr(epoch * per_epoch) / cfg.lr for epoch in range(13)]
    assert epoch_rates == pytest.approx([1, 1, 1, 1] + [0.5 ** k for k in range(1, 10)])


DROPOUT_CASES = [pytest.param(*family.values, {}, id=family.id, marks=family.marks) for family in family_params()] \
    + [pytest.param("lstm", {"locked_dropout": True}, id="lstm-locked")]


@pytest.mark.parametrize("family,overrides", DROPOUT_CASES)
def test_dropout_warmup_starts_every_dropout_of_every_family_at_zero_and_ends_at_the_built_rate(family, overrides):
    torch.manual_seed(0)
    cfg = RunConfig(model=family, embed=16, hidden=32, layers=2, heads=2, k=3, block_size=16, dropout=0.3,
                    **overrides)
    model = build_model(cfg, 23)
    idx = torch.randint(0, 23, (4, 12), generator=torch.Generator().manual_seed(1))
    warmup = DropoutWarmup(model, 0.5, 100)
    assert warmup.rates and {rate for _, _, rate in warmup.rates} <= {0.0, 0.3}

    def train_equals_eval() -> bool:
        with torch.no_grad():
            return torch.equal(model.train()(idx)[0], model.eval()(idx)[0])

    assert not train_equals_eval()  # dropout at the built rate
    warmup(0)  # every rate at 0: a training forward is the eval forward, so no dropout was left out
    assert train_equals_eval()
    warmup(25)
    assert all(getattr(m, name) == pytest.approx(rate / 2) for m, name, rate in warmup.rates)
    assert not train_equals_eval()
    warmup(50)
    assert all(getattr(m, name) == rate for m, name, rate in warmup.rates)


def test_dropout_warmup_is_fingerprinted_only_when_on_and_refuses_compile():
    cfg = RunConfig(dropout=0.2)
    assert cfg.replace(dropout_warmup=0.0).fingerprint() == cfg.fingerprint()
    assert cfg.replace(dropout_warmup=0.5).fingerprint() != cfg.fingerprint()
    with pytest.raises(ConfigError, match="--dropout_warmup"):
        RunConfig(dropout_warmup=1.5)
    with pytest.raises(ConfigError, match="--compile"):
        RunConfig(dropout_warmup=0.5, compile=True)
