"""The Python API a notebook uses: picollm.load_runs, picollm.load_run, picollm.train_run."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import picollm
from picollm.analyze.analysis import analyze_all
from picollm.core.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_api_imports_neither_torch_nor_matplotlib():
    code = ("import sys, picollm; print(picollm.load_runs, picollm.load_run, picollm.train_run); "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Two tiny runs trained through picollm.train, and their analysis."""
    root = tmp_path_factory.mktemp("api")
    tiny = dict(corpus=corpus, block_size=16, batch_size=8, max_steps=20, eval_interval=10, eval_tokens=1024,
                out_dir=str(root / "checkpoints"), progress=False)
    runs = [picollm.train_run(model="kgram_mlp", embed=8, hidden=16, **tiny),
            picollm.train_run(model="lstm", embed=8, hidden=16, layers=1, **tiny)]
    analyze_all(root / "checkpoints", root / "analysis_runs", workers=1, max_new_tokens=4)
    return root, runs


def test_load_runs_is_the_table_of_all_runs_with_numbers_as_numbers(trained):
    root, runs = trained
    table = picollm.load_runs(root / "analysis_runs")
    assert sorted(table["run"]) == sorted(r.name for r in runs)
    assert pd.api.types.is_float_dtype(table["val_loss"]) and pd.api.types.is_numeric_dtype(table["params"])
    with pytest.raises(CheckpointError, match="picollm analyze-all"):
        picollm.load_runs(root / "nowhere")


def test_load_run_has_its_settings_curves_and_model_and_generates_what_the_command_prints(trained):
    _, runs = trained
    run = picollm.load_run(runs[1])
    assert run.config.model == "lstm" and run.name == runs[1].name and run.step in (10, 20)
    assert list(run.metrics["step"]) == [0, 10, 20] and run.train_log is not None
    assert run.model.num_params() > 0 and run.tokenizer.vocab_size > 0
    text = run.generate("the cat", max_new_tokens=12, temperature=0)
    printed = subprocess.run([sys.executable, "-m", "picollm", "generate", "--run", str(runs[1]), "--prompt",
                              "the cat", "--max_new_tokens", "12", "--temperature", "0"],
                             capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert text.startswith("the cat") and printed.splitlines()[1:] == text.splitlines()
    assert picollm.load_run(runs[1], "last").step == 20
    with pytest.raises(CheckpointError, match="'best' or 'last'"):
        picollm.load_run(runs[1], "middle")


def test_train_run_of_a_finished_config_trains_nothing_and_returns_its_directory(trained):
    _, runs = trained
    assert picollm.train_run(picollm.load_run(runs[0]).config) == runs[0]  # a RunConfig works as well
