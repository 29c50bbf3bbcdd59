"""--ema: the weights' moving average is what evaluations, best.pt and analysis see; training is unchanged."""

import pandas as pd
import pytest
import torch
from conftest import family_params
from test_loop import LOSS_COLUMNS, Interrupt, tiny

import picollm.train.loop as train_mod
from picollm.data.batching import prepare_data
from picollm.runs.checkpoint import load_checkpoint, load_run
from picollm.runs.layout import METRIC_COLUMNS, read_metrics
from picollm.train.evaluate import evaluate
from picollm.train.loop import train_run


def test_off_by_default_and_in_the_fingerprint_only_when_on(corpus, tmp_path):
    plain = tiny(corpus, tmp_path)
    assert plain.ema == 0.0 and "ema" not in plain.fingerprint_dict()  # runs from before --ema keep their names
    assert plain.replace(ema=0.9).fingerprint_dict()["ema"] == 0.9
    assert plain.replace(ema=0.9).fingerprint() != plain.fingerprint()


@pytest.mark.parametrize("family", family_params())
def test_the_average_trains_nothing_and_is_what_is_evaluated_and_kept(family, corpus, tmp_path):
    plain = train_run(tiny(corpus, tmp_path / "plain", model=family, dropout=0.1, lr=1e-2))
    averaged = train_run(tiny(corpus, tmp_path / "ema", model=family, dropout=0.1, lr=1e-2, ema=0.8))
    a, b = load_checkpoint(plain / "last.pt")["model"], load_checkpoint(averaged / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the trained weights never see the average
    m_plain, m = read_metrics(plain), read_metrics(averaged)
    assert list(m.columns) == METRIC_COLUMNS + ["val_loss_raw"] and list(m_plain.columns) == METRIC_COLUMNS
    pd.testing.assert_series_equal(m["val_loss_raw"], m_plain["val_loss"], check_names=False)
    assert (m["val_loss"] != m["val_loss_raw"]).iloc[1:].all()
    cfg, tokenizer, model, best = load_run(averaged)  # best.pt holds the average, scored as metrics.csv says
    valid = prepare_data(cfg.corpus, cfg.resolved().tokenizer, cfg.bpe_vocab_size, tokenizer=tokenizer)[1]["valid"]
    scored = evaluate(model, valid, cfg.batch_size, cfg.block_size, torch.device("cpu"), cfg.eval_tokens)["loss"]
    assert best["val_loss"] == m["val_loss"].min() and scored == pytest.approx(best["val_loss"], abs=1e-6)
    assert not all(torch.equal(best["model"][k], b[k]) for k in b)


def test_resume_equals_uninterrupted_with_the_average(corpus, tmp_path, monkeypatch):
    overrides = dict(model="lstm", dropout=0.1, max_steps=40, ema=0.9)
    whole = train_run(tiny(corpus, tmp_path / "whole", **overrides))
    cfg = tiny(corpus, tmp_path / "broken", **overrides)
    real_save = train_mod.save_checkpoint
    calls = {"n": 0}

    def dying_save(run):  # crash right after the second checkpoint
        real_save(run)
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt("simulated crash")

    monkeypatch.setattr(train_mod, "save_checkpoint", dying_save)
    with pytest.raises(Interrupt):
        train_run(cfg)
    run_dir = tmp_path / "broken" / cfg.run_name()
    assert "average" in load_checkpoint(run_dir / "last.pt")
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = train_run(cfg)
    pd.testing.assert_frame_equal(read_metrics(whole)[LOSS_COLUMNS + ["val_loss_raw"]],
                                  read_metrics(resumed)[LOSS_COLUMNS + ["val_loss_raw"]])
    a, b = load_checkpoint(whole / "last.pt")["average"], load_checkpoint(resumed / "last.pt")["average"]
    assert all(torch.equal(a[k], b[k]) for k in a)
