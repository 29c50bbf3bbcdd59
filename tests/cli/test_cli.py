"""The `picollm` command: every subcommand answers --help (exit 0) and a mistyped flag (one `error:` line,
exit 2) without importing torch; the root scripts are the same commands; the installed entry point imports."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

from picollm.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[2]

#: the root scripts the README names, and the subcommand each one is
ROOT_SCRIPTS = {"main.py": "train", "batch_train.py": "batch", "analyze_checkpoints.py": "analyze",
                "analyze_all_checkpoints.py": "analyze-all", "total_summary_analysis.py": "summarize",
                "auto_train_then_analyze.py": "pipeline", "xlstm_study.py": "xlstm-study"}

# Runs `picollm ARGS` in-process for each ARGS in argv[1] (a JSON list), in a fresh interpreter, and prints per
# call its exit code, its stderr and whether torch has been imported by then.
PROBE = """
import contextlib, io, json, sys
from picollm.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    results.append({"argv": argv, "code": code, "stderr": err.getvalue(), "torch": "torch" in sys.modules})
print(json.dumps(results))
"""


def probe(calls: list[list[str]], cwd: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(calls)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_help_and_a_bad_flag_answer_without_torch(tmp_path):
    calls = [["--help"], ["--no_such_flag"], ["no-such-command"]]
    for name in COMMANDS:
        calls += [[name, "--help"], [name, "--no_such_flag"]]
    results = probe(calls, tmp_path)
    for r in results:
        wants_help = r["argv"][-1] == "--help"
        assert r["code"] == (0 if wants_help else 2), r
        if not wants_help:
            lines = r["stderr"].strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), r
        assert not r["torch"], f"picollm {' '.join(r['argv'])} imported torch"
    assert list(tmp_path.iterdir()) == [], "--help or a usage error wrote files"


def test_a_dry_run_imports_no_torch(tmp_path):
    [r] = probe([["batch", "--preset", "fast", "--dry_run", "--out_dir", str(tmp_path / "checkpoints")]],
                tmp_path)
    assert r["code"] == 0, r
    assert not r["torch"], "picollm batch --dry_run imported torch"


def test_every_command_is_a_module_with_main():
    for name, (module, summary) in COMMANDS.items():
        assert callable(import_module(f"picollm.cli.{module}").main), name
        assert summary, name


def test_python_m_picollm_is_the_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "picollm", *args], cwd=tmp_path, env=env,
                                       capture_output=True, text=True, timeout=120)
    top = run("--help")
    assert top.returncode == 0 and all(name in top.stdout for name in COMMANDS), top.stderr
    sub = run("generate", "--help")
    assert sub.returncode == 0 and sub.stdout.startswith("usage: picollm generate") and "--top_p" in sub.stdout
    bad = run("generate", "--run", "x", "--top_p", "abc")
    assert bad.returncode == 2 and bad.stderr.startswith("error: argument --top_p: invalid float value")
    assert len(bad.stderr.strip().splitlines()) == 1 and "(see picollm generate --help)" in bad.stderr


def test_the_root_scripts_are_the_commands():
    for script, name in ROOT_SCRIPTS.items():
        namespace = runpy.run_path(str(ROOT / script), run_name="not_main")  # the shim runs nothing on import
        assert namespace["main"] is import_module(f"picollm.cli.{COMMANDS[name][0]}").main, script


def test_the_installed_entry_point_imports():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["picollm"].partition(":")
    assert callable(getattr(import_module(module), attr))
