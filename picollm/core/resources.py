"""CPU sharing between the picollm jobs (batches, analyses) running on one machine at the same time.

    cores = cpu_cores()                                     # what this process may use
    with registered("analyze", processes=2) as job:         # others now see our 2 busy processes
        torch.set_num_threads(threads_per_process(2, job))  # before each run: cores / every job's processes
    workers, note = cap_workers(8)                          # (2, "--workers 8 > 2 cores: ...") on 2 cores

torch sizes its thread pool to the whole machine. Two jobs that each do so on the same cores run
several times slower than one after the other (OpenMP threads spin while waiting for a core), so every
job registers the processes it keeps busy, and each process sizes its threads to its share of the cores
when a run starts. The registry is a directory ($PICOLLM_JOBS_DIR, default ~/.cache/picollm/jobs) of one
small JSON file per job, each held under an exclusive flock by the job's process for as long as it lives:
the kernel drops the lock when the process dies (SIGKILL included), so a file whose lock can be taken
belongs to a dead job and is removed, and a recycled pid can never pass for a live job.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

JOBS_DIR_ENV = "PICOLLM_JOBS_DIR"


def cpu_cores() -> int:
    """The cores this process may use: its CPU affinity, lowered by a cgroup (container) CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def cap_workers(workers: int, flag: str = "--workers") -> tuple[int, str | None]:
    """At most one worker process per core, and the note to log when that lowered `workers`.

    Each extra CPU-bound process only adds start-up, memory and cache contention: 8 workers on 2 cores
    were measured 1.4x slower than 2.
    """
    cores = cpu_cores()
    if workers <= cores:
        return workers, None
    return cores, (f"{flag} {workers} > {cores} cores: using {cores} worker processes "
                   f"(more would only compete for the CPU)")


def jobs_dir() -> Path:
    return Path(os.environ.get(JOBS_DIR_ENV) or Path.home() / ".cache" / "picollm" / "jobs")


def _machine() -> str:
    """Who shares our cores: the kernel's boot id (the containers of one machine share it; VMs and cluster
    nodes that share a home directory do not), else the host name."""
    try:
        return "boot" + Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return socket.gethostname().replace("-", "_")


@dataclass(frozen=True)
class Registration:
    """A live job's entry in the registry. Picklable, so worker processes size their threads against it."""

    directory: str
    key: str
    processes: int


@contextmanager
def registered(kind: str, processes: int) -> Iterator[Registration]:
    """Register this job (`processes` busy processes) until the block exits or the process dies.

    Where the registry directory cannot be written the job runs unseen by the others, but still sizes its
    own threads: sharing the cores is an optimisation that must never stop a job.
    """
    directory = jobs_dir()
    host = _machine()
    key = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path = directory / f"{key}.json"
    fd = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # written and locked under a name readers skip, then renamed: a reader never sees an unlocked entry
        tmp = directory / f".{key}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"host": host, "pid": os.getpid(), "kind": kind, "processes": processes,
                                 "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        os.rename(tmp, path)
    except OSError:
        if fd is not None:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
        fd = None
    try:
        yield Registration(str(directory), key, processes)
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)
            os.close(fd)


def running_jobs(directory: str | Path | None = None) -> dict[str, dict]:
    """The live jobs of this host in the registry, by key; entries left by dead processes are removed."""
    directory = Path(directory) if directory else jobs_dir()
    host, jobs = _machine(), {}
    try:
        paths = list(directory.glob("*.json"))
    except OSError:
        return {}
    for path in paths:
        if not path.name.startswith(f"{host}-"):  # a directory shared between machines: not our cores
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # removed meanwhile by its job
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its owner is alive and holds the lock
                jobs[path.stem] = _read_entry(fd)
            else:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return jobs


def _read_entry(fd: int) -> dict:
    try:
        entry = json.loads(os.read(fd, 1 << 16))
        entry["processes"] = max(1, int(entry.get("processes", 1)))
        return entry
    except (ValueError, TypeError, AttributeError):  # not written by picollm: count it as one process
        return {"processes": 1}


def threads_per_process(processes: int = 1, job: Registration | None = None) -> int:
    """Torch threads for each busy process of a job: the cores split evenly over its processes and those
    of every other running picollm job (at least 1).

    job: this job's registration (its own entry is not counted twice); None for an unregistered job of
    `processes` processes.
    """
    others = running_jobs(job.directory if job else None)
    if job is not None:
        others.pop(job.key, None)
        processes = job.processes
    busy = processes + sum(j["processes"] for j in others.values())
    return max(1, cpu_cores() // busy)
