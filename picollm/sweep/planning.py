"""Planning a batch before it trains: step budgets, what the batch does to every sampled config (Placement), and
its resources (workers, torch threads per worker, GPU slots).

Each run gets cores // (this batch's workers + the busy processes of the other picollm jobs running on this
machine) torch threads, sized when it starts (picollm.core.resources), unless --threads is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from picollm.config import RunConfig
from picollm.core import resources
from picollm.core.errors import ConfigError


def total_steps_of(cfg: RunConfig) -> int:
    """The run's full step budget (epochs are converted with the corpus's training split)."""
    if cfg.epochs <= 0:
        return cfg.max_steps
    # torch: only configs counted in epochs need it (their budget depends on the tokenized corpus)
    from picollm.data.batching import prepare_data
    from picollm.train.loop import total_steps

    r = cfg.resolved()
    return total_steps(cfg, len(prepare_data(cfg.corpus, r.tokenizer, r.bpe_vocab_size)[1]["train"]))


def cap_steps(configs: list[RunConfig], cap: int) -> list[RunConfig]:
    """Every config trained for at most `cap` steps (epochs become steps), one per fingerprint."""
    out, seen = [], set()
    for cfg in configs:
        total = total_steps_of(cfg)
        if cfg.epochs > 0 or total > cap:
            cfg = cfg.replace(epochs=0.0, max_steps=min(cap, total))
        if cfg.fingerprint() not in seen:
            seen.add(cfg.fingerprint())
            out.append(cfg)
    return out


@dataclass
class Placement:
    """What the batch does to every config a sampler gives it: place() caps the step budget (--max_steps) and
    puts the run in out_dir; finish() then fixes its torch threads, once the batch's resources are planned
    (threads 0: each run's are sized as it starts)."""

    out_dir: Path
    max_steps: int | None = None
    threads: int = 0

    def place(self, configs: list[RunConfig]) -> list[RunConfig]:
        """The configs capped (one per fingerprint) and in out_dir, in order."""
        if self.max_steps:
            configs = cap_steps(configs, self.max_steps)
        return [c.replace(out_dir=str(self.out_dir), progress=False) for c in configs]

    def finish(self, cfg: RunConfig) -> RunConfig:
        return cfg.replace(threads=self.threads) if self.threads else cfg


@dataclass
class Resources:
    workers: int
    threads: int
    devices: list[str] | None
    """per worker slot (local backend with CUDA); None on CPU"""
    gpus_per_run: float
    notes: list[str] = field(default_factory=list)
    """warnings for the log (flags that do not apply here)"""


def plan_resources(configs: list[RunConfig], backend: str, workers: int | None, runs_per_gpu: int | None,
                   gpus_per_run: float | None, threads: int | None, address: str | None = None) -> Resources:
    """Workers, torch threads per worker (workers x threads <= cores) and GPU slots for this batch.

    Runs on this machine's CPU get at most one worker per core. threads is what the runs would get now,
    beside the other picollm jobs running; local workers size it again as each run starts.
    """
    for name, value in (("workers", workers), ("runs_per_gpu", runs_per_gpu)):
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be >= 1; got {value}")
    if gpus_per_run is not None and gpus_per_run <= 0:
        raise ConfigError(f"--gpus_per_run must be > 0 (e.g. 0.25); got {gpus_per_run}")
    cores, notes = resources.cpu_cores(), []
    cuda = sorted({c.device for c in configs if c.device.startswith("cuda")})
    devices = None
    if workers and not cuda and (backend == "local" or not address):
        workers, note = resources.cap_workers(workers)
        notes += [note] if note else []
    if backend == "ray":
        if runs_per_gpu and gpus_per_run and abs(gpus_per_run - 1 / runs_per_gpu) > 1e-9:
            raise ConfigError(f"--runs_per_gpu {runs_per_gpu} means --gpus_per_run {1 / runs_per_gpu:g}; give one of them")
        gpus = gpus_per_run or (1 / runs_per_gpu if runs_per_gpu else (1.0 if cuda else 0.0))
        n = workers or min(len(configs), cores)
    else:
        if gpus_per_run is not None:
            notes.append("--gpus_per_run ignored: it is for --backend ray; locally, pack runs with --runs_per_gpu")
        gpus = 0.0
        if cuda:
            devices = _cuda_devices(cuda)
            n = workers or (runs_per_gpu or 1) * len(devices)
        else:
            if runs_per_gpu:
                notes.append("--runs_per_gpu ignored: the runs are on the CPU (use --device cuda to pack GPUs)")
            n = workers or min(len(configs), cores)
    n = max(1, min(n, len(configs)))
    per = threads or resources.threads_per_process(n)
    if n * per > cores and backend == "local" and not cuda:
        notes.append(f"{n} workers x {per} threads > {cores} cores: runs will compete for the CPU")
    return Resources(workers=n, threads=per, devices=devices, gpus_per_run=gpus, notes=notes)


def _cuda_devices(cuda: list[str]) -> list[str]:
    """The GPUs local workers take turns on: the configs' own cuda:N, or every GPU here for plain 'cuda'."""
    import torch  # only a batch on CUDA asks

    if not torch.cuda.is_available():
        raise ConfigError(f"--device {cuda[0]} asked for, but CUDA is not available here; use --device cpu")
    explicit = [d for d in cuda if d != "cuda"]
    return explicit or [f"cuda:{i}" for i in range(torch.cuda.device_count())]
