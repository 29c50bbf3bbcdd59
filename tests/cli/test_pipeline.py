"""auto_train_then_analyze.py end to end: every family trained, analysed, summarised; a re-run does nothing."""

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from picollm.models import default_families

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = default_families()  # what the commands train when no --models are given
#: one run per family, and a second K-gram MLP (two runs of a family: its own plots)
CONFIGS = [{"model": family} for family in FAMILIES] + [{"model": "kgram_mlp", "k": 2, "activation": "relu"}]


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    """A tiny space over a small learnable corpus: every family, a few dozen steps each."""
    tmp = tmp_path_factory.mktemp("space")
    rng = random.Random(0)
    words, verbs = ["the cat", "a dog", "my bird", "one fish"], ["sat on", "ran to", "looked at", "jumped over"]
    lines = [f"{rng.choice(words)} {rng.choice(verbs)} {rng.choice(words)}." for _ in range(1500)]
    (tmp / "toy.txt").write_text("\n".join(lines) + "\n")
    spec = {"description": "test: every family, tiny",
            "base": {"corpus": str(tmp / "toy.txt"), "embed": 16, "hidden": 32, "layers": 1, "heads": 2,
                     "block_size": 16, "batch_size": 8, "max_steps": 40, "eval_interval": 20, "eval_tokens": 2048,
                     "warmup_steps": 5, "lr": 1e-2},
            "configs": CONFIGS,
            "sampler": "grid"}
    (tmp / "space.json").write_text(json.dumps(spec))
    return tmp / "space.json"


def pipeline(work: Path, space: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "auto_train_then_analyze.py"), "--space", str(space), "--workers", "2",
           "--out_dir", "ck", "--analysis_dir", "ar", "--log_dir", "logs", "--max_new_tokens", "12"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def snapshot(*dirs: Path) -> dict[str, int]:
    """path -> mtime_ns of every file under dirs."""
    return {str(p): p.stat().st_mtime_ns for d in dirs for p in d.rglob("*") if p.is_file()}


def test_pipeline_end_to_end_then_rerun_does_nothing(tmp_path, space):
    proc = pipeline(tmp_path, space)
    output = proc.stdout + proc.stderr
    ck, ar = tmp_path / "ck", tmp_path / "ar"

    table = pd.read_csv(ar / "runs.csv")
    assert sorted(table["model"].unique()) == sorted(FAMILIES) and len(table) == len(CONFIGS)
    assert (table["status"] == "done").all()
    assert (table["val_loss"] < table["initial_val_loss"]).all()
    for run in table["run"]:
        for name in ["config.json", "status.json", "metrics.csv", "tokenizer.json", "best.pt", "last.pt"]:
            assert (ck / run / name).stat().st_size > 0, (run, name)
        for name in ["summary.json", "generations.jsonl", "generations.csv", "metrics_curve.png"]:
            assert (ar / run / name).stat().st_size > 0, (run, name)
    for name in ["pareto_val_loss_vs_params.png", "pareto_val_loss_vs_token_accuracy.csv",
                 "joint_kde_token_accuracy_vs_val_loss.png", "box_val_loss_by_family.png", "correlation_matrix.png",
                 "heatmap_lstm_embed_x_hidden.png", "top10.md", "regression_summary.txt"]:
        assert (ar / "plots" / name).stat().st_size > 0, name
    html = (ar / "index.html").read_text()
    assert all(run in html for run in table["run"])
    assert all('class="tok"' in (ar / run / "index.html").read_text() for run in table["run"])  # its own page
    for stage in ["batch", "analyze", "summary"]:
        assert list((tmp_path / "logs").glob(f"*-{stage}.log")), stage
    assert proc.stdout.strip().splitlines()[-1] == f"report: {(ar / 'index.html').resolve()}"
    for fam in FAMILIES:
        assert f"{fam}" in output and "DID NOT LEARN" not in output

    before = snapshot(ck, ar)
    again = pipeline(tmp_path, space)
    after = snapshot(ck, ar)
    changed = sorted(p for p in before if after.get(p) != before[p] and not p.endswith("index.html"))
    assert changed == [], changed  # no checkpoint, metric, analysis or plot was rewritten
    assert f"0 trained, {len(CONFIGS)} already finished" in again.stdout + again.stderr
    assert f"0 analysed, {len(CONFIGS)} up to date" in again.stdout + again.stderr


def tree_state(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and 'dir' for every directory) under root."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", ["formula_syntax", "formula_unknown_column", "formula_text_arithmetic",
                                  "malformed_table", "max_new_tokens"])
def test_bad_input_fails_before_anything_trains(tmp_path, case):
    ck, ar, logs = tmp_path / "ck", tmp_path / "ar", tmp_path / "logs"
    args = ["--fast", "--out_dir", str(ck), "--analysis_dir", str(ar), "--log_dir", str(logs)]
    if case == "formula_syntax":
        args, words = args + ["--formula", "val_loss ~~ (("], ["--formula", "exactly one '~'"]
    elif case == "formula_unknown_column":
        args, words = args + ["--formula", "val_loss ~ np.log(parms)"], ["unknown column parms", "did you mean params"]
    elif case == "formula_text_arithmetic":
        args, words = args + ["--formula", "val_loss ~ np.log(status)"], ["--formula", "inside C(...)"]
    elif case == "malformed_table":  # analysis would add rows to it after training, then fail on it
        ar.mkdir()
        (ar / "runs.csv").write_text("run,model,val_loss\nlstm-a,lstm,2.5\ngpt-b,gpt,2.1\n")
        words = [str(ar / "runs.csv"), "line 3", "'gpt'"]
    else:
        args, words = args + ["--max_new_tokens", "-1"], ["--max_new_tokens"]
    before = tree_state(tmp_path)
    proc = subprocess.run([sys.executable, "auto_train_then_analyze.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and all(w in lines[0] for w in words), (words, lines[0])
    assert not ck.exists() and not logs.exists()  # nothing trained, nothing logged
    assert tree_state(tmp_path) == before
