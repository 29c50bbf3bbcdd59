"""Fingerprints: stable under key order and spelled-out defaults, blind to settings a family ignores."""

import json
import random

import pytest

from picollm.config import RunConfig
from picollm.errors import ConfigError


def test_fingerprint_ignores_key_order():
    d = RunConfig(model="lstm", embed=32).to_dict()
    keys = list(d)
    random.Random(0).shuffle(keys)
    shuffled = {k: d[k] for k in keys}
    assert RunConfig.from_dict(shuffled).fingerprint() == RunConfig(model="lstm", embed=32).fingerprint()


def test_fingerprint_same_with_defaults_spelled_out():
    explicit = RunConfig(model="transformer", lr=RunConfig().lr, seed=RunConfig().seed, tokenizer="auto")
    assert explicit.fingerprint() == RunConfig(model="transformer").fingerprint()
    # "auto" resolves to the concrete choice: same run either way
    assert RunConfig(tokenizer="char").fingerprint() == RunConfig().fingerprint()


def test_fingerprint_blind_to_ignored_settings_and_runtime():
    base = RunConfig(model="transformer")
    assert base.replace(k=5, hidden=999, activation="relu").fingerprint() == base.fingerprint()
    assert base.replace(device="cuda", out_dir="elsewhere", progress=False).fingerprint() == base.fingerprint()
    kgram = RunConfig(model="kgram_mlp")
    assert kgram.replace(heads=8, positional="rotary").fingerprint() == kgram.fingerprint()


def test_fingerprint_changes_with_every_result_changing_setting():
    base = RunConfig(model="kgram_mlp")
    changed = [base.replace(k=4), base.replace(lr=3e-3), base.replace(seed=1), base.replace(embed=32),
               base.replace(model="lstm"), base.replace(corpus="ptb"), base.replace(max_steps=10)]
    prints = {c.fingerprint() for c in changed} | {base.fingerprint()}
    assert len(prints) == len(changed) + 1


def test_run_name_layout():
    cfg = RunConfig(model="lstm", corpus="ptb")
    assert cfg.run_name() == f"lstm-ptb-{cfg.fingerprint()[:8]}"


def test_fingerprint_of_local_file_follows_content(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("hello world " * 50)
    b.write_text("hello world " * 50)
    # same bytes under two paths: the same data, so the same fingerprint
    assert RunConfig(corpus=str(a)).fingerprint() == RunConfig(corpus=str(b)).fingerprint()
    fa = RunConfig(corpus=str(a)).fingerprint()
    b.write_text("something else " * 50)
    assert RunConfig(corpus=str(b)).fingerprint() != fa


def test_unknown_field_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown config field"):
        RunConfig.from_dict({"model": "lstm", "embedding_dim": 3})


def test_resolved_config_is_json_and_round_trips():
    cfg = RunConfig(model="lstm")
    text = json.dumps(cfg.resolved().to_dict())
    again = RunConfig.from_dict(json.loads(text))
    assert again.fingerprint() == cfg.fingerprint()


def test_int_and_float_spellings_of_a_float_setting_are_the_same_run():
    assert RunConfig(lr=1, dropout=0).fingerprint() == RunConfig(lr=1.0, dropout=0.0).fingerprint()
