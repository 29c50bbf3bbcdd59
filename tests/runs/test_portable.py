"""A run copied to another folder with its corpus file beside it analyses, serves and resumes there; without
the file, reading the corpus is one line naming it and where to put it."""

import json
import shutil

import pytest

from picollm.analyze.analysis import analyze_run
from picollm.config import RunConfig
from picollm.core.errors import DataError
from picollm.runs.checkpoint import load_config, load_run
from picollm.runs.layout import read_status
from picollm.serve.playground import run_rows
from picollm.train.loop import train_run


@pytest.fixture
def moved(corpus, tmp_path, monkeypatch):
    """A run trained on home/mine.txt into home/checkpoints, paused halfway and analysed there; then
    home/ is copied to elsewhere/ and removed, so the recorded corpus path no longer exists."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(corpus, home / "mine.txt")
    cfg = RunConfig(model="kgram_mlp", corpus=str(home / "mine.txt"), embed=8, hidden=16, block_size=8,
                    batch_size=4, max_steps=20, eval_interval=5, eval_tokens=512, out_dir=str(home / "checkpoints"),
                    progress=False)
    run_dir = train_run(cfg, quiet=True, stop_at_step=10)
    before = analyze_run(run_dir, tmp_path / "analysis_home", max_new_tokens=4)
    shutil.copytree(home, tmp_path / "elsewhere")
    shutil.rmtree(home)
    return cfg, tmp_path / "elsewhere" / "checkpoints" / run_dir.name, before


def test_a_moved_run_finds_its_corpus_by_name_and_content_and_analyses_the_same(moved, tmp_path):
    cfg, run_dir, before = moved
    elsewhere = run_dir.parent.parent
    assert json.loads((run_dir / "config.json").read_text())["corpus"] == cfg.corpus  # the old path, recorded
    assert load_config(run_dir).corpus == str((elsewhere / "mine.txt").resolve())
    after = analyze_run(run_dir, tmp_path / "analysis_elsewhere", max_new_tokens=4)
    assert after["test"] == before["test"]
    assert [row["run"] for row in run_rows(elsewhere / "checkpoints")] == [run_dir.name]
    assert load_run(run_dir)[3]["step"] in (5, 10)  # best.pt: generating from the moved run


def test_a_moved_run_resumes_under_the_corpus_new_path(moved):
    cfg, moved_dir, _ = moved
    elsewhere = moved_dir.parent.parent
    here = cfg.replace(corpus=str(elsewhere / "mine.txt"), out_dir=str(elsewhere / "checkpoints"))
    assert here.run_name() == moved_dir.name  # the fingerprint follows the file's content, not its path
    run_dir = train_run(here, quiet=True)
    assert run_dir == moved_dir
    status = read_status(run_dir)
    assert status["status"] == "done" and status["step"] == 20


def test_a_file_of_the_same_name_but_other_content_is_not_taken_for_it(moved, tmp_path):
    cfg, run_dir, _ = moved
    (run_dir.parent.parent / "mine.txt").write_text("other text entirely\n" * 200)
    assert load_config(run_dir).corpus == cfg.corpus
    with pytest.raises(DataError) as err:
        analyze_run(run_dir, tmp_path / "analysis_elsewhere", max_new_tokens=4)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "mine.txt" in message and "PICOLLM_CORPUS_PATH" in message
    assert load_run(run_dir)[2] is not None  # generating needs no corpus: the run still loads
