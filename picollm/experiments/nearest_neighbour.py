"""Nearest-neighbour search, a synthetic sequence task: N reference vectors with labels, then a query; the
model must output the label of the reference nearest (Euclidean) to the query.

    python xlstm_study.py nn --lengths 4,8,16,32 --steps 400

Input. Each position is one continuous vector [x (dim), one-hot label (classes), is-query flag]: references
carry their label, the query (last position) a zero label and flag 1. Choice: the vectors go in through a
small linear input projection in front of each family's own block stack (LSTM layers, xLSTM blocks, the
library's xLSTMBlockStack, Transformer blocks with learned positions), and a linear read-out on the last
position's output predicts the label; quantising vectors into tokens would make the task about the
quantiser. One model per (family, number of references), trained from scratch on fresh random batches;
accuracy on a fixed held-out set (chance = 1 / classes). Writes nn_results.csv / .md and nn_accuracy.png.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import trange

from picollm.config import RunConfig
from picollm.core.errors import ConfigError
from picollm.core.log import get_logger
from picollm.experiments.settings import NNExperiment
from picollm.experiments.xlstm_vs_baselines import LABELS
from picollm.models import build_model
from picollm.study.common import markdown_table

log = get_logger()

FAMILIES = ("lstm", "xlstm", "xlstm_lib", "transformer")


def make_batch(batch: int, refs: int, dim: int, classes: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """inputs (B, refs + 1, dim + classes + 1) and target labels (B,): the label of the reference nearest
    to the query (the last position)."""
    x = torch.randn(batch, refs, dim, generator=generator)  # references
    labels = torch.randint(classes, (batch, refs), generator=generator)
    q = torch.randn(batch, 1, dim, generator=generator)  # the query
    nearest = torch.cdist(q, x).squeeze(1).argmin(-1)  # (B,)
    target = labels.gather(1, nearest[:, None]).squeeze(1)
    ref_rows = torch.cat([x, F.one_hot(labels, classes).float(), torch.zeros(batch, refs, 1)], dim=-1)
    query_row = torch.cat([q, torch.zeros(batch, 1, classes), torch.ones(batch, 1, 1)], dim=-1)
    return torch.cat([ref_rows, query_row], dim=1), target


class VectorSequenceModel(nn.Module):
    """Linear input projection -> a family's block stack -> linear read-out of the last position.

    The block stack is taken from the family's language model (built with a 2-token dummy vocabulary, whose
    embedding and head are left unused)."""

    def __init__(self, family: str, in_dim: int, classes: int, embed: int, layers: int, heads: int, seq_len: int):
        super().__init__()
        settings = {"lstm": {"hidden": embed}, "xlstm": {"hidden": embed}}.get(family, {})
        # the architecture the published study measured (learned positions, no QK-norm, none of the transformer's
        # later parts: value embeddings need tokens, and these inputs are vectors), whatever the defaults
        cfg = RunConfig(model=family, embed=embed, layers=layers, heads=heads, block_size=seq_len, dropout=0.0,
                        xlstm_ratio="1:1", tie_weights=False, positional="learned", qk_norm=False, canon=0,
                        attn_gate=False, value_embed=False, embed_norm=False, **settings)
        self.family = family
        self.lm = build_model(cfg, vocab_size=2)
        self.proj_in = nn.Linear(in_dim, embed)
        self.head = nn.Linear(embed, classes)

    def trunk(self, x: Tensor) -> Tensor:
        """x (B, T, E) -> (B, T, E) through the family's blocks and final norm."""
        lm = self.lm
        if self.family == "lstm":
            out, _ = lm.rnn(x)
            return lm.norm(out)
        if self.family == "xlstm":
            for block in lm.blocks:
                x, _ = block(x)
            return lm.ln_f(x)
        if self.family == "xlstm_lib":
            return lm.lm.xlstm_block_stack(x)
        if self.family == "transformer":
            positions = torch.arange(x.shape[1], device=x.device)
            if lm.wpe is not None:  # rotary positions are applied inside the blocks
                x = x + lm.wpe(positions)
            for block in lm.blocks:
                x, _ = block(x, None, positions, None)
            return lm.ln_f(x)
        raise ConfigError(f"the NN study supports {', '.join(FAMILIES)}; got {self.family!r}")

    def num_params(self) -> int:
        """Parameters used on this task (the unused token embedding and LM head left out)."""
        unused = {id(p) for name, p in self.lm.named_parameters()
                  if name.split(".")[0] in ("wte", "embedding", "head", "lm_head")
                  or name.startswith(("lm.token_embedding", "lm.lm_head"))}
        return sum(p.numel() for p in self.parameters() if id(p) not in unused)

    def forward(self, inputs: Tensor) -> Tensor:
        """inputs (B, T, in_dim) -> logits over labels (B, classes) at the last position."""
        return self.head(self.trunk(self.proj_in(inputs))[:, -1])


def train_and_score(family: str, refs: int, dim: int, classes: int, embed: int, layers: int, heads: int,
                    steps: int, batch: int, lr: float, eval_size: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = VectorSequenceModel(family, dim + classes + 1, classes, embed, layers, heads, refs + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for step in trange(steps, desc=f"{family} N={refs}", leave=False, disable=None):
        for group in opt.param_groups:  # short warmup, then cosine to 10%
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        inputs, target = make_batch(batch, refs, dim, classes, gen)
        loss = F.cross_entropy(model(inputs), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train_seconds = time.perf_counter() - t0
    inputs, target = make_batch(eval_size, refs, dim, classes, torch.Generator().manual_seed(10_000 + refs))
    model.eval()
    with torch.no_grad():
        acc = (model(inputs).argmax(-1) == target).float().mean().item()
    return {"model": LABELS[family], "family": family, "refs": refs, "accuracy": acc, "params": model.num_params(),
            "final_train_loss": loss.item(), "train_seconds": train_seconds}


def plot_accuracy(df: pd.DataFrame, path: Path, chance: float, title: str) -> None:
    from matplotlib.figure import (
        Figure,  # matplotlib only where a figure is drawn; no pyplot, no backend switch
    )

    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for model, part in df.groupby("model", sort=False):
        ax.plot(part["refs"], part["accuracy"], marker="o", label=f"{model} ({part['params'].iloc[0]:,})")
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of references (sequence length - 1)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_nn_experiment(out_dir: Path | str = "analysis_runs/xlstm_study", lengths: tuple[int, ...] = (4, 8, 16, 32),
                 families: tuple[str, ...] = FAMILIES, threads: int = 0, **settings: Any) -> pd.DataFrame:
    """Accuracy against the number of references for every family (settings: NNExperiment fields); writes the
    table and the plot."""
    st = NNExperiment(**settings)
    dim, classes, embed, layers, heads, steps = st.dim, st.classes, st.embed, st.layers, st.heads, st.steps
    batch, lr, eval_size, seed = st.batch, st.lr, st.eval_size, st.seed
    if any(n < 1 for n in lengths):
        raise ConfigError(f"--lengths must be positive numbers of references; got {lengths}")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for refs in lengths:
        for family in families:
            row = train_and_score(family, refs, dim, classes, embed, layers, heads, steps, batch, lr, eval_size, seed)
            log.info(f"refs {refs:>3} {row['model']:>16}: accuracy {row['accuracy']:.3f} ({row['train_seconds']:.0f} s)")
            rows.append(row)
    df = pd.DataFrame(rows)
    df.to_csv(out / "nn_results.csv", index=False)
    wide = df.pivot(index="model", columns="refs", values="accuracy").reindex([LABELS[f] for f in families])
    wide.columns = [f"N={n}" for n in wide.columns]
    wide.insert(0, "params", df.groupby("model")["params"].first().reindex(wide.index))
    header = (f"nearest-neighbour accuracy (dim {dim}, {classes} labels, chance {1 / classes:.2f}), {steps} steps "
              f"of batch {batch}, embed {embed}, {layers} layers, {eval_size} held-out queries\n\n")
    (out / "nn_results.md").write_text(header + markdown_table(wide.reset_index(), floatfmt=".3f"))
    plot_accuracy(df, out / "nn_accuracy.png", 1 / classes, f"nearest neighbour: dim {dim}, {classes} labels")
    return df
