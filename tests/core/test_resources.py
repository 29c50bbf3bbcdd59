"""CPU sharing between picollm jobs: the registry of running jobs, thread sizing, the worker cap."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from picollm.core import resources

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def eight_cores(tmp_path, monkeypatch):
    """An empty registry of our own (other jobs on this machine must not count) and 8 cores."""
    monkeypatch.setenv(resources.JOBS_DIR_ENV, str(tmp_path / "jobs"))
    monkeypatch.setattr(resources, "cpu_cores", lambda: 8)
    return tmp_path / "jobs"


def start_job(processes: int) -> subprocess.Popen:
    """Another process that registers a job of `processes` processes and holds it until killed."""
    script = textwrap.dedent(f"""
        import time
        from picollm.core.resources import registered
        with registered("other", {processes}):
            print("registered", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "registered"
    return proc


def test_threads_split_the_cores_over_every_running_job_and_ignore_dead_ones(eight_cores):
    assert resources.threads_per_process(1) == 8 and resources.threads_per_process(2) == 4
    with resources.registered("batch", 2) as me:
        assert resources.threads_per_process(2, me) == 4  # our own entry is not counted twice
        other = start_job(3)
        try:
            assert resources.threads_per_process(2, me) == 1  # 8 cores // (2 + 3)
            assert resources.threads_per_process(1) == 1  # a third job sees both: 8 // (1 + 2 + 3)
            assert {j["kind"]: j["processes"] for j in resources.running_jobs().values()} == {"batch": 2, "other": 3}
        finally:
            other.send_signal(signal.SIGKILL)  # no cleanup: its entry stays behind
            other.wait()
        assert len(list(eight_cores.glob("*.json"))) == 2
        assert resources.threads_per_process(2, me) == 4  # the dead job's entry no longer counts...
        assert len(list(eight_cores.glob("*.json"))) == 1  # ...and is removed
    assert not list(eight_cores.iterdir())  # a job that ends removes its entry


def test_entries_of_other_machines_and_foreign_files_are_handled(eight_cores):
    eight_cores.mkdir(parents=True)
    # a registry directory shared between machines (an NFS home): another host's jobs use other cores
    (eight_cores / "elsewhere-123-abcd.json").write_text(json.dumps({"processes": 6}))
    assert resources.threads_per_process(1) == 8
    assert (eight_cores / "elsewhere-123-abcd.json").exists()  # not ours to judge or remove
    with resources.registered("analyze", 1) as me:
        path = eight_cores / f"{me.key}.json"
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert json.loads(path.read_text())["host"] == me.key.split("-")[0]


def test_an_unwritable_registry_never_stops_a_job(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(resources.JOBS_DIR_ENV, str(blocker / "jobs"))  # below a file: cannot be created
    monkeypatch.setattr(resources, "cpu_cores", lambda: 4)
    with resources.registered("batch", 2) as me:
        assert resources.threads_per_process(2, me) == 2


def test_workers_are_capped_at_the_cores_with_a_note(monkeypatch):
    monkeypatch.setattr(resources, "cpu_cores", lambda: 2)
    assert resources.cap_workers(2) == (2, None)
    workers, note = resources.cap_workers(8)
    assert workers == 2 and "--workers 8 > 2 cores" in note and "\n" not in note


def test_cpu_cores_is_what_this_process_may_use():
    cores = resources.cpu_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cores <= len(os.sched_getaffinity(0))
