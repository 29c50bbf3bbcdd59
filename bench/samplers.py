#!/usr/bin/env python
"""TPE against random search at an equal number of runs: best validation loss found after 10, 20 and 40 runs.

    python bench/samplers.py [--seeds 5] [--runs 40] [--workers 2] [--out_dir bench_runs/samplers]

The space is the K-gram MLP's own settings and its learning rate on Tiny Shakespeare, 200 steps a run (a
few seconds each on a CPU). Every (sampler, seed) pair is one batch of --runs distinct configs; all batches
share one checkpoints folder, so a config drawn by two of them is trained once (picollm's fingerprints)
and the comparison costs far fewer than seeds x samplers x runs trainings. Resumable: run it again to
finish. Prints mean and standard deviation over seeds of the best val loss among the first 10 / 20 / 40
runs of each sampler, in the order the sampler chose them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picollm.core.log import setup_logging  # noqa: E402
from picollm.sweep.batch import train_batch  # noqa: E402

SPACE = {
    "description": "K-gram MLP on Tiny Shakespeare: its own settings and lr, 200 steps",
    "base": {"model": "kgram_mlp", "corpus": "tinyshakespeare", "max_steps": 200, "eval_interval": 100,
             "eval_tokens": 8192, "batch_size": 32, "block_size": 32, "warmup_steps": 20},
    "choices": {"lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "k": [1, 2, 3, 4, 6, 8], "embed": [8, 16, 32, 64],
                "hidden": [32, 64, 128, 256], "inner_layers": [1, 2, 3], "activation": ["relu", "gelu", "silu"]},
}
CHECKPOINTS = (10, 20, 40)


def best_so_far(losses: list[float], n: int) -> float:
    finite = [v for v in losses[:n] if v is not None and np.isfinite(v)]
    return min(finite) if finite else float("nan")


def study_losses(checkpoints: Path, name: str) -> list[float]:
    """Val loss of each distinct config of a study, in the order the sampler chose them."""
    import optuna

    from picollm.sweep.tuning import journal_path, storage

    study = optuna.load_study(study_name=name, storage=storage(journal_path(checkpoints, name)))
    return [t.values[0] if t.values else float("nan") for t in study.trials
            if t.user_attrs.get("fingerprint") and not t.user_attrs.get("duplicate")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out_dir", default="bench_runs/samplers")
    args = p.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup_logging("bench-samplers", out / "logs", console=False)
    results: dict[str, list[list[float]]] = {"random": [], "tpe": []}
    for seed in range(args.seeds):
        for sampler in results:
            space = out / f"kgram-{sampler}-seed{seed}.json"  # one Optuna study per seed: studies are named by file
            space.write_text(json.dumps(SPACE))
            report = train_batch(space=str(space), sampler=sampler, n_runs=args.runs, seed=seed, workers=args.workers,
                                 out_dir=out / "checkpoints", log_dir=out / "logs", console=False)
            losses = [o.val_loss for o in report.outcomes]
            if sampler == "tpe":  # the study knows every trial, also those of an earlier, interrupted call
                losses = study_losses(out / "checkpoints", space.stem)
            results[sampler].append(losses)
            print(f"seed {seed} {sampler:>6}: " + "  ".join(f"best@{n} {best_so_far(losses, n):.4f}" for n in CHECKPOINTS),
                  flush=True)
    print(f"\nbest val loss found (mean +- std over {args.seeds} sampler seeds; 200-step K-gram runs, lower is better)")
    print("| runs | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for n in CHECKPOINTS:
        cells = []
        for per_seed in results.values():
            best = np.array([best_so_far(losses, n) for losses in per_seed])
            cells.append(f"{np.nanmean(best):.4f} +- {np.nanstd(best):.4f}")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
