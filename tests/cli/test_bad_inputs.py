"""Bad input, typed the way a user types it, through the real scripts.

Every case must end with exit code 2 and exactly one line on stderr, `error: ...` naming the problem, no
traceback, and nothing in the working folder (checkpoints, analysis, logs) created, changed or lost.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from picollm.config import RunConfig
from picollm.train.loop import train_run

ROOT = Path(__file__).resolve().parents[2]
RUN = "checkpoints/RUN"  # replaced by the trained run's directory
UNSAFE_RUN = "checkpoints/unsafe"  # a copy of it whose best.pt is a pickle that would write a file


class _Payload:
    """Unpickling this calls open(<workspace>/pwned, 'w'): the check is that the file never appears."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus) -> Path:
    """A working folder with one trained run, an unsafe copy of it, an analysis table and the bad files."""
    ws = tmp_path_factory.mktemp("ws")
    run_dir = train_run(RunConfig(model="kgram_mlp", corpus=corpus, max_steps=20, eval_interval=10,
                                  out_dir=str(ws / "checkpoints"), progress=False), quiet=True)
    run_dir.rename(ws / "checkpoints" / "run")
    unsafe = ws / UNSAFE_RUN
    shutil.copytree(ws / "checkpoints" / "run", unsafe)
    (unsafe / "best.pt").write_bytes(pickle.dumps({"model": _Payload(str(ws / "pwned"))}))
    bad = ws / "bad"
    bad.mkdir()
    (bad / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 200)
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 50)
    (bad / "empty.txt").write_text("")
    (bad / "short.txt").write_text("to be or not\n")
    (bad / "latin1.yaml").write_bytes("description: caf\xe9\nbase: {max_steps: 10}\n".encode("latin-1"))
    (bad / "nan.yaml").write_text("base: {model: kgram_mlp, max_steps: 10}\nchoices: {lr: [0.001, .nan]}\n")
    (bad / "continue.yaml").write_text("base: {model: kgram_mlp, max_steps: 10}\ncontinue_best: .inf\n")
    ragged = ws / "ragged"
    ragged.mkdir()
    (ragged / "runs.csv").write_text("run,model,val_loss\na,lstm,1.5\nb,lstm,1.2,9,9\n")
    return ws


# (script and arguments, a fragment the error line must hold)
CASES = [
    # main.py: run settings
    ("main.py --models kgram_mlp --lr nan", "--lr must be a finite number > 0"),
    ("main.py --models kgram_mlp --lr inf", "--lr must be a finite number > 0"),
    ("main.py --models kgram_mlp --weight_decay nan", "--weight_decay must be a finite number"),
    ("main.py --models kgram_mlp --epochs inf", "--epochs must be a finite number"),
    ("main.py --models kgram_mlp --beta1 1.5", "--beta1 must be in [0, 1)"),
    ("main.py --models kgram_mlp --beta2 2", "--beta2 must be in [0, 1)"),
    ("main.py --models kgram_mlp --dropout 1", "--dropout must be in [0, 1)"),
    ("main.py --models kgram_mlp --min_lr_ratio 2", "--min_lr_ratio must be in [0, 1]"),
    ("main.py --models kgram_mlp --embed 0", "--embed must be a positive integer"),
    ("main.py --models kgram_mlp --max_steps -5", "--max_steps must be an integer >= 0"),
    ("main.py --models kgram_mlp --seed -1", "--seed must be in [0, 4294967295]"),
    ("main.py --models kgram_mlp --lr abc", "argument --lr: invalid float value"),
    ("main.py --models kgram_mlp --no_such_flag 1", "unrecognized arguments: --no_such_flag"),
    ("main.py --models gru", "unknown model family 'gru'"),
    ("main.py --models transformer --embed 30 --heads 4", "divisible by --heads"),
    ("main.py --models kgram_mlp --device cuda", "CUDA is not available"),
    ("main.py --models kgram_mlp --tokenizer bpe --bpe_vocab_size 1", "--bpe_vocab_size must be an integer >= 257"),
    # main.py: corpora
    ("main.py --models kgram_mlp --corpus /bin/ls", "is a binary file, not text"),
    ("main.py --models kgram_mlp --corpus bad/binary.txt", "is a binary file, not text"),
    ("main.py --models kgram_mlp --corpus bad/latin1.txt", "is not UTF-8 text"),
    ("main.py --models kgram_mlp --corpus bad/empty.txt", "is empty"),
    ("main.py --models kgram_mlp --corpus bad/short.txt", "fewer than --block_size 64"),
    ("main.py --models kgram_mlp --corpus bad/missing.txt", "not found"),
    ("main.py --models kgram_mlp --corpus shakespeare", "unknown corpus 'shakespeare'"),
    # batch_train.py: a bad override is refused before the batch trains anything
    ("batch_train.py --preset fast --beta1 1.5", "--beta1 must be in [0, 1)"),
    ("batch_train.py --preset fast --lr nan", "--lr must be a finite number > 0"),
    ("batch_train.py --preset nope", "unknown preset 'nope'"),
    ("batch_train.py --preset fast --n_runs 0", "--n_runs must be a positive integer"),
    ("batch_train.py --space bad/latin1.yaml", "is not UTF-8 text"),
    ("batch_train.py --space bad/nan.yaml", "lr"),
    ("batch_train.py --space bad/continue.yaml", "continue_best"),
    ("batch_train.py --space bad/missing.yaml", "space file bad/missing.yaml not found"),
    ("batch_train.py --preset fast --continue_best nan", "--continue_best must be a finite number >= 0"),
    ("batch_train.py --preset fast --estimate 10", "--estimate times the configs of a dry run: add --dry_run"),
    ("batch_train.py --preset fast --dry_run --estimate -3", "--estimate must be"),
    ("batch_train.py --preset fast --workers 0", "--workers must be a positive integer"),
    ("batch_train.py --preset fast --eta 1", "--eta must be an integer >= 2"),
    ("batch_train.py --preset fast --gpus_per_run nan", "--gpus_per_run must be a finite number > 0"),
    ("batch_train.py --preset fast --address h:1", "--address joins a Ray cluster: add --backend ray"),
    ("batch_train.py --preset fast --sampler bayes", "argument --sampler: invalid choice"),
    ("batch_train.py --preset fast --pruner median", "--pruner and --objectives go with an Optuna sampler"),
    ("batch_train.py --preset fast --sampler tpe --objectives val_loss,speed", "--objectives must be a comma list"),
    ("batch_train.py --preset fast --sampler nsga2 --objectives val_loss,params --pruner median",
     "--pruner works with one objective only"),
    # analysis of one run
    ("analyze_checkpoints.py --run checkpoints/nope", "does not exist"),
    (f"analyze_checkpoints.py --run {RUN} --max_new_tokens -1", "--max_new_tokens must be an integer >= 0"),
    (f"analyze_checkpoints.py --run {RUN} --influence --influence_damping nan", "--influence_damping must be"),
    (f"analyze_checkpoints.py --run {RUN} --influence --influence_n_train 1", "--influence_n_train must be"),
    (f"analyze_checkpoints.py --run {UNSAFE_RUN}", "not a plain weights file"),
    # analysis of all runs
    ("analyze_all_checkpoints.py --checkpoints nope", "does not exist"),
    ("analyze_all_checkpoints.py --workers 0", "--workers must be >= 1"),
    ("analyze_all_checkpoints.py --max_new_tokens -3", "--max_new_tokens must be an integer >= 0"),
    # the study of all runs
    ("total_summary_analysis.py --analysis_dir nope", "not found"),
    ("total_summary_analysis.py --analysis_dir ragged", "runs.csv"),
    # the whole pipeline: everything it was given is checked before the first run starts
    ("auto_train_then_analyze.py --fast --lr nan", "--lr must be a finite number > 0"),
    ("auto_train_then_analyze.py --fast --max_new_tokens -1", "--max_new_tokens must be an integer >= 0"),
    # the xLSTM study
    ("xlstm_study.py --threads -2 lm", "--threads must be >= 0"),
    ("xlstm_study.py lm --max_steps -5", "--max_steps must be a positive integer"),
    ("xlstm_study.py lm --lr nan", "--lr must be a finite number > 0"),
    ("xlstm_study.py --families lstm,gru lm", "--families must be a comma list"),
    ("xlstm_study.py nn --lengths 4,x", "--lengths must be a comma list of integers"),
    ("xlstm_study.py nn --classes 1", "--classes must be an integer >= 2"),
    # generation
    (f"-m picollm generate --run {RUN} --temperature nan", "--temperature must be a finite number >= 0"),
    (f"-m picollm generate --run {RUN} --top_p 0", "--top_p must be in (0, 1]"),
    (f"-m picollm generate --run {RUN} --num_samples 0", "--num_samples must be >= 1"),
    (f"-m picollm generate --run {RUN} --checkpoint middle", "argument --checkpoint: invalid choice"),
    ("-m picollm generate --run checkpoints/missing", "does not exist"),
    # the playground: refused before it listens
    ("-m picollm playground --port -1", "--port must be in [0, 65535]; got -1"),
    ("-m picollm playground --port http", "argument --port: invalid int value"),
    ("-m picollm playground --checkpoints /nonexistent", "--checkpoints /nonexistent is not a folder"),
    ("-m picollm playground --threads 0", "--threads must be a positive integer"),
    ("-m picollm playground --max_streams 0", "--max_streams must be a positive integer"),
]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and folder under root with the sha256 of its content (folders: 'dir')."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            path = os.path.join(dirpath, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("command,fragment", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_error_line_and_writes_nothing(workspace, command, fragment):
    args = command.replace(RUN, "checkpoints/run").split()
    argv = [sys.executable, *(args if args[0] == "-m" else [str(ROOT / args[0]), *args[1:]])]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PICOLLM_CACHE_DIR": str(workspace / "cache")}
    before = tree_digest(workspace)
    proc = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert fragment in lines[0], lines[0]
    assert tree_digest(workspace) == before, f"{command} changed the working folder"
