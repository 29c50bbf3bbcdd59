"""The checkpoint format: today's files (a fixture run written before the format had a version) keep loading,
generating and resuming; a newer format is one error line; what picollm writes carries FORMAT_VERSION.

tests/fixtures/run_v0 is an LSTM run on tests/fixtures/toy.txt written by picollm as of commit 6e6391d (format
version 0, no "format_version" key): trained with stop_at_step=80 of max_steps=160, so it is paused with a
last.pt to resume from. Never rewrite it: it stands for the checkpoints users already have on disk.
"""

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from picollm.analyze.generate import DecodeConfig, continuation_text, encode_prompt, generate
from picollm.core.errors import CheckpointError
from picollm.runs.checkpoint import (
    FORMAT_VERSION,
    UNKNOWN_STEP,
    load_checkpoint,
    load_config,
    load_run,
    upgrade,
    write_best,
    write_last,
)
from picollm.runs.layout import read_status
from picollm.train.loop import train_run

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUN_V0 = FIXTURES / "run_v0"
RUN_NAME = "lstm-toy-592f8749"  # the fixture's name when it was written: its fingerprint must not change
#: the greedy continuation of "the cat " (30 tokens) by the fixture's best.pt and last.pt (both at step 80), as
#: picollm generated it when the fixture was written
PROMPT = "the cat "
EXPECTED_IDS = [3, 21, 1, 3, 1, 6, 17, 9, 2, 0, 15, 24, 1, 4, 11, 19, 6, 1, 3, 1, 6, 17, 9, 2, 0, 15, 24, 1, 4, 11]
EXPECTED_TEXT = "at a dog.\nmy bird a dog.\nmy bi"
LOSS_COLUMNS = ["step", "epoch", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy",
                "grad_norm_preclip", "grad_norm_postclip", "max_param_grad", "weight_norm", "learning_rate"]


def fixture_config(out_dir: Path):
    """The fixture's RunConfig, reading its corpus from the fixture folder and writing under out_dir."""
    return replace(load_config(RUN_V0), corpus=str(FIXTURES / "toy.txt"), out_dir=str(out_dir), progress=False)


def fixture_copy(out_dir: Path) -> Path:
    run_dir = out_dir / RUN_NAME
    shutil.copytree(RUN_V0, run_dir)
    return run_dir


def test_the_fixture_is_version_0_and_small():
    raw = torch.load(RUN_V0 / "last.pt", weights_only=True)
    assert "format_version" not in raw and "carry_state" in raw and raw["step"] == 80
    assert sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file()) < 200_000


@pytest.mark.parametrize("which", ["best", "last"])
def test_the_fixture_loads_and_generates_what_it_generated_when_written(which):
    cfg, tokenizer, model, ckpt = load_run(RUN_V0, which)
    assert cfg.model == "lstm" and ckpt["step"] == 80 and ckpt["format_version"] == FORMAT_VERSION
    gen = generate(model, [encode_prompt(tokenizer, PROMPT)], DecodeConfig(max_new_tokens=30, temperature=0))[0]
    assert gen.ids == EXPECTED_IDS
    assert continuation_text(tokenizer, gen) == EXPECTED_TEXT


def test_the_fixture_resumes_as_if_never_stopped(tmp_path):
    cfg = fixture_config(tmp_path / "resumed")
    assert cfg.run_name() == RUN_NAME
    run_dir = fixture_copy(tmp_path / "resumed")
    assert read_status(run_dir)["status"] == "paused"
    assert train_run(cfg, quiet=True) == run_dir
    assert read_status(run_dir)["status"] == "done"
    resumed = pd.read_csv(run_dir / "metrics.csv")
    assert list(resumed["step"]) == list(range(0, 161, 20))
    before = pd.read_csv(RUN_V0 / "metrics.csv")
    pd.testing.assert_frame_equal(resumed.iloc[: len(before)].reset_index(drop=True), before)  # rows kept as written
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["format_version"] == FORMAT_VERSION and last["step"] == 160
    # the same run, never stopped, in the precision the fixture trained in (written before --precision: fp32)
    whole = train_run(fixture_config(tmp_path / "whole").replace(precision="fp32"), quiet=True)
    # close, not bitwise: the fixture's first 80 steps ran the code of 2026-12-01, whose loss summed the same
    # terms in another order (train_step's row layout since), and this tiny run's rounding grows over 160 steps
    # (a restart from scratch or a lost optimizer state would be off by far more)
    losses = ["step", "avg_loss", "val_loss"]
    pd.testing.assert_frame_equal(resumed[losses], pd.read_csv(whole / "metrics.csv")[losses], rtol=5e-2)
    again = fixture_copy(tmp_path / "again")  # exactly: resuming the upgraded state is deterministic
    train_run(fixture_config(tmp_path / "again"), quiet=True)
    pd.testing.assert_frame_equal(pd.read_csv(again / "metrics.csv")[LOSS_COLUMNS], resumed[LOSS_COLUMNS])


def test_a_newer_format_is_one_error_line_naming_the_fix(tmp_path):
    run_dir = fixture_copy(tmp_path)
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    torch.save({**ckpt, "format_version": FORMAT_VERSION + 1}, run_dir / "best.pt")
    with pytest.raises(CheckpointError, match="upgrade picollm") as err:
        load_run(run_dir)
    assert len(str(err.value).splitlines()) == 1 and f"format version {FORMAT_VERSION + 1}" in str(err.value)
    cli = subprocess.run([sys.executable, "-m", "picollm", "generate", "--run", str(run_dir)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert cli.returncode == 2 and cli.stderr.startswith("error:") and "upgrade picollm" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
    torch.save({**ckpt, "format_version": "1"}, run_dir / "best.pt")
    with pytest.raises(CheckpointError, match="invalid format_version"):
        load_checkpoint(run_dir / "best.pt")


def test_what_picollm_writes_carries_the_format_version(tmp_path):
    weights = {"w": torch.ones(2)}
    write_best(tmp_path, model=weights, step=3, val_loss=1.5, fingerprint="f")
    write_last(tmp_path, model=weights, optimizer={}, train_state={"step": 3}, metrics=[], train_log=[],
               carry_state=None, rng={"torch": torch.get_rng_state(), "cuda": None}, step=3, fingerprint="f")
    best, last = (torch.load(tmp_path / f"{w}.pt", weights_only=True) for w in ("best", "last"))
    assert torch.equal(best.pop("model")["w"], weights["w"])
    assert best == {"format_version": FORMAT_VERSION, "step": 3, "val_loss": 1.5, "fingerprint": "f"}
    assert last["format_version"] == FORMAT_VERSION and last["train_log"] == [] and last["step"] == 3
    # a version-0 file read today has exactly the keys of a file written today
    assert set(load_checkpoint(RUN_V0 / "best.pt")) == set(best) | {"model"}
    assert set(load_checkpoint(RUN_V0 / "last.pt")) == set(last)


def test_version_0_dicts_upgrade_to_the_current_shape(tmp_path):
    path = tmp_path / "x.pt"
    bare = upgrade({"model": {}}, path)  # a hand-made weights file: nothing but the model
    assert bare == {"model": {}, "step": UNKNOWN_STEP, "fingerprint": None, "format_version": FORMAT_VERSION}
    old_last = upgrade({"model": {}, "optimizer": {}, "rng": {"torch": torch.get_rng_state()}, "step": 5,
                        "fingerprint": "f"}, path)  # before train_log.csv existed
    assert old_last["train_log"] == [] and old_last["rng"]["cuda"] is None and old_last["step"] == 5
    current = {"model": {}, "step": 7, "fingerprint": "f", "format_version": FORMAT_VERSION}
    assert upgrade(dict(current), path) == current
