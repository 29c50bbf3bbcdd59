"""A batch's settings: train_batch's keywords and batch_train.py's flags (BatchSettings), then one override flag
per RunConfig field, applied on top of every sampled config."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from picollm.config import add_config_args, config_overrides
from picollm.core.errors import ConfigError
from picollm.core.ray_tasks import BACKENDS, check_backend
from picollm.core.settings import add_settings_args, setting, settings_from_args, validate_settings
from picollm.sweep.samplers import SAMPLERS
from picollm.sweep.space import DEFAULT_PRESET, preset_names
from picollm.sweep.tuning import OBJECTIVES, PRUNERS, parse_objectives

#: RunConfig fields that the batch sets itself, or whose flag name the batch uses for something else
BATCH_OWNED = ("seed", "max_steps", "out_dir", "device", "parent", "progress")


@dataclass(frozen=True)
class BatchSettings:
    """How a batch samples and trains a space: train_batch's keywords and batch_train.py's flags."""

    preset: str | None = setting(None, f"named search space: {', '.join(preset_names())} (default: {DEFAULT_PRESET})",
                                 kind=str)
    space: str | None = setting(None, "search space file (.yaml / .json; format: picollm/sweep/space.py)", kind=str)
    sampler: str | None = setting(None, "how configs are drawn (default: the space's own)", choices=SAMPLERS, kind=str)
    n_runs: int | None = setting(None, "configs to draw (random / halving; grid: the first n)", bounds="[1, inf)",
                                 kind=int)
    seed: int = setting(0, "sampler seed (the runs' own seed is a run setting)", bounds="[0, 4294967295]")
    workers: int | None = setting(None, "parallel runs (default: one per core, or --runs_per_gpu per GPU; at "
                                  "most one per core on the CPU)", bounds="[1, inf)", kind=int)
    max_steps: int | None = setting(None, "cap every config's step budget (a quick batch)", bounds="[1, inf)",
                                    kind=int)
    skip_existing: bool = setting(True, "skip finished runs (--no-skip_existing retrains them; the old run is "
                                  "kept until the new one has run)")
    continue_best: float | None = setting(None, "then train the best finished run for this many more epochs "
                                          "(default: the space's)", bounds="[0, inf)", kind=float)
    eta: int | None = setting(None, "halving: keep the best 1/eta at every rung (default: the space's, 3)",
                              bounds="[2, inf)", kind=int)
    device: str | None = setting(None, "cpu, cuda, cuda:N or mps for every run (default: the space's, cpu)",
                                 kind=str)
    dry_run: bool = setting(False, "print the configs, their step budgets and which are done; train nothing")
    estimate: int = setting(0, "dry run: time this many training steps of every config and estimate the "
                            "batch's wall time (0 = off)", bounds="[0, inf)")
    out_dir: str = setting("checkpoints", "root directory of run directories")
    log_dir: str = setting("logs", "where the batch log and manifest go")
    backend: str = setting("local", "local processes or Ray tasks", choices=BACKENDS)
    address: str | None = setting(None, "Ray cluster HOST:PORT to join (--backend ray; default: a local Ray)",
                                  kind=str)
    gpus_per_run: float | None = setting(None, "Ray: GPUs reserved per run, e.g. 0.25 packs 4 per GPU",
                                         bounds="(0, inf)", kind=float)
    runs_per_gpu: int | None = setting(None, "runs that share each GPU (local: K workers per GPU; Ray: 1/K GPU)",
                                       bounds="[1, inf)", kind=int)
    pruner: str = setting("none", "Optuna samplers: stop runs early from their validation curves", choices=PRUNERS)
    objectives: str = setting("val_loss", f"Optuna samplers: what to minimise, a comma list of {', '.join(OBJECTIVES)} "
                              "(two or more: multi-objective, e.g. with --sampler nsga2)")

    def __post_init__(self) -> None:
        validate_settings(self)
        check_backend(self.backend, self.address)
        if self.estimate and not self.dry_run:
            raise ConfigError("--estimate times the configs of a dry run: add --dry_run")
        parse_objectives(self.objectives)


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    """The batch flags, then one override flag per RunConfig field (applied on top of every sampled config)."""
    add_settings_args(parser, BatchSettings, group_title="batch")
    add_config_args(parser, exclude=BATCH_OWNED, group_title="run settings (override every sampled config)")


def batch_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """train_batch's keyword arguments from parsed add_batch_args flags."""
    overrides = {k: v for k, v in config_overrides(args).items() if k not in BATCH_OWNED}  # --seed etc. are ours
    return {**settings_from_args(args, BatchSettings), "overrides": overrides}
