"""Worker processes: every task's result comes back, a dead worker fails its own task only, tasks may be added
while results are read, and each task gets the threads and the GPU slot it was given."""

import os

from picollm.core.pool import Slot, WorkerPool


def square_or_die(n, slot: Slot):
    """A task function: n * n, but the worker dies outright for n == 3."""
    if n == 3:
        os._exit(7)
    return n * n, os.getpid()


def what_the_slot_gave(n, slot: Slot):
    import torch

    return slot.index, slot.device, slot.threads, torch.get_num_threads()


def test_a_dead_worker_fails_only_its_task_and_is_replaced():
    pool = WorkerPool(2, square_or_die, on_death=lambda reason: ("died", reason), threads=1)
    tasks = [1, 2, 3, 4]
    try:
        results = {}
        for task, result in pool.run(tasks):
            results[task] = result
            if task == 1:
                tasks.append(5)  # an ask-and-tell sampler adds work as results come in
    finally:
        pool.close()
    assert set(results) == {1, 2, 3, 4, 5}
    assert results[3] == ("died", "worker process died (exit code 7): killed or out of memory")
    assert all(results[n][0] == n * n for n in (1, 2, 4, 5))
    assert len({results[n][1] for n in (1, 2, 4, 5)}) >= 2  # two workers, and one replaced after the death


def test_each_task_runs_with_its_slots_threads_and_device():
    pool = WorkerPool(2, what_the_slot_gave, on_death=str, threads=1, devices=["cuda:0", "cuda:1"])
    try:
        seen = sorted(result for _, result in pool.run([10, 11]))
    finally:
        pool.close()
    assert seen == [(0, "cuda:0", 1, 1), (1, "cuda:1", 1, 1)]
