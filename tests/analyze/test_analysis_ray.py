"""The analysis on Ray (analyze-all --backend ray): the same rows and generations as a local analysis, a run whose
task's worker dies fails alone, one-line errors for bad flags, a missing Ray and an unreachable cluster, and a
real two-node cluster on this machine (`ray start --head` + `ray start --address`, as a user starts one)."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import picollm.analyze.analysis as analysis
from picollm.analyze.analysis import analyze_all
from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.core.log import setup_logging
from picollm.runs.table import TABLE_NAME, TIMING_COLUMNS, read_table
from picollm.train.loop import train_run

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
FAST = dict(max_new_tokens=8, threads=1)  # one thread: the same arithmetic locally and in a Ray task


@pytest.fixture(scope="module")
def checkpoints(corpus, tmp_path_factory) -> Path:
    """Three tiny finished runs; the lstm's last.pt is gone, so its analysis logs a warning (replayed from Ray)."""
    root = tmp_path_factory.mktemp("ray-analysis") / "checkpoints"
    for family in ("kgram_mlp", "lstm", "transformer"):
        run = train_run(RunConfig(corpus=corpus, model=family, embed=16, hidden=32, layers=1, heads=2, block_size=16,
                                  batch_size=8, max_steps=20, eval_interval=10, eval_tokens=1024, warmup_steps=5,
                                  lr=1e-2, threads=1, out_dir=str(root), progress=False), quiet=True)
        if family == "lstm":
            (run / "last.pt").unlink()
    return root


@pytest.fixture(scope="module")
def local(checkpoints, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The local analysis (in this process) the Ray ones must equal."""
    out = tmp_path_factory.mktemp("local") / "out"
    table = analyze_all(checkpoints, out, workers=1, **FAST)
    assert len(table) == 3 and not table.attrs["tally"]["failed"]
    return out, table


def assert_same_analysis(local: tuple[Path, pd.DataFrame], out: Path, table: pd.DataFrame) -> None:
    """The same table rows (but when they were analysed) and the same generations as the local analysis."""
    local_out, expected = local
    timing = list(TIMING_COLUMNS)
    pd.testing.assert_frame_equal(expected.drop(columns=timing), table.drop(columns=timing), check_exact=False,
                                  rtol=1e-6)
    for run in expected["run"]:
        pd.testing.assert_frame_equal(pd.read_csv(local_out / run / "generations.csv"),
                                      pd.read_csv(out / run / "generations.csv"), check_exact=False, rtol=1e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_ray_running() -> None:
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")


def test_bad_flags_a_missing_ray_and_an_unreachable_cluster_are_one_line(checkpoints, tmp_path, monkeypatch):
    no_ray_running()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for flags, message in [(["--address", "head:6379"], "--address joins a Ray cluster: add --backend ray"),
                           (["--backend", "ray", "--address", f"127.0.0.1:{free_port()}"],  # nothing listens there
                            "cannot reach the Ray cluster at 127.0.0.1:")]:
        cli = subprocess.run([sys.executable, str(REPO / "analyze_all_checkpoints.py"), "--checkpoints",
                              str(checkpoints), "--out", str(out), *flags], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=120)
        assert cli.returncode == 2 and cli.stderr.startswith(f"error: {message}"), cli.stderr
        assert cli.stderr.count("\n") == 1 and not out.exists()
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ConfigError, match=r"--backend ray needs Ray: pip install -e \.\[ray\]"):
        analyze_all(checkpoints, out, backend="ray")
    assert not out.exists()


def test_ray_gives_the_local_rows_and_a_dead_task_fails_its_run_only(checkpoints, local, tmp_path, monkeypatch):
    no_ray_running()
    runs = sorted(p.name for p in checkpoints.iterdir())
    victim = runs[1]
    real = analysis.analyze_one

    def dies_on_victim(out_root, device, max_new_tokens, run_dir, **kwargs):
        if Path(run_dir).name == victim:
            os._exit(3)  # the task's worker process dies: no exception, no cleanup
        return real(out_root, device, max_new_tokens, run_dir, **kwargs)

    log_path = setup_logging("analyze", tmp_path / "logs", console=False)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PICOLLM_DATA_DIR": os.environ["PICOLLM_DATA_DIR"]}})
    try:
        table = analyze_all(checkpoints, tmp_path / "ray", backend="ray", **FAST)
        ray_seconds = time.perf_counter() - start
        monkeypatch.setattr(analysis, "analyze_one", dies_on_victim)  # goes with every task of the next analysis
        dead = analyze_all(checkpoints, tmp_path / "dead", backend="ray", **FAST)
    finally:
        ray.shutdown()
    print(f"Ray analysis of 3 runs: {ray_seconds:.1f} s with ray.init; with a dead task: "
          f"{time.perf_counter() - start - ray_seconds:.1f} s")

    assert sorted(table.attrs["tally"]["analyzed"]) == runs and not table.attrs["tally"]["failed"]
    assert_same_analysis(local, tmp_path / "ray", table)
    log = log_path.read_text()  # the tasks' own log lines, replayed into this process's log
    assert f"] {runs[1]}: no last.pt; generations from best.pt only" in log and "[ray " in log

    failed = dead.attrs["tally"]["failed"]
    assert list(failed) == [victim] and "\n" not in failed[victim]
    assert failed[victim].startswith("Ray task failed: ") and failed[victim].endswith("; run again to retry")
    assert sorted(dead.attrs["tally"]["analyzed"]) == [runs[0], runs[2]]
    assert list(dead["run"]) == [runs[0], runs[2]]  # the table holds the others' rows, written as they came
    assert not (tmp_path / "dead" / victim / "summary.json").exists()
    pd.testing.assert_frame_equal(dead.drop(columns=list(TIMING_COLUMNS)).reset_index(drop=True),
                                  table[table["run"] != victim].drop(columns=list(TIMING_COLUMNS))
                                  .reset_index(drop=True))


@contextlib.contextmanager
def two_node_cluster(logs: Path) -> Iterator[str]:
    """A head node and a worker node of one CPU each, started as a user starts them; yields HOST:PORT."""
    ray_cli = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # a trusted network: no token
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 characters
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    nodes = []
    try:
        for name, flags in [("head", ["--head", "--port", address.split(":")[1], "--include-dashboard=false",
                                      "--temp-dir", temp]),
                            ("worker", ["--address", address, "--resources", '{"second_node": 1}'])]:
            with open(logs / f"{name}.log", "w") as log:  # the child keeps its own descriptor
                nodes.append(subprocess.Popen([ray_cli, "start", *flags, *common], env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            if name == "head":  # the worker node joins once the head's port answers
                deadline = time.monotonic() + 60
                while not _answers(address):
                    assert time.monotonic() < deadline and nodes[0].poll() is None, (logs / "head.log").read_text()
                    time.sleep(0.2)
        yield address  # the driver waits for the worker node to register
    finally:
        for node in reversed(nodes):  # `ray start --block` stops the processes it started on SIGTERM
            node.send_signal(signal.SIGTERM)
        for node in reversed(nodes):
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _answers(address: str) -> bool:
    host, port = address.split(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


#: the driver, in a process of its own: Ray keeps the authentication mode it first saw for the life of a
#: process, so a driver joining this token-less cluster here would break a later test's local Ray
DRIVER = """
import json, sys, time
from pathlib import Path

import ray

import picollm.analyze.analysis as analysis

address, checkpoints, out, nodes = sys.argv[1:5]
ray.init(address=address, log_to_driver=False)  # wait for the worker node to register, then leave
deadline = time.monotonic() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.monotonic() < deadline, "the worker node did not join"
    time.sleep(0.2)
ray.shutdown()
real = analysis.analyze_one


def records_its_node(out_root, device, max_new_tokens, run_dir, **kwargs):
    import ray  # in the task's process

    (Path(nodes) / Path(run_dir).name).write_text(ray.get_runtime_context().get_node_id())
    return real(out_root, device, max_new_tokens, run_dir, **kwargs)


analysis.analyze_one = records_its_node  # goes with every task
start = time.perf_counter()
table = analysis.analyze_all(checkpoints, out, backend="ray", address=address, max_new_tokens=8, threads=1)
print(json.dumps({"tally": table.attrs["tally"], "joined": ray.is_initialized(),
                  "seconds": time.perf_counter() - start}))
"""


def test_a_two_node_cluster_analyses_on_both_nodes_with_the_local_rows(checkpoints, local, tmp_path):
    no_ray_running()
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with two_node_cluster(tmp_path) as address:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), address, str(checkpoints),
                               str(tmp_path / "out"), str(nodes)], env=env, capture_output=True, text=True,
                              timeout=300)
        analysed = time.perf_counter()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"two-node cluster: started in {started - start:.1f} s, 3 runs analysed in {analysed - started:.1f} s "
          f"(the driver's start and joining included), stopped in {time.perf_counter() - analysed:.1f} s")
    assert not result["joined"]  # analyze_all left the cluster it joined
    assert sorted(result["tally"]["analyzed"]) == sorted(local[1]["run"]) and not result["tally"]["failed"]
    assert_same_analysis(local, tmp_path / "out", read_table(tmp_path / "out" / TABLE_NAME))
    assert len({p.read_text() for p in nodes.iterdir()}) == 2  # the runs were spread over both nodes
