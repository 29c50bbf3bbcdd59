"""Batches: dedupe, SIGKILL-and-resume equality, failure isolation, halving, continue_best, dry run, Ray."""

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from picollm.config import RunConfig
from picollm.core import ray_tasks, resources
from picollm.core.errors import ConfigError
from picollm.models import Family, register_family, unregister_family
from picollm.runs.layout import list_runs, read_json, read_status
from picollm.sweep.backends.local import LocalPool
from picollm.sweep.backends.ray import RayPool
from picollm.sweep.batch import train_batch
from picollm.sweep.jobs import Job
from picollm.sweep.planning import plan_resources

ROOT = Path(__file__).resolve().parents[2]
LOSS_COLUMNS = ["step", "epoch", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy",
                "grad_norm_preclip", "grad_norm_postclip", "max_param_grad", "weight_norm", "learning_rate"]


def write_space(path: Path, corpus: str, configs=None, base=None, **extra) -> str:
    space = {"base": {"corpus": corpus, "embed": 16, "hidden": 32, "layers": 1, "heads": 2, "block_size": 16,
                      "batch_size": 8, "max_steps": 20, "eval_interval": 5, "eval_tokens": 1024, "warmup_steps": 5,
                      "dropout": 0.1, **(base or {})},
             "configs": configs or [{"model": "kgram_mlp"}, {"model": "transformer"}, {"model": "lstm"}],
             **extra}
    path.write_text(json.dumps(space))
    return str(path)


def batch(space, tmp_path, out="runs", **kwargs):
    kwargs.setdefault("workers", 2)
    return train_batch(space=space, out_dir=tmp_path / out, log_dir=tmp_path / "logs", console=False, **kwargs)


def metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(Path(run_dir) / "metrics.csv")[LOSS_COLUMNS]


def assert_same_runs(a: Path, b: Path) -> None:
    names = [p.name for p in list_runs(a)]
    assert names and names == [p.name for p in list_runs(b)]
    for name in names:
        assert read_status(b / name)["status"] == "done", name
        pd.testing.assert_frame_equal(metrics(a / name), metrics(b / name), obj=name)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted batch of four configs (both batching modes), shared by the tests that compare with it."""
    tmp = tmp_path_factory.mktemp("reference")
    configs = [{"model": "kgram_mlp"}, {"model": "transformer"}, {"model": "lstm"}, {"model": "transformer", "lr": 1e-2}]
    space = write_space(tmp / "s.json", corpus, configs, base={"max_steps": 40})
    report = batch(space, tmp, out="whole")
    assert report.exit_code == 0 and [o.outcome for o in report.outcomes] == ["done"] * 4
    return space, tmp / "whole", report


def test_same_space_twice_trains_nothing_the_second_time(reference, tmp_path):
    space, whole, first = reference
    runs = list_runs(whole)
    assert len(runs) == 4
    stamps = {p.name: (p / "last.pt").stat().st_mtime_ns for p in runs}
    manifest = read_json(first.manifest_path)
    assert first.log_path.suffix == ".log" and first.log_path.exists()
    assert manifest["counts"]["done"] == 4 and manifest["finished"] and manifest["resources"]["threads"] >= 1
    assert {r["run"] for r in manifest["runs"]} == set(stamps)
    assert all(len(r["fingerprint"]) == 64 and r["outcome"] == "done" and r["history"][0]["seconds"] > 0
               for r in manifest["runs"])

    second = train_batch(space=space, out_dir=whole, log_dir=tmp_path / "logs", console=False)
    assert [o.outcome for o in second.outcomes] == ["skipped"] * 4 and second.exit_code == 0
    assert {p.name: (p / "last.pt").stat().st_mtime_ns for p in runs} == stamps
    assert second.manifest_path != first.manifest_path


def test_no_skip_existing_retrains_and_drops_the_old_run_after(reference, tmp_path):
    space, whole, _ = reference
    shutil.copytree(whole, tmp_path / "runs")
    name = list_runs(whole)[0].name
    stamp = (tmp_path / "runs" / name / "last.pt").stat().st_mtime_ns
    report = batch(space, tmp_path, skip_existing=False)
    assert [o.outcome for o in report.outcomes] == ["done"] * 4
    assert (tmp_path / "runs" / name / "last.pt").stat().st_mtime_ns != stamp
    assert_same_runs(whole, tmp_path / "runs")
    assert not list((tmp_path / "runs" / ".replaced").iterdir())


def test_dry_run_trains_nothing_and_shows_what_is_done(reference, tmp_path, capsys):
    space, whole, _ = reference
    report = train_batch(space=space, dry_run=True, out_dir=tmp_path / "runs", log_dir=tmp_path / "logs")
    assert [o.outcome for o in report.outcomes] == ["planned"] * 4 and report.manifest_path is None
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()
    out = capsys.readouterr().out
    assert all(o.run in out for o in report.outcomes) and "4 to train" in out and "nothing trained" in out

    shutil.copytree(whole / list_runs(whole)[1].name, tmp_path / "runs" / list_runs(whole)[1].name)
    report = train_batch(space=space, dry_run=True, out_dir=tmp_path / "runs", log_dir=tmp_path / "logs")
    assert [o.outcome for o in report.outcomes].count("skipped") == 1
    assert "1 finished (would be skipped), 3 to train" in capsys.readouterr().out
    assert len(list_runs(tmp_path / "runs")) == 1 and not (tmp_path / "logs").exists()


def count_rows(out_dir: Path) -> int:
    total = 0
    for path in out_dir.glob("*/metrics.csv"):
        try:
            total += max(0, len(path.read_text().splitlines()) - 1)
        except FileNotFoundError:
            pass
    return total


def test_sigkill_at_any_point_then_rerun_equals_an_uninterrupted_batch(reference, tmp_path):
    space, whole, _ = reference
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "batch_train.py"), "--space", space, "--workers", "2", "--out_dir", str(out),
           "--log_dir", str(tmp_path / "logs")]
    total_rows = 4 * 9
    for kill_at_rows in (2, 13, 26):  # after the first evaluations, mid-batch, near the end
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while count_rows(out) < kill_at_rows and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert count_rows(out) < total_rows, "the batch finished before it could be killed"
        for run_dir in out.iterdir():  # what a worker killed mid-write leaves behind must not matter
            if run_dir.is_dir() and read_status(run_dir)["status"] != "done":
                (run_dir / ".last.pt.deadbeef.tmp").write_bytes(b"half a checkpoint")
                (run_dir / ".metrics.csv.deadbeef.tmp").write_text("step,val\n1,")
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    assert_same_runs(whole, out)
    assert not list(out.glob("*/.*.tmp"))


def test_a_failing_config_does_not_stop_the_batch_and_sets_the_exit_code(corpus, tmp_path):
    configs = [{"model": "kgram_mlp"}, {"model": "transformer", "block_size": 100000}, {"model": "transformer"}]
    report = batch(write_space(tmp_path / "s.json", corpus, configs), tmp_path)
    assert [o.outcome for o in report.outcomes] == ["done", "failed", "done"] and report.exit_code == 1
    assert "block_size" in report.outcomes[1].reason and "\n" not in report.outcomes[1].reason
    # a config the corpus cannot serve fails before its run directory is made: nothing to clean up or resume
    assert not Path(report.outcomes[1].run_dir).exists()
    manifest = read_json(report.manifest_path)
    assert [r["outcome"] for r in manifest["runs"]] == ["done", "failed", "done"]
    assert manifest["counts"]["failed"] == 1 and "failed 1" in report.table()


def crash_on_high_lr(cfg_dict, stop_at_step, fresh):
    """A job function for LocalPool: the worker dies outright for lr 0.5."""
    if cfg_dict["lr"] == 0.5:
        os._exit(3)
    return {"status": "done", "reason": f"pid {os.getpid()}", "seconds": 0.0}


def test_a_worker_that_dies_fails_only_its_own_run(tmp_path):
    jobs = [Job(RunConfig(model="kgram_mlp", lr=lr)) for lr in (1e-3, 0.5, 2e-3, 3e-3)]
    pool = LocalPool(workers=2, threads=1, fn=crash_on_high_lr)
    try:
        results = {job.cfg.lr: result for job, result in pool.run(jobs)}
    finally:
        pool.close()
    assert results[0.5]["status"] == "failed" and "worker process died (exit code 3)" in results[0.5]["reason"]
    assert all(results[lr]["status"] == "done" for lr in (1e-3, 2e-3, 3e-3))


TOY_FAMILY = '''"""A bigram model, written by a test: the next token's logits are a row of a table."""

from dataclasses import dataclass

from torch import nn

from picollm.models.base import LanguageModel


@dataclass
class BigramConfig:
    vocab_size: int


class Bigram(LanguageModel):
    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx, state=None):
        return self.table(idx), None  # the next token depends on this one only: no state to carry

    def embedding_matrix(self):
        return self.table.weight
'''


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """A family registered at run time, from a module on sys.path that is no part of the package."""
    (tmp_path / "toy_bigram.py").write_text(TOY_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    family = register_family(Family("toy_bigram", "toy_bigram", "Bigram", "BigramConfig", "Bigram (a test's)",
                                    default=False))
    yield family
    unregister_family(family.name)
    sys.modules.pop("toy_bigram", None)  # another test may write a module of that name with other classes


def test_worker_processes_know_the_families_registered_at_run_time(toy_family, corpus, tmp_path):
    space = write_space(tmp_path / "s.json", corpus, [{"model": toy_family.name, "lr": lr} for lr in (1e-2, 3e-3)])
    report = batch(space, tmp_path, workers=2)
    assert [o.outcome for o in report.outcomes] == ["done", "done"], [o.reason for o in report.outcomes]
    assert all(o.run.startswith("toy_bigram-") and o.val_loss is not None for o in report.outcomes)


def kill_a_worker_mid_run(out: Path, batch_thread: threading.Thread) -> str:
    """SIGKILL the (only) batch worker while a run under `out` is training past its first checkpoint; return
    that run's name."""
    while batch_thread.is_alive():
        for run_dir in out.glob("*/"):
            status = read_status(run_dir)
            if status["status"] == "running" and status.get("step", 0) >= 5:
                worker = next(p for p in mp.active_children() if p.name.startswith("picollm-worker"))
                os.kill(worker.pid, signal.SIGSTOP)  # frozen: its run's status can no longer change
                if read_status(run_dir)["status"] == "running":
                    os.kill(worker.pid, signal.SIGKILL)
                    return run_dir.name
                os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("the batch finished before a worker could be killed mid-run")


def test_a_killed_worker_leaves_its_run_failed_and_the_next_batch_resumes_it(reference, tmp_path):
    space, whole, _ = reference
    reports = []
    # one thread per run, as in the reference batch (2 workers on 2 cores): float results depend on the count
    one_thread = {"threads": 1}
    thread = threading.Thread(target=lambda: reports.append(batch(space, tmp_path, workers=1, overrides=one_thread)))
    thread.start()
    killed = kill_a_worker_mid_run(tmp_path / "runs", thread)
    thread.join()
    outcome = next(o for o in reports[0].outcomes if o.run == killed)
    assert outcome.outcome == "failed" and "worker process died" in outcome.reason
    status = read_status(tmp_path / "runs" / killed)
    assert status["status"] == "failed" and "worker process died (exit code -9)" in status["reason"]
    assert 5 <= status["step"] < status["max_steps"] == 40

    again = batch(space, tmp_path, overrides=one_thread)
    assert {o.run: o.outcome for o in again.outcomes}[killed] == "done" and again.exit_code == 0
    assert f"{killed}: resuming at step" in again.log_path.read_text()
    assert_same_runs(whole, tmp_path / "runs")  # as if the worker had never died


def report_threads(cfg_dict, stop_at_step, fresh):
    """A job function for LocalPool: the torch threads its run got."""
    import torch

    return {"status": "done", "reason": f"{cfg_dict['threads']} {torch.get_num_threads()}", "seconds": 0.0}


def test_local_workers_size_each_runs_threads_to_what_other_jobs_leave(tmp_path, monkeypatch):
    monkeypatch.setenv(resources.JOBS_DIR_ENV, str(tmp_path / "jobs"))
    monkeypatch.setattr(resources, "cpu_cores", lambda: 4)
    jobs = [Job(RunConfig(model="kgram_mlp", lr=lr)) for lr in (1e-3, 2e-3, 3e-3)]
    with resources.registered("batch", 1) as me:
        pool = LocalPool(workers=1, threads=0, fn=report_threads, job=me)
        try:
            runs = pool.run(jobs)
            alone = next(runs)[1]["reason"]
            with resources.registered("analyze", 1):  # another job starts: the next runs get half the cores
                beside = next(runs)[1]["reason"]
            after = next(runs)[1]["reason"]
        finally:
            pool.close()
    assert (alone, beside, after) == ("4 4", "2 2", "4 4")  # what the run asked for and what torch has


def test_workers_beyond_the_cores_are_capped_on_the_cpu(monkeypatch):
    import torch

    monkeypatch.setattr(resources, "cpu_cores", lambda: 2)
    cpu = [RunConfig(model="kgram_mlp", lr=lr) for lr in (1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3)]
    res = plan_resources(cpu, "local", 8, runs_per_gpu=None, gpus_per_run=None, threads=None)
    assert res.workers == 2 and res.threads == 1
    assert [n for n in res.notes if "--workers 8 > 2 cores" in n]
    assert plan_resources(cpu, "ray", 8, None, None, None).workers == 2  # a local Ray shares this CPU too
    assert plan_resources(cpu, "ray", 8, None, None, None, address="head:6379").workers == 8  # a cluster's
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = [c.replace(device="cuda") for c in cpu]
    assert plan_resources(gpu, "local", 8, None, None, None).workers == 8  # GPU runs: not capped by cores


def test_halving_keeps_one_in_eta_says_why_the_others_stopped_then_continues_the_best(corpus, tmp_path):
    configs = [{"model": m, "lr": lr} for m in ("kgram_mlp", "transformer") for lr in (1e-2, 3e-3, 1e-3)]
    space = write_space(tmp_path / "s.json", corpus, configs, base={"max_steps": 45}, sampler="halving", eta=3)
    report = batch(space, tmp_path, continue_best=0.05)
    assert report.exit_code == 0 and report.outcomes[-1].stage == "continue_best"
    status = {o.run: read_status(tmp_path / "runs" / o.run) for o in report.outcomes[:-1]}
    assert sorted(s["status"] for s in status.values()) == ["done"] + ["stopped"] * 5
    manifest = read_json(report.manifest_path)
    first = manifest["halving"][0]
    assert first["kept"] == 2 and [r["step"] for r in first["ranking"]] == [5] * 6
    losses = [r["val_loss"] for r in first["ranking"]]
    assert losses == sorted(losses)
    for rank, row in enumerate(first["ranking"][2:], 3):  # the worst four stop at the first rung, with why
        s = status[row["run"]]
        assert s["reason"] == f"stopped by successive halving at step 5: val loss {row['val_loss']:.4f} ranked {rank} of 6"
        assert metrics(tmp_path / "runs" / row["run"])["step"].max() == 5  # metrics kept
        assert row["val_loss"] >= max(r["val_loss"] for r in first["ranking"][:2])
    second = manifest["halving"][1]
    assert [r["step"] for r in second["ranking"]] == [15, 15]
    assert "ranked 2 of 2" in status[second["ranking"][1]["run"]]["reason"]
    assert metrics(tmp_path / "runs" / second["ranking"][0]["run"])["step"].max() == 45

    # --continue_best: the winner trains 0.05 more epochs from its best.pt, in a new run naming it as parent
    best, child = second["ranking"][0]["run"], Path(report.outcomes[-1].run_dir)
    config = read_json(child / "config.json")
    assert config["parent"] == str(tmp_path / "runs" / best) and config["epochs"] == 0.05 and child.name != best
    assert read_status(child)["status"] == "done"
    best_loss = metrics(tmp_path / "runs" / best)["val_loss"].min()
    assert metrics(child)["val_loss"].iloc[0] == pytest.approx(best_loss, rel=1e-6)  # starts at the parent's best

    again = batch(space, tmp_path, continue_best=0.05)  # a rerun trains nothing and changes no decision
    assert {o.outcome for o in again.outcomes} == {"skipped"}
    assert {o.run: read_status(tmp_path / "runs" / o.run)["status"] for o in again.outcomes[:-1]} == \
        {k: v["status"] for k, v in status.items()}


def test_invalid_batch_settings_are_one_line_errors_before_training(corpus, tmp_path, monkeypatch):
    space = write_space(tmp_path / "s.json", corpus)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"choices": {"model": ["transformer"], "embed": [30], "heads": [4]}}))
    for kwargs, message in [(dict(space=str(bad)), "no valid config"), (dict(space=space, workers=0), "workers"),
                            (dict(space=space, max_steps=0), "max_steps"),
                            (dict(space=space, address="h:1"), "--backend ray"),
                            (dict(space=space, overrides={"embedd": 3}), "unknown config field")]:
        with pytest.raises(ConfigError, match=message) as err:
            train_batch(out_dir=tmp_path / "runs", log_dir=tmp_path / "logs", console=False, **kwargs)
        assert "\n" not in str(err.value)
    assert not list_runs(tmp_path / "runs")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ConfigError, match=r"pip install -e \.\[ray\]"):
        train_batch(space=space, backend="ray", out_dir=tmp_path / "runs", console=False)

    result = subprocess.run([sys.executable, str(ROOT / "batch_train.py"), "--space", str(bad), "--dry_run"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unreachable_corpus_is_one_error_before_anything_is_written(tmp_path, monkeypatch):
    from picollm.core.errors import DataError
    from picollm.data import corpora as data

    monkeypatch.setenv("PICOLLM_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("PICOLLM_CACHE_DIR", str(tmp_path / "cache"))
    spec = data.CORPORA["ptb"]
    unreachable = (tmp_path / "no" / "such" / "ptb.train.txt").as_uri()
    files = {role: data.CorpusFile(f.name, unreachable, f.sha256) for role, f in spec.files.items()}
    monkeypatch.setitem(data.CORPORA, "ptb", data.CorpusSpec(spec.name, spec.subdir, spec.level, files))
    space = write_space(tmp_path / "s.json", "ptb")
    with pytest.raises(DataError, match="PICOLLM_DATA_DIR") as err:  # not one failed run per config
        batch(space, tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists() and not (tmp_path / "cache").exists()
    assert train_batch(space=space, out_dir=tmp_path / "runs", dry_run=True).exit_code == 0  # a plan needs no data
    with pytest.raises(DataError, match="PICOLLM_DATA_DIR"):  # ... but timing one trains on it
        train_batch(space=space, out_dir=tmp_path / "runs", dry_run=True, estimate=2)
    assert not (tmp_path / "runs").exists()


def test_gpu_packing_assigns_k_workers_per_gpu(monkeypatch):
    import torch

    cpu = [RunConfig(model="kgram_mlp", lr=lr) for lr in (1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3)]
    res = plan_resources(cpu, "local", None, runs_per_gpu=4, gpus_per_run=None, threads=None)
    assert res.devices is None  # ignored on the CPU (with a warning)
    assert res.workers * res.threads <= max(2, os.cpu_count())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    gpu = [c.replace(device="cuda") for c in cpu]
    res = plan_resources(gpu, "local", None, runs_per_gpu=3, gpus_per_run=None, threads=None)
    assert res.workers == 6 and [res.devices[s % len(res.devices)] for s in range(6)] == ["cuda:0", "cuda:1"] * 3
    assert plan_resources(gpu, "ray", None, runs_per_gpu=4, gpus_per_run=None, threads=None).gpus_per_run == 0.25
    with pytest.raises(ConfigError, match="give one of them"):
        plan_resources(gpu, "ray", None, runs_per_gpu=4, gpus_per_run=0.5, threads=None)


def test_ray_backend_gives_the_same_metrics_as_local(reference, tmp_path):
    ray = pytest.importorskip("ray")
    space, whole, _ = reference
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PICOLLM_DATA_DIR": os.environ["PICOLLM_DATA_DIR"]}})
    try:
        remote = batch(space, tmp_path, out="ray", backend="ray")
    finally:
        ray.shutdown()
    assert remote.exit_code == 0 and [o.outcome for o in remote.outcomes] == ["done"] * 4
    assert_same_runs(whole, tmp_path / "ray")
    log = remote.log_path.read_text()  # each run's own log lines, from its Ray task
    for o in remote.outcomes:
        assert f"] {o.run} step 40/40 train" in log and f"] {o.run}: done" in log


def refused_by_token_auth(**kwargs):
    """ray.init(address=...) of Ray 2.60 against a cluster with token authentication, sent no token."""
    try:
        raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                           "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token "
                           "is missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled' (not 'token').")
    except RuntimeError as e:
        raise ConnectionError("Failed to connect to Ray cluster at head:6379") from e


def test_a_ray_cluster_that_wants_a_token_is_one_line_naming_the_fix(monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(ray_tasks, "_listening", lambda address: None)  # no head:6379 here; ray.init is faked
    monkeypatch.setattr(ray, "init", refused_by_token_auth)
    with pytest.raises(ConfigError) as err:
        RayPool(1, 0.0, "head:6379", 1)
    message = str(err.value)
    assert "\n" not in message and "head:6379" in message and "token authentication" in message
    assert "ray get-auth-token" in message and "RAY_AUTH_MODE=token" in message

    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # a token, but not the cluster's
    with pytest.raises(ConfigError, match="refused this machine's Ray token"):
        RayPool(1, 0.0, "head:6379", 1)

    def no_token(**kwargs):
        raise ray.exceptions.AuthenticationError(
            "Token authentication is enabled but no authentication token was found")

    monkeypatch.setattr(ray, "init", no_token)
    with pytest.raises(ConfigError, match="this machine has no Ray token: copy the cluster's token"):
        RayPool(1, 0.0, "head:6379", 1)


# --------------------------------------------------------------------------------------------------
# a batch stopped from outside: its run says it was interrupted, and resumes
# --------------------------------------------------------------------------------------------------
def start_long_batch(corpus: str, tmp_path: Path) -> subprocess.Popen:
    space = write_space(tmp_path / "s.json", corpus, [{"model": "lstm"}], base={"max_steps": 2000, "eval_interval": 5})
    cmd = [sys.executable, "-m", "picollm", "batch", "--space", space, "--workers", "1", "--out_dir", "runs",
           "--log_dir", "logs"]
    # Ctrl-C in a terminal reaches a process whose SIGINT has its default action; a test run started in the
    # background by a shell without job control (`pytest &`) ignores SIGINT, and exec would pass that on
    return subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def training_run(out: Path, proc: subprocess.Popen) -> Path:
    """The run of the batch once it is training past its first checkpoint."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for run_dir in out.glob("*/"):
            status = read_status(run_dir)
            if status["status"] == "running" and status.get("step", 0) >= 5:
                return run_dir
        time.sleep(0.05)
    raise AssertionError(f"no run was training (batch exit code {proc.poll()})")


def test_ctrl_c_stops_a_batch_with_one_line_and_its_run_says_interrupted(corpus, tmp_path):
    proc = start_long_batch(corpus, tmp_path)
    run_dir = training_run(tmp_path / "runs", proc)
    proc.send_signal(signal.SIGINT)  # to the batch alone: its workers are stopped by the batch
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: finished runs are kept")
    status = read_status(run_dir)
    assert status["status"] == "interrupted" and status["step"] >= 5, status


def test_a_batch_whose_process_dies_leaves_its_run_interrupted(corpus, tmp_path):
    proc = start_long_batch(corpus, tmp_path)
    run_dir = training_run(tmp_path / "runs", proc)
    proc.kill()  # SIGKILL: the batch cannot say anything; its worker notices and stops its run
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while read_status(run_dir)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    status = read_status(run_dir)
    assert status["status"] == "interrupted" and status["step"] >= 5, status
