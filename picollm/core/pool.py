"""Local worker processes, each given one task at a time: the batch trains runs with them, the analysis
analyses runs with them, under one rule for failures.

Hand-written because the libraries at hand do not keep that rule: a task is sent to a known process, so
when a worker dies (killed, out of memory) exactly its task fails, the worker is replaced and the others
carry on. concurrent.futures breaks the whole pool on one death, and joblib's loky cannot say which task
was lost. Workers also exit when the parent process dies (a lifeline pipe), so no orphan keeps training a
run that a rerun of the batch is about to resume.

A worker imports as its parent does (the parent's sys.path at the time the worker starts, which a forkserver,
started once, would otherwise freeze), and runs the pool's initializer first: the batch passes one that
registers its model families there (picollm.models.families_initializer).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Any, Generic, TypeVar

from picollm.core import resources
from picollm.core.log import get_logger

T = TypeVar("T")


@dataclass(frozen=True)
class Slot:
    """Where a task runs: the worker's index, its GPU (None: the task's own device) and its torch threads."""

    index: int
    device: str | None
    threads: int


def died(exitcode: int | None) -> str:
    """The reason given for a task whose worker died."""
    return f"worker process died (exit code {exitcode}): killed or out of memory"


#: after its parent dies, how long a worker's task may take to stop (say so in its files) before the worker exits
ORPHAN_GRACE_S = 10.0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the task ends as Ctrl-C ends it: a training run marks itself interrupted


def _exit_with_parent(lifeline) -> None:
    """When the parent process dies (its end of the lifeline closes), stop the task as the pool's close() does
    (SIGTERM, which interrupts it), and exit outright if it has not stopped within ORPHAN_GRACE_S."""

    def watch() -> None:
        try:
            lifeline.recv_bytes()
        except (EOFError, OSError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="lifeline").start()


def _log_to(log_path: str, slot: int) -> None:
    logger = get_logger()
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [worker {slot}] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def _worker_main(slot: int, device: str | None, log_path: str | None, conn, lifeline,
                 fn: Callable[[Any, Slot], Any], sys_path: list[str],
                 initializer: Callable[[], Any] | None) -> None:
    """A worker: receive (task id, threads, payload), send back (task id, fn(payload, slot)), until told to stop.
    SIGTERM (the pool closing) and SIGINT (Ctrl-C in the terminal) interrupt the task, which can say so in its
    files (a training run's status becomes 'interrupted'), and end the worker quietly."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        _serve(slot, device, log_path, conn, lifeline, fn, sys_path, initializer)
    except KeyboardInterrupt:
        pass


def _serve(slot: int, device: str | None, log_path: str | None, conn, lifeline,
           fn: Callable[[Any, Slot], Any], sys_path: list[str], initializer: Callable[[], Any] | None) -> None:
    _exit_with_parent(lifeline)
    sys.path[:] = sys_path
    # imported after the path is set, so a worker imports as its parent does
    import torch
    from tqdm.auto import tqdm

    tqdm.set_lock(threading.RLock())  # tqdm's default is a multiprocessing lock, leaked when a worker is stopped
    if log_path:
        _log_to(log_path, slot)
    if initializer is not None:
        initializer()
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent process is gone
            return
        if message is None:
            return
        task_id, threads, payload = message
        if threads:
            torch.set_num_threads(threads)
        conn.send((task_id, fn(payload, Slot(slot, device, threads))))


def worker_context(preload: Sequence[str] = ()) -> mp.context.BaseContext:
    """forkserver where available: one server process imports torch (and `preload`) once and every worker
    forks from it (fast to start, and safe: the server has never run a torch thread pool or touched CUDA);
    else spawn. Never a fork of the parent, which may hold threads and CUDA state."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", *preload])
        return ctx
    return mp.get_context("spawn")


class WorkerPool(Generic[T]):
    """`workers` processes, each fed one task at a time through its own pipe.

    fn(payload, slot) runs in a worker and must be importable (a module-level function or a partial of one).
    threads: torch threads per task; 0 sizes them as each task starts, to the cores left by the other picollm
    jobs running then (job: this job's resources.Registration). devices: GPUs handed to the slots in turn.
    on_death(reason) is the result of a task whose worker died. initializer() runs in every worker as it starts
    (importable, like fn).
    """

    def __init__(self, workers: int, fn: Callable[[Any, Slot], Any], on_death: Callable[[str], Any],
                 threads: int = 0, devices: Sequence[str] | None = None, log_path: str | None = None,
                 job: resources.Registration | None = None, preload: Sequence[str] = (),
                 initializer: Callable[[], Any] | None = None) -> None:
        self.ctx = worker_context(preload)
        self.initializer = initializer
        self.fn, self.on_death, self.threads, self.job = fn, on_death, threads, job
        self.devices = list(devices) if devices else None
        self.log_path = str(log_path) if log_path else None
        self.slots: list[tuple[Any, Any] | None] = [None] * workers
        self.lifeline_r, self.lifeline_w = self.ctx.Pipe(duplex=False)  # only this process holds the write end

    def _start(self, slot: int) -> None:
        device = self.devices[slot % len(self.devices)] if self.devices else None
        parent_conn, child_conn = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, daemon=True, name=f"picollm-worker-{slot}",
                                args=(slot, device, self.log_path, child_conn, self.lifeline_r, self.fn,
                                      list(sys.path), self.initializer))
        proc.start()
        child_conn.close()
        self.slots[slot] = (proc, parent_conn)

    def _send(self, slot: int, task_id: int, payload: Any) -> None:
        if self.slots[slot] is None or not self.slots[slot][0].is_alive():
            self._start(slot)
        threads = self.threads or resources.threads_per_process(len(self.slots), self.job)
        self.slots[slot][1].send((task_id, threads, payload))

    def _receive(self, slot: int) -> tuple[int | None, Any]:
        """(task id, result) from a ready slot; (None, exit code) if its worker died."""
        proc, conn = self.slots[slot]
        try:
            if not conn.poll():
                raise EOFError
            return conn.recv()
        except (EOFError, OSError):
            proc.join(timeout=5)
            self.slots[slot] = None
            return None, proc.exitcode

    def run(self, tasks: list[T], payload: Callable[[T], Any] = lambda task: task) -> Iterator[tuple[T, Any]]:
        """Yield (task, result) as each task finishes. `tasks` may grow while the results are consumed (an
        ask-and-tell sampler appends the next trial as each result comes back)."""
        sent = 0
        busy: dict[int, int] = {}  # slot -> task index
        while sent < len(tasks) or busy:
            for slot in range(len(self.slots)):
                if sent < len(tasks) and slot not in busy:
                    self._send(slot, sent, payload(tasks[sent]))
                    busy[slot], sent = sent, sent + 1
            handles = {}
            for slot in busy:
                proc, conn = self.slots[slot]
                handles[conn], handles[proc.sentinel] = slot, slot
            for ready in wait_any(list(handles)):
                slot = handles[ready]
                if slot not in busy:
                    continue  # its pipe and its sentinel were both ready
                task_id, result = self._receive(slot)
                if task_id is None:
                    task_id, result = busy[slot], self.on_death(died(result))
                del busy[slot]
                yield tasks[task_id], result

    def close(self) -> None:
        """Stop the workers (a busy one is terminated: a training run resumes from its last checkpoint)."""
        for entry in self.slots:
            if entry is not None:
                entry[0].terminate()
        for entry in self.slots:
            if entry is not None:
                entry[0].join()
                entry[1].close()
        self.slots = [None] * len(self.slots)
