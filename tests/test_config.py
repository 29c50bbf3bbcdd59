"""Fingerprints: stable under key order and spelled-out defaults, blind to settings a family ignores."""

import json
import random
from dataclasses import dataclass, fields

import pytest

from picollm import config
from picollm.config import RunConfig, model_fields
from picollm.core.errors import ConfigError
from picollm.core.settings import setting
from picollm.models import FAMILIES


def test_fingerprint_ignores_key_order():
    d = RunConfig(model="lstm", embed=32).to_dict()
    keys = list(d)
    random.Random(0).shuffle(keys)
    shuffled = {k: d[k] for k in keys}
    assert RunConfig.from_dict(shuffled).fingerprint() == RunConfig(model="lstm", embed=32).fingerprint()


def test_fingerprint_same_with_defaults_spelled_out():
    explicit = RunConfig(model="transformer", lr=3e-3, seed=RunConfig().seed, tokenizer="auto")
    assert explicit.fingerprint() == RunConfig(model="transformer").fingerprint()
    # "auto" resolves to the concrete choice: same run either way
    assert RunConfig(tokenizer="char").fingerprint() == RunConfig().fingerprint()


def test_unset_rates_are_the_familys_recipe_and_a_given_one_wins():
    from picollm.models import DEFAULT_RECIPE

    for family in ("kgram_mlp", "lstm"):
        r = RunConfig(model=family).resolved()
        assert (r.lr, r.min_lr_ratio) == (DEFAULT_RECIPE["lr"], DEFAULT_RECIPE["min_lr_ratio"])
    x = RunConfig(model="xlstm").resolved()
    assert (x.optimizer, x.schedule, x.lr, x.min_lr_ratio, x.decay_frac, x.batching) == \
        ("muon", "wsd", 1e-2, 0.0, 1.0, "random")
    assert [RunConfig(model=f).resolved().batching for f in ("lstm", "kgram_mlp", "transformer")] == \
        ["stream", "random", "random"]
    t = RunConfig(model="transformer").resolved()
    assert (t.optimizer, t.schedule, t.lr, t.min_lr_ratio, t.decay_frac, t.qk_scale) == ("muon", "wsd", 3e-3, 0.0, 1.0, 1.5)
    assert RunConfig(model="transformer", qk_norm=False).resolved().qk_scale is None  # no effect without QK-norm
    assert t.split_qkv is True and RunConfig(model="transformer", optimizer="adamw").resolved().split_qkv is False
    assert RunConfig(model="lstm").resolved().split_qkv is None  # not a setting of the family
    assert RunConfig(model="lstm").resolved().decay_frac == 0.4
    assert RunConfig(model="kgram_mlp").resolved().decay_frac is None  # cosine: no decay share
    given = RunConfig(model="transformer", lr=1e-3, min_lr_ratio=0.1).resolved()
    assert (given.lr, given.min_lr_ratio, given.decay_frac) == (1e-3, 0.1, 1.0)
    assert RunConfig(model="transformer", lr=1e-3).fingerprint() != RunConfig(model="transformer").fingerprint()
    with pytest.raises(ConfigError, match="--lr"):
        RunConfig(lr=0.0)


def test_the_transformer_default_before_its_recipe_moved_keeps_its_name():
    # RunConfig(model="transformer").fingerprint() before lr, min_lr_ratio, decay_frac, qk_scale and split_qkv became the
    # family's (commit 73a0ef4): those settings at the values it trained with find the same run directory
    # (and Muon's iteration at torch's, the default before --muon_ns)
    # (each without the parts the default gained later: Canon layers, attention gates, value embeddings, normalised
    # embeddings)
    parts_off = dict(canon=0, attn_gate=False, value_embed=False, embed_norm=False)
    before = "cd1fc1fb2da91ad74e9716f07d58bd9e55dd1d80a85f5bad1db2cf78384d0976"
    old = RunConfig(model="transformer", lr=1e-3, min_lr_ratio=0.1, decay_frac=0.4, qk_scale=1.0, split_qkv=False,
                    muon_ns="jordan5", **parts_off)
    assert old.fingerprint() == before and RunConfig(model="transformer").fingerprint() != before
    # ... and the default between then and split_qkv (commit ecaeac5)
    assert RunConfig(model="transformer", split_qkv=False, muon_ns="jordan5", **parts_off).fingerprint() == \
        "d142f5b5aa9fd235e75b8a1fbc59c725d2d0ab5775783f5a0dc1a3fb5cfea80e"
    # ... and the default between then and the Canon layers, attention gates and value embeddings (commit e2017d5)
    before_parts = RunConfig(model="transformer", **parts_off)
    assert before_parts.fingerprint() == "08353eb42f050a87209842e56b6dac65b527d958f1c5922150ba4bd0e9f79e7d"
    assert before_parts.replace(canon_at="attention+mlp", embed_norm=False).fingerprint() == before_parts.fingerprint()
    assert RunConfig(model="transformer").fingerprint() != before_parts.fingerprint()
    # --canon 4 before the default placed them before the MLP only: both places, as it trained (commit e2017d5)
    assert before_parts.replace(canon=4, canon_at="attention+mlp").fingerprint() == \
        "e08e81f2ef1ec38fc9d9dbc4898554f696294800acfe8c7b60b596dd17c7b5d6"
    # ... and the default with those parts, before it normalised the embeddings (commit b53452e)
    assert RunConfig(model="transformer", embed_norm=False).fingerprint() == \
        "94e39a148908cf7242a328a6a448301bfccb5597d69ceeee06beb1159584e4e1"
    assert RunConfig(model="lstm", muon_ns="jordan5").fingerprint() == \
        "ba2bd02848a141a102fee0aece2d050a2295cc1b94962410e460aac0ab8f1de5"
    assert RunConfig(model="lstm").fingerprint() != "ba2bd02848a141a102fee0aece2d050a2295cc1b94962410e460aac0ab8f1de5"


def test_a_stored_record_without_a_newer_setting_trained_at_its_old_value():
    record = RunConfig(model="transformer", qk_norm=True, qk_scale=1.0).resolved().to_dict()
    del record["qk_scale"]  # a config.json written before qk_scale existed
    assert RunConfig.from_record(record).resolved().qk_scale == 1.0
    assert RunConfig.from_dict(record).resolved().qk_scale == 1.5  # as a new config: the family's recipe
    del record["qk_norm"]  # ... and before qk_norm existed
    assert RunConfig.from_record(record).qk_norm is False


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


#: the settings that enter the fingerprint of some family's default run (RUNTIME_FIELDS and OMITTED_AT aside)
FINGERPRINTED = ("corpus", "tokenizer", "block_size", "batch_size", "batching", "model", "embed", "hidden", "layers",
                 "heads", "k", "inner_layers", "activation", "norm", "dropout", "tie_weights", "positional",
                 "xlstm_ratio", "qk_norm", "qk_scale", "split_qkv", "optimizer", "lr", "muon_lr", "min_lr_ratio",
                 "weight_decay", "beta1", "beta2", "schedule", "decay_frac", "warmup_steps", "grad_clip", "max_steps",
                 "epochs", "eval_interval", "eval_tokens", "early_stop_patience", "seed", "parent")


def check_no_setting_renames_runs(config_cls: type[RunConfig] = RunConfig) -> None:
    """Fail, naming the setting and the fix, if a setting of config_cls that is not pinned in FINGERPRINTED,
    a runtime setting or in OMITTED_AT is set (not blanked to None) in some family's default run: it would
    enter every such run's fingerprint and so rename the directories of the runs trained before it."""
    known = set(FINGERPRINTED) | config.RUNTIME_FIELDS | set(config.OMITTED_AT)
    defaults = [config_cls(model=family).resolved() for family in FAMILIES]
    renaming = [f.name for f in fields(config_cls)
                if f.name not in known and any(getattr(run, f.name) is not None for run in defaults)]
    assert not renaming, "\n".join(
        f"setting {name} enters the fingerprint of existing runs: add it to OMITTED_AT with the value that trains "
        f"as before, or blank it in RunConfig.resolved() (if only a new family uses it, no existing run can: add "
        f"it to FINGERPRINTED in tests/test_config.py)" for name in renaming)


def test_a_new_setting_cannot_silently_rename_existing_runs():
    check_no_setting_renames_runs()
    assert set(FINGERPRINTED) <= {f.name for f in fields(RunConfig)}


@dataclass(frozen=True)
class WithNewSettings(RunConfig):
    label_smoothing: float = setting(0.0, "a new setting on by default: every run would fingerprint it")
    ema_decay: float | None = setting(None, "a new setting that applies only when given", kind=float)


def test_the_rename_check_names_the_setting_and_the_fix(monkeypatch):
    with pytest.raises(AssertionError, match=r"setting label_smoothing enters the fingerprint of existing runs: "
                                             r"add it to OMITTED_AT .* or blank it in RunConfig.resolved\(\)") as err:
        check_no_setting_renames_runs(WithNewSettings)
    assert "ema_decay" not in str(err.value)  # None by default: it enters no existing run's fingerprint
    monkeypatch.setitem(config.OMITTED_AT, "label_smoothing", 0.0)
    check_no_setting_renames_runs(WithNewSettings)
    assert WithNewSettings(model="lstm").fingerprint() == RunConfig(model="lstm").fingerprint()


def test_the_model_settings_are_read_off_the_family_configs():
    # the settings resolved() blanks for a family whose config does not name them: what it was by hand before,
    # and the settings added since (weight_drop, io_dropout, locked_dropout, canon, canon_at, attn_gate, value_embed,
    # embed_norm)
    assert model_fields() == {"embed", "hidden", "layers", "heads", "k", "inner_layers", "activation", "norm",
                              "dropout", "tie_weights", "positional", "xlstm_ratio", "qk_norm", "qk_scale",
                              "mlp_activation", "zero_init_proj", "split_qkv", "init_range", "weight_drop", "io_dropout",
                              "locked_dropout", "canon", "canon_at", "attn_gate", "value_embed", "embed_norm"}
    assert config.MODEL_FIELDS == model_fields()
