"""LSTM vs xLSTM (ours) vs xLSTM (library) vs Transformer on a word-level corpus at matched parameter counts.

    python xlstm_study.py lm --max_steps 300 --embed 64 --layers 2 --test_tokens 20000

Every family shares the embedding size (so the tied embedding, most of the parameters at word level, is
the same); the xLSTMs (ours with hidden == embed, so it is the library's architecture) set the target count
and the LSTM's hidden size / layers and the Transformer's layers are searched to match it. Each model is
trained with `train_run` and scored with `analysis.test_metrics` (token_losses on the test split): test
perplexity overall and by the training-frequency bucket of the target (rare < 100 <= medium <= 1000 <
frequent). Writes lm_results.csv, lm_results.md and lm_buckets.png into the output directory.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from picollm.analyze.analysis import test_metrics
from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger
from picollm.data.batching import prepare_data
from picollm.experiments.settings import LMExperiment
from picollm.models import build_model
from picollm.runs.checkpoint import load_run
from picollm.runs.layout import run_summary
from picollm.study.common import markdown_table
from picollm.train.loop import train_run

log = get_logger()

FAMILIES = ("lstm", "xlstm", "xlstm_lib", "transformer")
LABELS = {"lstm": "LSTM", "xlstm": "xLSTM (ours)", "xlstm_lib": "xLSTM (library)", "transformer": "Transformer"}
BUCKET_COLUMNS = ["test_ppl", "test_ppl_rare", "test_ppl_medium", "test_ppl_frequent"]


def count_params(cfg: RunConfig, vocab_size: int) -> tuple[int, int]:
    """(all parameters, parameters outside the token embedding) of the model cfg describes."""

    torch.manual_seed(0)
    model = build_model(cfg, vocab_size)
    return model.num_params(), model.num_params() - model.embedding_matrix().numel()


def match_sizes(base: RunConfig, vocab_size: int, families: tuple[str, ...] = FAMILIES,
                tolerance: float = 0.10) -> dict[str, dict]:
    """family -> {overrides, params, non_embedding}: settings whose parameter counts are within `tolerance`
    of the xLSTM's (ours, hidden = embed). The LSTM searches hidden (multiples of 8) and layers 1-2, the
    Transformer layers 1-12, both minimising the gap in parameters outside the shared embedding."""
    E = base.embed
    xl = {"model": "xlstm", "hidden": E}
    target_all, target_ne = count_params(base.replace(**xl), vocab_size)
    found: dict[str, dict] = {}
    for family in families:
        if family in ("xlstm", "xlstm_lib"):
            candidates = [xl if family == "xlstm" else {"model": "xlstm_lib"}]
        elif family == "lstm":
            candidates = [{"model": "lstm", "layers": n, "hidden": h} for n in (1, 2) for h in range(8, 4 * E + 1, 8)]
        elif family == "transformer":
            candidates = [{"model": "transformer", "layers": n} for n in range(1, 13)]
        else:
            raise ConfigError(f"the LM study compares {', '.join(FAMILIES)}; got {family!r}")
        best = None
        for over in candidates:
            n_all, n_ne = count_params(base.replace(**over), vocab_size)
            if best is None or abs(n_ne - target_ne) < abs(best["non_embedding"] - target_ne):
                best = {"overrides": over, "params": n_all, "non_embedding": n_ne}
        found[family] = best
    for family, res in found.items():
        if abs(res["params"] - target_all) > tolerance * target_all:
            raise ConfigError(f"no {family} size within {tolerance:.0%} of the xLSTM's {target_all:,} parameters "
                              f"(best {res['params']:,}); change --embed / --layers")
    return found


def plot_buckets(df: pd.DataFrame, path: Path, title: str) -> None:
    """Grouped bars: test perplexity (log scale) overall and per frequency bucket, one bar per family."""
    from matplotlib.figure import (
        Figure,  # matplotlib only where a figure is drawn; no pyplot, no backend switch
    )

    groups = ["overall", "rare", "medium", "frequent"]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    width = 0.8 / len(df)
    for j, row in enumerate(df.itertuples(index=False)):
        values = [getattr(row, c) for c in BUCKET_COLUMNS]
        ax.bar([g + j * width for g in range(len(groups))], values, width, label=f"{row.model} ({row.params:,})")
    ax.set_xticks([g + width * (len(df) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_yscale("log")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_lm_experiment(out_dir: Path | str = "analysis_runs/xlstm_study", families: tuple[str, ...] = FAMILIES,
                 threads: int = 0, **settings: Any) -> pd.DataFrame:
    """Train every family at matched size, evaluate on the test split, write CSV + Markdown + plot.

    settings: LMExperiment fields. test_tokens caps the scored test tokens (0 = the whole split). batching "auto"
    trains the LSTM and our xLSTM on carried-state streams and the others on random windows; "random" trains
    every family on random windows (separates the batching from the architecture). Finished runs are reused
    (same config, same run directory), so re-running only re-evaluates."""
    st = LMExperiment(**settings)
    corpus, max_steps, embed, layers = st.corpus, st.max_steps, st.embed, st.layers
    batch_size, block_size, batching = st.batch_size, st.block_size, st.batching

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    base = RunConfig(corpus=corpus, tokenizer=st.tokenizer, embed=embed, layers=layers, heads=st.heads,
                     block_size=block_size, batch_size=batch_size, lr=st.lr, max_steps=max_steps,
                     eval_interval=max_steps, warmup_steps=min(50, max_steps // 10), eval_tokens=st.eval_tokens,
                     xlstm_ratio="1:1", seed=st.seed, out_dir=str(out / "checkpoints"), threads=threads,
                     # the recipe the published study ran (AdamW, cosine to 0.1 x lr, learned positions), whatever
                     # the defaults
                     optimizer="adamw", schedule="cosine", min_lr_ratio=0.1, positional="learned", qk_norm=False)
    tok, splits = prepare_data(corpus, base.resolved().tokenizer)
    sizes = match_sizes(base, tok.vocab_size, families)
    for family, res in sizes.items():
        log.info(f"{LABELS[family]:>16}: {res['params']:>10,} parameters ({res['non_embedding']:,} outside the "
                 f"embedding) with {res['overrides']}")
    test_ids = splits["test"][: st.test_tokens + 1] if st.test_tokens else splits["test"]
    rows = []
    for family in families:
        over = dict(sizes[family]["overrides"])
        # the library's state is a recomputed window, so it always trains like the Transformer
        if batching == "random" or family == "xlstm_lib":
            over["batching"] = "random"
        cfg = base.replace(**over)
        if batching == "auto" and family in ("lstm", "xlstm"):  # spelled out: the xLSTM's default has moved since
            cfg = cfg.replace(batching="stream")
        t0 = time.perf_counter()
        run_dir = train_run(cfg)
        train_wall = time.perf_counter() - t0
        _, _, model, _ = load_run(run_dir)
        t0 = time.perf_counter()
        metrics = test_metrics(model, splits["train"], test_ids, tok.vocab_size, batch_size, block_size,
                               torch.device("cpu"))
        summary = run_summary(run_dir)
        rows.append({"model": LABELS[family], "family": family, "params": sizes[family]["params"],
                     "non_embedding": sizes[family]["non_embedding"],
                     "settings": " ".join(f"{k}={v}" for k, v in over.items() if k != "model"),
                     "val_ppl": summary.get("val_ppl", math.nan), **{c: metrics[c] for c in BUCKET_COLUMNS},
                     "test_tokens": metrics["test_tokens"], "rare_tokens": metrics["test_tokens_rare"],
                     "medium_tokens": metrics["test_tokens_medium"],
                     "frequent_tokens": metrics["test_tokens_frequent"],
                     "train_seconds": summary.get("train_seconds", train_wall),
                     "eval_seconds": time.perf_counter() - t0, "run": run_dir.name})
        log.info(f"{LABELS[family]}: test ppl {metrics['test_ppl']:.1f}")
    df = pd.DataFrame(rows)
    df.to_csv(out / "lm_results.csv", index=False)
    shown = df[["model", "params", "non_embedding", "val_ppl", *BUCKET_COLUMNS, "train_seconds"]]
    header = (f"{corpus}, {max_steps} steps of {batch_size} x {block_size} tokens, embed {embed}, "
              f"{layers} xLSTM blocks, test perplexity on {int(df['test_tokens'].iloc[0]):,} test tokens\n\n")
    (out / "lm_results.md").write_text(header + markdown_table(shown, floatfmt=".2f"))
    plot_buckets(df, out / "lm_buckets.png", f"{corpus}: test perplexity by training frequency ({max_steps} steps)")
    return df

