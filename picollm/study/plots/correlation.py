"""correlation_matrix.png / .csv: the Pearson correlation of every metric and hyperparameter that varies,
pairwise over runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from picollm.study.common import Skip, numeric
from picollm.study.plots.base import Plot, PlotInput, save_figure

HYPERPARAMETERS = ["embed", "hidden", "layers", "heads", "k", "inner_layers", "dropout", "block_size",
                   "batch_size", "learning_rate", "weight_decay", "max_steps", "epochs"]
METRICS = ["params", "steps", "train_seconds", "tokens_per_sec", "initial_val_loss", "final_train_loss",
           "final_val_loss", "val_loss", "val_ppl", "token_accuracy", "test_loss", "test_ppl", "test_acc"]


def correlation(inputs: PlotInput, key: None) -> pd.DataFrame:
    df = inputs.runs
    cols = [c for c in dict.fromkeys(METRICS + HYPERPARAMETERS) if c in df.columns]
    num = pd.DataFrame({c: numeric(df, c) for c in cols})
    num = num.loc[:, num.nunique() > 1]  # a constant column has no correlation
    if num.shape[1] < 2:
        raise Skip(f"fewer than 2 numeric columns vary across {len(df)} run(s)")
    return num.corr()  # pairwise-complete: NaNs of other families don't remove rows


def draw(corr: pd.DataFrame, paths: list[Path]) -> list[Path]:
    import seaborn as sns  # heavy (scipy): loaded only where a figure needs it

    fig, ax = plt.subplots(figsize=(0.55 * len(corr) + 3, 0.5 * len(corr) + 2.5))
    sns.heatmap(corr, annot=len(corr) <= 16, fmt=".2f", cmap="coolwarm", vmin=-1, vmax=1, ax=ax,
                cbar_kws={"label": "Pearson correlation (unitless)"})
    ax.set(title="Correlation of metrics and hyperparameters (pairwise over runs)")
    png, csv = paths
    save_figure(fig, png)
    corr.to_csv(csv)
    return paths


PLOT = Plot("correlation", "Correlations", "correlation", data=correlation, draw=draw,
            files=lambda key: ["correlation_matrix.png", "correlation_matrix.csv"])
