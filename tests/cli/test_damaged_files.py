"""Damaged files, one at a time, through the commands that read them (issue 26, item 1).

A workspace with two trained and analysed runs, A and B, is made once. Each case copies it, damages one file the
way files get damaged (emptied, cut off mid-write, replaced by another format, or the right format with a key or
column missing or of the wrong type), runs the command that reads the file and checks how it ends:

    error      the file is the command's whole input: exit 2 and one `error:` line naming the file and the fix
    failed     the file is one run's among many: that run fails with the reason, and the other run goes on
    listed     the playground's run list shows the run as corrupt, with the reason, and the other run as it is
    tolerated  a file only a finer view needs (train_log.csv, a last metrics row cut off): the command succeeds
    rebuilt    a file made from others (runs.csv beside its database, curves.js, summary.json): made again
    repaired   a run the batch resumes from its last.pt, which rewrites the damaged file from what it holds
    ignored    a file nothing reads back (an earlier batch's manifest): left as it is
    fresh      an empty Optuna journal: the search starts as if there were none (finished runs are not retrained)

In every case there is no traceback, and nothing good is overwritten: every file the command may not write
(the checkpoints of the other run, the analysis of a run it does not analyse, the table when the command fails)
is byte-identical afterwards, and so is the damaged file itself unless it is rebuilt or repaired.

The commands run in this process through the real entry point (`picollm COMMAND ...` via run_cli, as
`python -m picollm` runs them); a few run as the scripts in a subprocess, and the playground's list and the
report are called as the library functions behind them. A batch that must resume a run starts a worker process.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from damages import (
    Damage,
    Outcome,
    cut,
    digest,
    drop,
    edit_csv,
    edit_json,
    edit_pt,
    empty,
    png,
    restore_logging,  # noqa: F401 (a fixture: usefixtures below)
    run_picollm,
    run_script,
    sqlite_db,
    text,
    text_column,
)

from picollm.analyze.analysis import analyze_all
from picollm.config import RunConfig
from picollm.runs.layout import INTERRUPTED_REASON, read_status, write_status
from picollm.serve.playground import ModelCache, RequestError, run_rows
from picollm.study.report import write_report
from picollm.sweep.jobs import run_job
from picollm.sweep.manifest import Manifest
from picollm.train.loop import train_run

SPACE = {"base": {"model": "kgram_mlp", "embed": 16, "hidden": 32, "block_size": 16, "batch_size": 8,
                  "max_steps": 20, "eval_interval": 10, "eval_tokens": 1024},
         "choices": {"lr": [0.01, 0.003]}}
EARLIER_MANIFEST = "logs/20000101-000000-batch.json"
JOURNAL = "checkpoints/.optuna/space.journal"  # the space file is space.json: its study is named "space"
JOURNAL_TEXT = '{"op_code": 0, "worker_id": "w", "study_name": "space", "directions": [1]}\n'  # creates it


# --------------------------------------------------------------------------------------------------
# the workspace, made once
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus) -> tuple[Path, dict[str, str], dict]:
    """(workspace, {"A": run name, "B": run name}, run A's config): the space file, two runs trained from it
    and analysed, the report, an earlier batch's manifest and an Optuna journal."""
    ws = tmp_path_factory.mktemp("trained")
    space = {**SPACE, "base": {**SPACE["base"], "corpus": corpus}}
    (ws / "space.json").write_text(json.dumps(space, indent=1))
    configs = [RunConfig(**space["base"], lr=lr, out_dir="checkpoints", progress=False)
               for lr in space["choices"]["lr"]]
    with contextlib.chdir(ws):  # the table records the run directories relative to it: a copy reads its own
        names = {key: train_run(cfg, quiet=True).name for key, cfg in zip("AB", configs)}
        analyze_all("checkpoints", "analysis_runs", max_new_tokens=4)
        write_report("analysis_runs")
    with contextlib.closing(sqlite3.connect(ws / "analysis_runs" / "runs.sqlite")) as con:
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # every row in runs.sqlite itself
    assert not busy
    manifest = Manifest(ws / "checkpoints", ws / EARLIER_MANIFEST, {"space": "space"})
    for cfg in configs:
        manifest.register(cfg, "grid")
    (ws / "logs").mkdir()
    manifest.write(finished=True)
    _journal(ws)
    return ws, names, configs[0].to_dict()


def _journal(ws: Path) -> None:
    """The Optuna journal of a search over the space that has asked for one config (a run on disk: told)."""
    from picollm.sweep.space import load_space
    from picollm.sweep.tuning import open_search, suggest_point

    out_dir = str(ws / "checkpoints")
    search = open_search(ws / "checkpoints", load_space(path=ws / "space.json"), "tpe", 0, "none", ["val_loss"],
                         prepare=lambda cfg: cfg.replace(out_dir=out_dir, progress=False))
    trial = search.optuna_study.ask()
    cfg = RunConfig(**suggest_point(trial, search.space)).replace(out_dir=out_dir, progress=False)
    trial.set_user_attr("config", json.dumps(cfg.to_dict()))  # as OptunaSearch.ask records it
    assert search.place(trial, cfg) is None  # finished on disk: told its result


# --------------------------------------------------------------------------------------------------
# the cases: (file, damage, command, ending, fragment)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    file: str
    """the damaged file, relative to the workspace ({A}, {B}: the runs' names)"""
    damage: str
    how: Damage
    command: str
    """a `picollm` command line; or playground / report / worker (the library behind them); script: a subprocess"""
    ending: str
    fragment: str = ""
    """what the error line, the run's reason or the command's output says"""
    setup: str = ""
    """alone: runs.sqlite removed first (a runs.csv of an older analysis); interrupted: run A stopped mid-way;
    new search: no Optuna journal yet (the search finds both runs on disk)"""


ANALYZE = "analyze --run checkpoints/{A} --out analysis_runs --max_new_tokens 4"
ANALYZE_ALL = "analyze-all --checkpoints checkpoints --out analysis_runs --max_new_tokens 4"
GENERATE = "generate --run checkpoints/{A} --prompt the --max_new_tokens 4"
SUMMARIZE = "summarize --analysis_dir analysis_runs"
BATCH = "batch --space space.json --out_dir {ws}/checkpoints"
TPE = BATCH + " --sampler tpe --n_runs 1"
DB, CSV = "analysis_runs/runs.sqlite", "analysis_runs/runs.csv"
CONFIG, STATUS, METRICS = "checkpoints/{A}/config.json", "checkpoints/{A}/status.json", "checkpoints/{A}/metrics.csv"
LOG, TOKENIZER = "checkpoints/{A}/train_log.csv", "checkpoints/{A}/tokenizer.json"
BEST, LAST = "checkpoints/{A}/best.pt", "checkpoints/{A}/last.pt"
SUMMARY, CURVES = "analysis_runs/{A}/summary.json", "analysis_runs/curves.js"
REBUILD_DB = "delete it and run `picollm analyze-all` again to rebuild it"

CASES = [
    # the table of all runs: the whole input of the summary (and of the analysis's bookkeeping)
    Case(DB, "empty", empty, SUMMARIZE, "error", REBUILD_DB),
    Case(DB, "cut off", cut, ANALYZE_ALL, "error", REBUILD_DB),
    Case(DB, "PNG", png, SUMMARIZE, "error", REBUILD_DB),
    Case(DB, "CSV", text("run,model\na,lstm\n"), "script:analyze_all_checkpoints.py --max_new_tokens 4", "error",
         REBUILD_DB),
    Case(DB, "no runs table", sqlite_db("CREATE TABLE other (x)"), "script:total_summary_analysis.py", "error",
         REBUILD_DB),
    Case(DB, "cells not JSON", sqlite_db("CREATE TABLE runs (run TEXT PRIMARY KEY, cells TEXT NOT NULL)",
                                         "INSERT INTO runs VALUES ('a', 'x,y')"), SUMMARIZE, "error", REBUILD_DB),
    Case(DB, "cells a JSON list", sqlite_db("CREATE TABLE runs (run TEXT PRIMARY KEY, cells TEXT NOT NULL)",
                                            "INSERT INTO runs VALUES ('a', '[1, 2]')"), ANALYZE_ALL, "error",
         REBUILD_DB),
    # runs.csv beside its database is only the database's export: made again
    Case(CSV, "cut off", cut, ANALYZE_ALL, "rebuilt"),
    Case(CSV, "PNG", png, SUMMARIZE, "rebuilt"),
    # runs.csv alone (an older analysis, or one written by hand) is the table itself
    Case(CSV, "empty", empty, SUMMARIZE, "error", "is empty", setup="alone"),
    Case(CSV, "cut off", cut, SUMMARIZE, "error", "fields like the header", setup="alone"),
    Case(CSV, "PNG", png, ANALYZE_ALL, "error", "is not UTF-8", setup="alone"),
    Case(CSV, "JSON", text('{"run": "a"}\n'), SUMMARIZE, "error", "has no run, model, val_loss column",
         setup="alone"),
    Case(CSV, "no val_loss column", edit_csv(lambda df: df.drop(columns="val_loss")), SUMMARIZE, "error",
         "has no val_loss column", setup="alone"),
    Case(CSV, "val_loss text", edit_csv(text_column("val_loss")), ANALYZE_ALL, "error",
         "val_loss is not a number", setup="alone"),
    # a run's config.json
    Case(CONFIG, "empty", empty, ANALYZE_ALL, "failed", "config.json is corrupt"),
    Case(CONFIG, "cut off", cut, ANALYZE, "error", "config.json is corrupt"),
    Case(CONFIG, "PNG", png, "playground", "listed", "config.json is corrupt"),
    Case(CONFIG, "CSV", text("model,lr\nlstm,0.1\n"), ANALYZE_ALL, "failed", "config.json is corrupt"),
    Case(CONFIG, "JSON list", edit_json(lambda d: [d]), "playground", "listed", "not a JSON object"),
    Case(CONFIG, "no model", edit_json(drop("model")), ANALYZE, "error", "has no model"),
    Case(CONFIG, "embed text", edit_json(lambda d: d.update(embed="wide")), ANALYZE_ALL, "failed", "embed"),
    Case(CONFIG, "cut off (resumed)", cut, BATCH, "repaired", setup="interrupted"),
    Case(CONFIG, "PNG", png, TPE.replace("--n_runs 1", "--n_runs 2"), "failed", "config.json is corrupt",
         setup="new search"),
    # a run's status.json
    Case(STATUS, "empty", empty, ANALYZE_ALL, "failed", "status.json is corrupt"),
    Case(STATUS, "cut off", cut, ANALYZE, "error", "status.json is corrupt"),
    Case(STATUS, "PNG", png, "playground", "listed", "status.json is corrupt"),
    Case(STATUS, "JSON list", edit_json(lambda d: [d]), ANALYZE_ALL, "failed", "not a JSON object"),
    Case(STATUS, "no status", edit_json(drop("status")), "playground", "listed", "status"),
    Case(STATUS, "status a number", edit_json(lambda d: d.update(status=3)), BATCH, "repaired"),
    Case(STATUS, "step text", edit_json(lambda d: d.update(step="twenty")), "worker", "repaired"),
    # a run's metrics.csv
    Case(METRICS, "empty", empty, ANALYZE_ALL, "failed", "has no metrics header"),
    Case(METRICS, "cut off", cut, ANALYZE, "tolerated", "cut off mid-write"),
    Case(METRICS, "PNG", png, ANALYZE, "error", "is not UTF-8"),
    Case(METRICS, "JSON", text('{"step": [0, 10], "val_loss": [3.1, 2.9]}\n'), "playground", "listed",
         "has no metrics header"),
    Case(METRICS, "no val_loss column", edit_csv(lambda df: df.drop(columns="val_loss")), ANALYZE_ALL, "failed",
         "has no metrics header"),
    Case(METRICS, "no perplexity column", edit_csv(lambda df: df.drop(columns="perplexity")), ANALYZE_ALL,
         "failed", "perplexity"),
    Case(METRICS, "val_loss text", edit_csv(text_column("val_loss")), ANALYZE, "error", "val_loss"),
    Case(METRICS, "step text", edit_csv(text_column("step")), "playground", "listed", "step"),
    Case(METRICS, "JSON (report)", text('{"step": 1}\n'), "report", "tolerated", "has no metrics header"),
    # a run's train_log.csv: a finer view of the curves, never needed for a result
    Case(LOG, "empty", empty, ANALYZE, "tolerated", "train_log.csv"),
    Case(LOG, "cut off", cut, ANALYZE_ALL, "tolerated"),
    Case(LOG, "PNG", png, "report", "tolerated"),
    Case(LOG, "JSON", text('{"step": 1}\n'), ANALYZE, "tolerated", "train_log.csv"),
    Case(LOG, "no train_loss column", edit_csv(lambda df: df.drop(columns="train_loss")), "report", "tolerated"),
    Case(LOG, "step text", edit_csv(text_column("step")), ANALYZE_ALL, "tolerated", "train_log.csv"),
    Case(LOG, "train_loss text", edit_csv(text_column("train_loss")), "report", "tolerated"),
    # a run's tokenizer.json
    Case(TOKENIZER, "empty", empty, ANALYZE, "error", "tokenizer.json is corrupt"),
    Case(TOKENIZER, "cut off", cut, ANALYZE_ALL, "failed", "tokenizer.json is corrupt"),
    Case(TOKENIZER, "PNG", png, GENERATE, "error", "tokenizer.json is corrupt"),
    Case(TOKENIZER, "PNG", png, "playground-model", "failed", "tokenizer.json is corrupt"),
    Case(TOKENIZER, "CSV", text("id,token\n0,a\n"), ANALYZE_ALL, "failed", "tokenizer.json is corrupt"),
    Case(TOKENIZER, "no type", edit_json(drop("type")), ANALYZE, "error", "tokenizer.json"),
    Case(TOKENIZER, "chars a number", edit_json(lambda d: d.update(chars=5)), GENERATE, "error",
         "tokenizer.json is corrupt"),
    Case(TOKENIZER, "cut off (resumed)", cut, BATCH, "failed", "tokenizer.json is corrupt", setup="interrupted"),
    # a run's best.pt
    Case(BEST, "empty", empty, ANALYZE, "error", "best.pt is corrupt"),
    Case(BEST, "cut off", cut, ANALYZE_ALL, "failed", "best.pt is corrupt"),
    Case(BEST, "cut off", cut, "playground-model", "failed", "best.pt is corrupt"),
    Case(BEST, "PNG", png, GENERATE, "error", "best.pt is corrupt"),
    Case(BEST, "JSON", text('{"model": {}}'), ANALYZE_ALL, "failed", "best.pt is corrupt"),
    Case(BEST, "no model", edit_pt(drop("model")), ANALYZE, "error", "has no model weights"),
    Case(BEST, "weights of another shape", edit_pt(lambda c: c.update(model={"emb.weight": torch.zeros(2, 2)})),
         ANALYZE_ALL, "failed", "does not match its config.json"),
    Case(BEST, "step text", edit_pt(lambda c: c.update(step="twenty")), GENERATE, "error", "step"),
    # a run's last.pt
    Case(LAST, "empty", empty, ANALYZE_ALL, "failed", "last.pt is corrupt"),
    Case(LAST, "cut off", cut, BATCH, "failed", "last.pt is corrupt", setup="interrupted"),
    Case(LAST, "PNG", png, ANALYZE, "error", "last.pt is corrupt"),
    Case(LAST, "no optimizer", edit_pt(drop("optimizer")), "worker", "failed", "optimizer",
         setup="interrupted"),
    Case(LAST, "metrics a number", edit_pt(lambda c: c.update(metrics=3)), "worker", "failed", "metrics",
         setup="interrupted"),
    Case(LAST, "step text", edit_pt(lambda c: c.update(step="twenty")), ANALYZE_ALL, "failed", "step"),
    # an earlier batch's manifest: written for people and tools, never read back by picollm
    Case(EARLIER_MANIFEST, "cut off", cut, BATCH, "ignored"),
    Case(EARLIER_MANIFEST, "PNG", png, BATCH, "ignored"),
    # the Optuna journal of a search: the whole input of a batch with an Optuna sampler
    Case(JOURNAL, "empty", empty, TPE, "fresh"),
    Case(JOURNAL, "cut off", cut, TPE, "error", "cut off mid-write"),
    Case(JOURNAL, "PNG", png, TPE, "error", "line 1 is not JSON"),
    Case(JOURNAL, "CSV", text("trial,value\n0,2.5\n"), TPE, "error", "line 1 is not JSON"),
    Case(JOURNAL, "no op_code", text('{"study_name": "space"}\n'), TPE, "error", "not an Optuna operation"),
    Case(JOURNAL, "op_code text", text(JOURNAL_TEXT.replace('"op_code": 0', '"op_code": "create"')), TPE,
         "error", "not an Optuna operation"),
    Case(JOURNAL, "no study_name", text(JOURNAL_TEXT.replace('"study_name": "space", ', "")), TPE, "error",
         "KeyError"),
    # a space file (--space): the whole input of a batch
    Case("space.json", "empty", empty, BATCH, "error", "space.json is empty"),
    Case("space.json", "cut off", cut, BATCH, "error", "space.json is not valid JSON"),
    Case("space.json", "PNG", png, BATCH, "error", "space.json"),
    Case("space.json", "YAML", text("base:\n  model: lstm\n"), BATCH, "error", "space.json is not valid JSON"),
    Case("space.json", "a JSON list", edit_json(lambda d: [d]), BATCH, "error", "expected a mapping"),
    Case("space.json", "configs empty", edit_json(lambda d: d.update(configs=[])), BATCH, "error",
         "configs must be a non-empty list"),
    Case("space.json", "choices not lists", edit_json(lambda d: d.update(choices={"lr": 0.01})), BATCH, "error",
         "must be a list of values"),
    Case("space.json", "lr text", edit_json(lambda d: d["base"].update(lr="fast")), BATCH, "error", "lr"),
    # the report's curves.js: written by the report, made again whenever it differs
    Case(CURVES, "empty", empty, "report", "rebuilt"),
    Case(CURVES, "cut off", cut, "report", "rebuilt"),
    Case(CURVES, "PNG", png, SUMMARIZE, "rebuilt"),
    # a run's summary.json (its analysis): made again by the next analysis
    Case(SUMMARY, "cut off", cut, ANALYZE_ALL, "rebuilt"),
    Case(SUMMARY, "JSON list", edit_json(lambda d: [d]), "report", "tolerated"),
]


# --------------------------------------------------------------------------------------------------
# running a case
# --------------------------------------------------------------------------------------------------
#: what each command may write (globs relative to the workspace; {A}: the damaged run); anything else it changes
#: or deletes is a good file overwritten
MAY_WRITE = {
    "analyze": ["analysis_runs/{A}/*", "logs/*.log"],
    "analyze-all": ["analysis_runs/runs.*", "analysis_runs/{A}/*", "analysis_runs/{B}/*", "logs/*.log"],
    "generate": [],
    "summarize": ["analysis_runs/runs.csv", "analysis_runs/plots/*", "analysis_runs/index.html", "analysis_runs/*/index.html",
                  "analysis_runs/curves.js", "analysis_runs/report_assets/*", "logs/*.log"],
    "report": ["analysis_runs/index.html", "analysis_runs/*/index.html", "analysis_runs/curves.js",
               "analysis_runs/report_assets/*"],
    "playground": [],
    "playground-model": [],
    "batch": ["checkpoints/{A}/*", "logs/*.log"],
    "worker": ["checkpoints/{A}/*"],
}


SCRIPTS = {"analyze_all_checkpoints.py": "analyze-all", "total_summary_analysis.py": "summarize"}


def kind(case: Case) -> str:
    """The command's name (a script's: the command it is)."""
    first = case.command.split()[0]
    return SCRIPTS.get(first.removeprefix("script:"), first)


def run_command(ws: Path, case: Case, names: dict[str, str], config: dict) -> Outcome:
    argv = case.command.format(ws=ws, **names).split()
    if argv[0].startswith("script:"):
        return run_script(ws, argv[0].removeprefix("script:"), argv[1:])
    if argv[0] == "playground":
        return Outcome(0, "", "", {r["run"]: r for r in run_rows(ws / "checkpoints")})
    if argv[0] == "playground-model":  # a generation request loads the run's model: A's is refused, B's loads
        cache = ModelCache()
        try:
            cache.get(ws / "checkpoints" / names["A"], "best")
        except RequestError as e:
            return Outcome(0, "", "", (e.status, str(e), cache.get(ws / "checkpoints" / names["B"], "best")))
        raise AssertionError("the damaged run's model loaded")
    if argv[0] == "report":
        return Outcome(0, "", "", write_report(ws / "analysis_runs"))
    if argv[0] == "worker":  # what a batch's worker process runs for run A
        return Outcome(0, "", "", run_job({**config, "out_dir": str(ws / "checkpoints")}))
    return run_picollm(ws, argv)


def prepare(ws: Path, case: Case, names: dict[str, str]) -> None:
    """The workspace as the case needs it before the damage."""
    if kind(case) == "analyze-all" and case.file.startswith("checkpoints/"):  # both analysed again: the damage shows
        for name in names.values():
            (ws / "analysis_runs" / name / "summary.json").unlink()
    if case.setup == "alone":
        (ws / DB).unlink()
    if case.setup == "new search":
        (ws / JOURNAL).unlink()
    if case.setup == "interrupted":
        run_dir = ws / "checkpoints" / names["A"]
        write_status(run_dir, "interrupted", INTERRUPTED_REASON, **{k: v for k, v in read_status(run_dir).items()
                                                                   if k in ("step", "max_steps")})
    if case.file == SUMMARY and kind(case) == "analyze-all":
        with contextlib.closing(sqlite3.connect(ws / DB)) as con:  # its row is restored from summary.json
            con.execute("DELETE FROM runs WHERE run = ?", (names["A"],))
            con.commit()


# --------------------------------------------------------------------------------------------------
# the endings
# --------------------------------------------------------------------------------------------------
def check_error(case: Case, result: Outcome, path: Path, **_) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == 2, result.err + result.out
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert path.name in lines[0], f"the error does not name {path.name}: {lines[0]}"
    assert case.fragment in lines[0], lines[0]


def new_manifest(ws: Path) -> dict:
    manifests = [p for p in (ws / "logs").glob("*-batch.json") if p.name != Path(EARLIER_MANIFEST).name]
    assert len(manifests) == 1, manifests
    return {entry["run"]: entry for entry in json.loads(manifests[0].read_text())["runs"]}


def check_failed(case: Case, result: Outcome, ws: Path, names: dict[str, str], **_) -> None:
    a, b = names["A"], names["B"]
    if kind(case) == "analyze-all":
        assert result.code == 1, result.err + result.out
        failed = [line for line in result.out.splitlines() if line.startswith(f"{a}: FAILED: ")]
        assert failed and case.fragment in failed[0], result.out
        assert "Traceback" not in failed[0] and "File " not in failed[0], failed[0]
        assert f"{b}: analysed" in result.out, result.out
        runs = set(pd.read_csv(ws / CSV)["run"])
        assert b in runs and a in runs, "a row is missing (A keeps the row of its last analysis)"
    elif kind(case) == "playground-model":
        status, message, other = result.value
        assert status == 422 and case.fragment in message, result.value
        assert other.model is not None, "the other run's model did not load"
    elif "--sampler tpe" in case.command:  # a finished run's trial, told from the run on disk
        assert result.code == 0, result.err + result.out
        warned = [line for line in result.out.splitlines() if line.startswith(f"warning: {a}: ")]
        assert warned and case.fragment in warned[0] and "told it failed" in warned[0], result.out
    elif kind(case) == "batch":
        assert result.code == 1, result.err + result.out
        entries = new_manifest(ws)
        assert entries[a]["outcome"] == "failed" and case.fragment in entries[a]["reason"], entries[a]
        assert entries[b]["outcome"] == "skipped", entries[b]
    else:  # worker
        assert result.value["status"] == "failed" and case.fragment in result.value["reason"], result.value
        assert not re.match(r"\w+(Error|Exception): ", result.value["reason"]), result.value["reason"]


def check_listed(case: Case, result: Outcome, names: dict[str, str], **_) -> None:
    rows = result.value
    assert rows[names["A"]]["status"] == "corrupt", rows[names["A"]]
    assert case.fragment in rows[names["A"]]["reason"], rows[names["A"]]
    assert rows[names["B"]]["status"] == "done" and rows[names["B"]]["val_loss"] is not None, rows[names["B"]]


def check_tolerated(case: Case, result: Outcome, ws: Path, names: dict[str, str], **_) -> None:
    assert result.code == 0, result.err + result.out
    if kind(case) == "report":
        page = (ws / "analysis_runs" / names["A"] / "index.html").read_text()
        assert case.fragment in page, "the run page does not say what is wrong"
        return
    assert (ws / "analysis_runs" / names["A"] / "summary.json").is_file(), "the run was not analysed"
    assert case.fragment in result.out, result.out


def check_rebuilt(case: Case, result: Outcome, path: Path, original: bytes, **_) -> None:
    assert result.code == 0, result.err + result.out
    if path.name == "summary.json":
        assert "row" in json.loads(path.read_text())
    else:
        assert path.read_bytes() == original, f"{path.name} was not made again as it was"


def check_repaired(case: Case, result: Outcome, ws: Path, names: dict[str, str], before: dict[str, str],
                   **_) -> None:
    run_dir = ws / "checkpoints" / names["A"]
    if kind(case) == "worker":
        assert result.value["status"] == "done", result.value
    else:
        assert result.code == 0, result.err + result.out
        assert new_manifest(ws)[names["B"]]["outcome"] == "skipped"
    assert read_status(run_dir)["status"] == "done"
    for name in ("metrics.csv", "best.pt"):  # the metrics and weights it had are kept
        rel = f"checkpoints/{names['A']}/{name}"
        assert digest(run_dir)[name] == before[rel], f"{name} changed"


def check_ignored(case: Case, result: Outcome, ws: Path, names: dict[str, str], **_) -> None:
    assert result.code == 0, result.err + result.out
    assert {e["outcome"] for e in new_manifest(ws).values()} == {"skipped"}


def check_fresh(case: Case, result: Outcome, **_) -> None:
    assert result.code == 0, result.err + result.out


ENDINGS = {"error": check_error, "failed": check_failed, "listed": check_listed, "tolerated": check_tolerated,
           "rebuilt": check_rebuilt, "repaired": check_repaired, "ignored": check_ignored, "fresh": check_fresh}


def check_nothing_good_overwritten(case: Case, ws: Path, names: dict[str, str], before: dict[str, str],
                                   after: dict[str, str], damaged: str) -> None:
    allowed = [p.format(**names) for p in MAY_WRITE[kind(case)]
               if not (case.ending == "failed" and p.startswith("analysis_runs/{A}"))]  # A's last analysis stays
    if case.ending == "error":
        allowed = ["logs/*.log"]  # a command refused writes nothing but its log
    changed = [p for p, h in before.items() if after.get(p) != h]
    if case.ending in ("rebuilt", "repaired", "fresh"):
        changed = [p for p in changed if p != damaged]
    else:
        assert damaged not in changed, f"the damaged {damaged} was replaced"
    overwritten = [p for p in changed if not any(fnmatch.fnmatch(p, g) for g in allowed)]
    assert not overwritten, f"{case.command} changed or deleted {overwritten}"


def case_id(case: Case) -> str:
    return f"{case.file.replace('{A}', 'A')}:{case.damage}:{kind(case)}"


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_damaged_file(trained, case, tmp_path):
    source, names, config = trained
    # not the log and shared memory of the database connection this process keeps open (its log is empty)
    ws = Path(shutil.copytree(source, tmp_path / "ws", ignore=shutil.ignore_patterns("*.sqlite-wal", "*.sqlite-shm")))
    prepare(ws, case, names)
    damaged = case.file.format(**names)
    path = ws / damaged
    original = path.read_bytes()
    case.how(path)
    before = digest(ws)
    result = run_command(ws, case, names, config)
    after = digest(ws)
    assert "Traceback" not in result.err + result.out, result.err + result.out
    ENDINGS[case.ending](case=case, result=result, ws=ws, names=names, path=path, original=original, before=before)
    check_nothing_good_overwritten(case, ws, names, before, after, damaged)


def test_the_table_covers_enough_pairs():
    pairs = {(c.file, c.damage.split(" (")[0]) for c in CASES}  # "cut off (resumed)" is "cut off" again
    assert len(pairs) >= 40, len(pairs)
