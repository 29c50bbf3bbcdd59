"""Analysis: one run's files and test evaluation, the summary table (schema, skip_existing, workers, crash and
concurrency safety), unfinished and corrupt runs, and the two scripts."""

import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import toy_sentences

import picollm.analyze.analysis as analysis
from picollm.analyze.analysis import GENERATION_COLUMNS, STRATEGIES, analyze_all, frequency_buckets
from picollm.config import RunConfig
from picollm.core import resources
from picollm.core.errors import CheckpointError
from picollm.core.log import get_logger
from picollm.data.batching import prepare_data
from picollm.runs.checkpoint import load_run
from picollm.runs.table import TABLE_COLUMNS, TIMING_COLUMNS, read_table, update_table
from picollm.train.evaluate import evaluate
from picollm.train.loop import train_run

REPO = Path(__file__).resolve().parents[2]
NEW_TOKENS = 8
# tiny models are fastest on one thread (and a busy machine makes two threads much slower still)
FAST = dict(max_new_tokens=NEW_TOKENS, threads=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> list[Path]:
    """Four tiny finished runs: kgram_mlp, lstm, transformer, and a second lstm seed (the 'new run')."""
    rng = random.Random(0)
    lines = toy_sentences(1200)
    lines += ["Zyx!"] * 40  # a few rare characters, so every frequency bucket is used
    rng.shuffle(lines)
    root = tmp_path_factory.mktemp("ana")
    corpus = root / "toy.txt"
    corpus.write_text("\n".join(lines) + "\n")
    return [
        train_run(RunConfig(corpus=str(corpus), model=family, embed=16, hidden=32, layers=1, heads=2, block_size=16,
                            batch_size=8, max_steps=20, eval_interval=10, eval_tokens=1024, warmup_steps=5, lr=1e-2,
                            seed=seed, threads=1, out_dir=str(root / "checkpoints"), progress=False), quiet=True)
        for family, seed in [("kgram_mlp", 1), ("lstm", 1), ("transformer", 1), ("lstm", 2)]
    ]


def runs_in(ck: Path) -> list[Path]:
    return sorted(p for p in ck.iterdir() if p.is_dir())


def subset(trained: list[Path], dest: Path, indices: list[int]) -> Path:
    """A private checkpoints dir holding copies of some of the trained runs (mtimes kept)."""
    dest.mkdir(parents=True)
    for i in indices:
        shutil.copytree(trained[i], dest / trained[i].name)
    return dest


@pytest.fixture(scope="module")
def base(trained, tmp_path_factory) -> tuple[Path, Path, pd.DataFrame]:
    """(checkpoints, out_root, table): the first three runs analysed with one worker. Read-only for tests."""
    root = tmp_path_factory.mktemp("base")
    ck = subset(trained, root / "checkpoints", [0, 1, 2])
    table = analyze_all(ck, root / "out", workers=1, **FAST)
    return ck, root / "out", table


def run_cmd(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------------
def test_run_analysis_writes_generations_curves_and_summary(base):
    ck, out_root, table = base
    run = next(p for p in runs_in(ck) if p.name.startswith("transformer"))
    out = out_root / run.name
    assert (out / "metrics_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())

    gens = pd.read_csv(out / "generations.csv")
    assert list(gens.columns) == GENERATION_COLUMNS
    n_prompts = len(summary["prompts"])
    assert n_prompts >= 2 and len(gens) == 2 * len(STRATEGIES) * n_prompts  # best and last checkpoints
    assert set(gens["checkpoint"]) == {"best", "last"} and set(gens["strategy"]) == set(STRATEGIES)
    assert set(gens["step"]) == {summary["checkpoints"]["best"], summary["checkpoints"]["last"]}
    assert gens["distinct_1"].between(0, 1).all() and (gens["mean_logprob"] < 0).all()
    assert json.loads(gens.loc[gens["strategy"] == "beam", "decoding_params"].iloc[0])["beam"] == 4

    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == len(gens)
    for r in records:
        assert 0 < len(r["annotation"]) == len(r["ids"]) <= NEW_TOKENS
        assert all(len(a["alternatives"]) == 5 and len(a["neighbours"]) == 5 for a in r["annotation"])
        assert r["mean_logprob"] == pytest.approx(sum(a["logprob"] for a in r["annotation"]) / len(r["ids"]),
                                                  abs=1e-3)

    assert summary["status"]["status"] == "done" and "val_loss" in summary["final_metrics"]
    row = summary["row"]
    assert sorted(row) == sorted(TABLE_COLUMNS) and summary["config"]["fingerprint"] == row["fingerprint"]
    cfg, _, _, best = load_run(run)
    assert row["learning_rate"] == cfg.lr == row["lr"] and row["k"] is None  # the transformer ignores k
    assert row["val_loss"] == pytest.approx(best["val_loss"]) and row["best_step"] == best["step"]
    assert row["steps"] == 20 and row["status"] == "done" and row["params"] > 0
    assert table.set_index("run").loc[run.name, "test_loss"] == pytest.approx(row["test_loss"])


def test_frequency_buckets_use_the_documented_edges():
    train = torch.repeat_interleave(torch.arange(5), torch.tensor([0, 99, 100, 1000, 1001]))
    assert frequency_buckets(train, 6).tolist() == [0, 0, 1, 1, 2, 0]  # token 5 never seen: rare


def test_test_evaluation_covers_the_whole_split_and_buckets_add_up(base):
    ck, out_root, _ = base
    for run in runs_in(ck):
        test = json.loads((out_root / run.name / "summary.json").read_text())["test"]
        cfg, tok, model, _ = load_run(run)
        splits = prepare_data(cfg.corpus, tok.kind, tokenizer=tok)[1]
        B = cfg.batch_size
        assert test["test_tokens"] == B * (len(splits["test"]) // B - 1)  # every stream position but the last
        buckets = [test[f"test_tokens_{b}"] for b in analysis.BUCKETS]
        assert sum(buckets) == test["test_tokens"] and all(n > 0 for n in buckets)
        direct = evaluate(model, splits["test"], B, cfg.block_size, torch.device("cpu"))
        assert test["test_loss"] == pytest.approx(direct["loss"], rel=1e-6)
        assert test["test_acc"] == pytest.approx(direct["accuracy"], rel=1e-6)
        # the bucket perplexities are consistent with the overall loss (token-weighted mean of log-ppl)
        pooled = sum(n * torch.tensor(test[f"test_ppl_{b}"]).log().item()
                     for b, n in zip(analysis.BUCKETS, buckets)) / test["test_tokens"]
        assert pooled == pytest.approx(test["test_loss"], rel=1e-5)


# --------------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------------
def test_table_schema_skip_existing_and_new_runs(base, trained, tmp_path):
    ck0, out0, first = base
    names = [p.name for p in runs_in(ck0)]
    assert list(first.columns) == TABLE_COLUMNS and list(first["run"]) == names
    assert sorted(first.attrs["tally"]["analyzed"]) == names and not first.attrs["tally"]["failed"]

    ck = Path(shutil.copytree(ck0, tmp_path / "checkpoints"))
    out = Path(shutil.copytree(out0, tmp_path / "out"))
    again = analyze_all(ck, out, workers=1, **FAST)
    assert again.attrs["tally"]["analyzed"] == [] and sorted(again.attrs["tally"]["up_to_date"]) == names
    pd.testing.assert_frame_equal(again, first)

    stale = runs_in(ck)[0]
    past = time.time() - 3600
    os.utime(out / stale.name / "summary.json", (past, past))  # the run was retrained after its analysis
    new = trained[3]
    shutil.copytree(new, ck / new.name)
    third = analyze_all(ck, out, workers=1, **FAST)
    assert sorted(third.attrs["tally"]["analyzed"]) == sorted([stale.name, new.name])
    assert list(third["run"]) == sorted(names + [new.name])
    kept = [c for c in TABLE_COLUMNS if c not in TIMING_COLUMNS and c != "run_dir"]  # a copy
    pd.testing.assert_frame_equal(third[third["run"] != new.name][kept].reset_index(drop=True), first[kept])

    (out / "runs.csv").unlink()  # a lost table is rebuilt from the summaries, without re-analysis
    rebuilt = analyze_all(ck, out, workers=1, **FAST)
    assert rebuilt.attrs["tally"]["analyzed"] == []
    pd.testing.assert_frame_equal(rebuilt, third)


def test_two_workers_give_the_same_table_and_generations(base, tmp_path):
    ck, out1, one = base
    two = analyze_all(ck, tmp_path / "w2", workers=2, **FAST)
    assert sorted(two.attrs["tally"]["analyzed"]) == sorted(one["run"]) and not two.attrs["tally"]["failed"]
    timing = list(TIMING_COLUMNS)
    pd.testing.assert_frame_equal(one.drop(columns=timing), two.drop(columns=timing), check_exact=False, rtol=1e-6)
    for run in one["run"]:
        g1 = pd.read_csv(out1 / run / "generations.csv")
        g2 = pd.read_csv(tmp_path / "w2" / run / "generations.csv")
        pd.testing.assert_frame_equal(g1, g2, check_exact=False, rtol=1e-6)


def test_unfinished_run_is_skipped_and_corrupt_run_fails_on_one_line(trained, tmp_path):
    ck = subset(trained, tmp_path / "checkpoints", [0])
    good = runs_in(ck)[0]
    unfinished = ck / "lstm-toy-unfinished"
    unfinished.mkdir()
    shutil.copy(good / "config.json", unfinished)
    (unfinished / "status.json").write_text(json.dumps({"status": "running", "reason": "training"}))
    corrupt = Path(shutil.copytree(good, ck / "zz-corrupt"))
    data = (corrupt / "best.pt").read_bytes()
    (corrupt / "best.pt").write_bytes(data[: len(data) // 2])  # half-written
    no_config = Path(shutil.copytree(good, ck / "zz-noconfig"))
    (no_config / "config.json").unlink()

    table = analyze_all(ck, tmp_path / "out", workers=1, **FAST)
    tally = table.attrs["tally"]
    assert list(tally["skipped"]) == [unfinished.name] and "running" in tally["skipped"][unfinished.name]
    assert set(tally["failed"]) == {corrupt.name, no_config.name}
    assert "corrupt" in tally["failed"][corrupt.name] and "config.json" in tally["failed"][no_config.name]
    assert all("\n" not in msg for msg in tally["failed"].values())
    assert list(table["run"]) == [good.name]

    cli = run_cmd(["analyze_checkpoints.py", "--run", str(corrupt), "--out", str(tmp_path / "o2")])
    assert one_line_error(cli) and "best.pt" in cli.stderr
    batch = run_cmd(["analyze_all_checkpoints.py", "--checkpoints", str(ck), "--out", str(tmp_path / "out"),
                     "--threads", "1"])
    assert batch.returncode == 1  # failures are reported in the exit code
    assert "2 failed" in batch.stdout + batch.stderr and "Traceback" not in batch.stderr


def test_a_run_failing_mid_batch_leaves_the_other_rows(trained, tmp_path, monkeypatch):
    ck = subset(trained, tmp_path / "checkpoints", [0, 1, 2])
    out = tmp_path / "out"
    runs = runs_in(ck)
    update_table(out / "runs.csv", [{"run": "aaa-older-run", "params": 1}])
    real = analysis.analyze_run

    def flaky(run_dir, *args, **kwargs):
        if Path(run_dir).name == runs[1].name:
            raise RuntimeError("simulated bug")
        return real(run_dir, *args, **kwargs)

    monkeypatch.setattr(analysis, "analyze_run", flaky)
    table = analyze_all(ck, out, workers=1, **FAST)
    assert list(table.attrs["tally"]["failed"]) == [runs[1].name]
    assert "simulated bug" in table.attrs["tally"]["failed"][runs[1].name]
    assert list(table["run"]) == ["aaa-older-run", runs[0].name, runs[2].name]


def test_each_run_gets_the_threads_other_jobs_leave_and_workers_are_capped(trained, tmp_path, monkeypatch):
    ck = subset(trained, tmp_path / "checkpoints", [0, 1])
    monkeypatch.setenv(resources.JOBS_DIR_ENV, str(tmp_path / "jobs"))  # only the jobs this test starts
    monkeypatch.setattr(resources, "cpu_cores", lambda: 4)
    seen, later = [], contextlib.ExitStack()

    def spy(run_dir, *args, **kwargs):  # the torch threads a run's analysis gets, without the analysis
        seen.append(torch.get_num_threads())
        if on_first_run and len(seen) == 1:
            on_first_run()
        raise CheckpointError("spied")

    def threads(on_first=None, **kwargs) -> list[int]:
        nonlocal on_first_run
        seen.clear()
        on_first_run = on_first
        analyze_all(ck, tmp_path / "out", max_new_tokens=NEW_TOKENS, **{"workers": 1, **kwargs})
        return list(seen)

    on_first_run = None
    monkeypatch.setattr(analysis, "analyze_run", spy)
    before = torch.get_num_threads()
    assert threads() == [4, 4]  # alone: the whole machine
    with resources.registered("batch", 1):
        assert threads() == [2, 2]  # beside another one-process job: half each
        assert threads(threads=3) == [3, 3]  # an explicit --threads wins
    with later:  # a job that starts during the analysis: the next run gets the share that is left
        assert threads(on_first=lambda: later.enter_context(resources.registered("batch", 3))) == [4, 1]
    assert torch.get_num_threads() == before

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger, level = get_logger(), get_logger().level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    monkeypatch.setattr(resources, "cpu_cores", lambda: 1)
    try:
        assert threads(workers=8) == [1, 1]  # capped at 1 worker: analysed in this process
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    notes = [r.getMessage() for r in records if "--workers 8 > 1 cores" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0]


def test_a_crash_loses_no_finished_row(trained, tmp_path):
    ck = subset(trained, tmp_path / "checkpoints", [0, 1])
    out = tmp_path / "out"
    runs = runs_in(ck)
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        import picollm.analyze.analysis as a
        real = a.analyze_run
        def dies(run_dir, *args, **kwargs):
            if Path(run_dir).name == {runs[1].name!r}:
                os._exit(3)  # killed: no cleanup, no exception handling
            return real(run_dir, *args, **kwargs)
        a.analyze_run = dies
        a.analyze_all({str(ck)!r}, {str(out)!r}, workers=1, max_new_tokens={NEW_TOKENS}, threads=1)
    """)
    proc = run_cmd(["-c", script])
    assert proc.returncode == 3, proc.stderr
    assert list(read_table(out / "runs.csv")["run"]) == [runs[0].name]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_concurrent_writers_do_not_lose_rows(tmp_path):
    path = tmp_path / "runs.csv"
    script = textwrap.dedent("""
        import sys
        from picollm.runs.table import update_table
        tag = sys.argv[1]
        for i in range(25):
            update_table(sys.argv[2], [{"run": f"{tag}-{i:02d}", "params": i, "test_loss": 0.5 * i}])
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, tag, str(path)], env=env, stderr=subprocess.PIPE)
             for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    table = read_table(path)
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["run"]) == [f"{t}-{i:02d}" for t in "ab" for i in range(25)]
    assert table["test_loss"].tolist() == [0.5 * i for _ in "ab" for i in range(25)]


# --------------------------------------------------------------------------------------------------
# scripts
# --------------------------------------------------------------------------------------------------
def test_scripts_run_and_report_missing_directories(trained, tmp_path):
    ck = subset(trained, tmp_path / "checkpoints", [0])
    run = runs_in(ck)[0]
    ok = run_cmd([str(REPO / "analyze_checkpoints.py"), "--run", str(run), "--out", str(tmp_path / "out"),
                  "--max_new_tokens", "5"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    summary = tmp_path / "out" / run.name / "summary.json"
    assert summary.exists() and "test loss" in ok.stdout
    before = summary.stat().st_mtime_ns
    again = run_cmd([str(REPO / "analyze_all_checkpoints.py"), "--checkpoints", str(ck), "--out",
                     str(tmp_path / "out"), "--workers", "2", "--no-skip_existing", "--max_new_tokens", "5"],
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert summary.stat().st_mtime_ns > before  # --no-skip_existing re-analysed the up-to-date run
    assert list(read_table(tmp_path / "out" / "runs.csv")["run"]) == [run.name]
    for args in (["analyze_checkpoints.py", "--run", str(tmp_path / "missing")],
                 ["analyze_all_checkpoints.py", "--checkpoints", str(tmp_path / "missing")]):
        bad = run_cmd([str(REPO / args[0]), *args[1:]], cwd=tmp_path)
        assert one_line_error(bad) and "missing" in bad.stderr


def test_analyze_checkpoints_with_influence_writes_fisher_and_influence_files(trained, tmp_path):
    run = trained[0]  # the K-gram MLP
    out = tmp_path / "out"
    res = run_cmd([str(REPO / "analyze_checkpoints.py"), "--run", str(run), "--out", str(out), "--max_new_tokens", "3",
                   "--influence", "--influence_n_train", "8", "--influence_n_test", "2", "--influence_steps", "5",
                   "--influence_lanczos_steps", "5"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Fisher trace" in res.stdout
    for name in ["fisher_layers.csv", "fisher_layers.png", "influence_top.csv", "influence.json"]:
        assert (out / run.name / name).stat().st_size > 0, name
    top = pd.read_csv(out / run.name / "influence_top.csv")
    assert set(top["kind"]) == {"helpful", "harmful"} and top["test_index"].nunique() == 2


def test_a_run_with_a_moving_average_draws_both_validation_curves(tmp_path):
    from picollm.runs.layout import METRIC_COLUMNS

    plain = pd.DataFrame({c: [0.0, 10.0] if c == "step" else [5.0, 3.0] for c in METRIC_COLUMNS})
    averaged = plain.assign(val_loss_raw=[5.0, 3.4])
    assert [c for c, _, _ in analysis.validation_series(plain)] == ["val_loss"]
    assert [c for c, _, _ in analysis.validation_series(averaged)] == ["val_loss", "val_loss_raw"]
    analysis.plot_metrics(averaged, tmp_path / "metrics_curve.png", "a run with --ema")
    assert (tmp_path / "metrics_curve.png").read_bytes()[:4] == b"\x89PNG"
