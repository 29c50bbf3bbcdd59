"""The sweep comparisons (picollm.study.plots curves, importance, parallel): importance recovers a known answer, overlays and parallel coordinates read the right data,
thin data is skipped with reasons, and a bad --color_by is one error line before anything is written."""

import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import LogNorm

from picollm.core.errors import PicoError
from picollm.runs.layout import write_metrics
from picollm.study.common import Skip
from picollm.study.plots import PLOTS, PlotInput
from picollm.study.plots.curves import (
    corpus_slug,
    curve_color,
    curves_figure,
    load_curves,
    plot_curves,
    resolve_run_dir,
)
from picollm.study.plots.importance import importance_table, plot_importance
from picollm.study.plots.parallel import parallel_table
from picollm.study.plots.scales import LINE_CMAP, color_scale
from picollm.study.summarize import summarize
from picollm.study.varying import check_color_by, default_color_by, varying_settings

ROOT = Path(__file__).resolve().parents[2]


def kgram_runs(n: int = 30, loss=None, seed: int = 0) -> pd.DataFrame:
    """n kgram_mlp runs whose settings vary at random; val_loss = loss(frame) + tiny noise."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, -2, n)
    df = pd.DataFrame({
        "run": [f"kgram_mlp-tinyshakespeare-{i:08d}" for i in range(n)], "model": "kgram_mlp",
        "corpus": "tinyshakespeare", "lr": lr, "learning_rate": lr,
        "embed": rng.choice([16, 32, 64], n), "hidden": rng.choice([32, 64, 128], n), "k": rng.choice([2, 3, 4, 5], n),
        "dropout": rng.choice([0.0, 0.1, 0.2], n), "batch_size": rng.choice([16, 32], n),
        "activation": rng.choice(["relu", "gelu", "silu"], n), "seed": rng.integers(0, 1000, n),
        "block_size": 64, "inner_layers": 1,
    })
    loss = loss or (lambda d: 2.0 + 0.3 * (np.log10(d["lr"]) + 3) ** 2)
    return df.assign(val_loss=loss(df) + rng.normal(0, 1e-3, n))


def with_metrics(df: pd.DataFrame, root: Path, missing: tuple[int, ...] = ()) -> pd.DataFrame:
    """Give every run a run directory holding a synthetic metrics.csv (except the runs at `missing`)."""
    dirs = []
    for i, row in df.reset_index(drop=True).iterrows():
        run_dir = root / "checkpoints" / row["run"]
        run_dir.mkdir(parents=True, exist_ok=True)
        if i not in missing:
            rows = [{"step": s, "tokens_seen": s * 2048, "elapsed_sec": s * 0.01 * (1 + i % 3),
                     "val_loss": row["val_loss"] + (4.17 - row["val_loss"]) * np.exp(-s / 50)} for s in range(0, 301, 100)]
            write_metrics(run_dir, rows)
        dirs.append(str(run_dir))
    return df.assign(run_dir=dirs)


# --------------------------------------------------------------------------------------------------
# importance
# --------------------------------------------------------------------------------------------------
def test_importance_ranks_the_only_setting_that_matters_first_by_a_clear_margin():
    table, oob = importance_table(kgram_runs(30), "kgram_mlp")
    assert list(table.columns) == ["setting", "mean", "std"]
    first, second = table.iloc[0], table.iloc[1]
    assert first["setting"] == "lr"
    assert first["mean"] - second["mean"] > first["std"] + second["std"], table
    assert oob > 0.5  # the forest really explains val loss, so the ranking means something
    # the family's settings that vary, and nothing else: never the seed, never another family's setting
    assert set(table["setting"]) == {"lr", "embed", "hidden", "k", "dropout", "batch_size", "activation"}


def test_importance_of_a_text_setting():
    penalty = {"relu": 0.0, "gelu": 0.5, "silu": 1.0}
    table, _ = importance_table(kgram_runs(30, loss=lambda d: 2.0 + d["activation"].map(penalty)), "kgram_mlp")
    first, second = table.iloc[0], table.iloc[1]
    assert first["setting"] == "activation" and first["mean"] - second["mean"] > first["std"] + second["std"]


def test_importance_joins_settings_that_always_change_together():
    df = kgram_runs(20)
    df["hidden"] = df["embed"] * 4  # size presets: embed and hidden never move apart
    table, _ = importance_table(df, "kgram_mlp")
    assert "embed & hidden" in set(table["setting"])
    assert not {"embed", "hidden"} & set(table["setting"]) and table.iloc[0]["setting"] == "lr"


def test_importance_writes_a_csv_and_a_chart(tmp_path):
    written = plot_importance(kgram_runs(12), "kgram_mlp", tmp_path)
    assert [p.name for p in written] == ["importance_kgram_mlp.png", "importance_kgram_mlp.csv"]
    csv = pd.read_csv(tmp_path / "importance_kgram_mlp.csv")
    assert list(csv.columns) == ["setting", "mean", "std"] and csv["mean"].is_monotonic_decreasing
    assert (csv["std"] >= 0).all()


def test_importance_skips_thin_data_with_reasons():
    with pytest.raises(Skip, match="4 kgram_mlp run.*at least 5"):
        importance_table(kgram_runs(4), "kgram_mlp")
    same = kgram_runs(8).assign(lr=1e-3, embed=32, hidden=64, k=3, dropout=0.0, batch_size=32, activation="relu")
    with pytest.raises(Skip, match="no setting varies across the 8 kgram_mlp runs"):
        importance_table(same, "kgram_mlp")
    with pytest.raises(Skip, match="val_loss is the same"):
        importance_table(kgram_runs(8).assign(val_loss=2.0), "kgram_mlp")
    diverged = kgram_runs(8)
    diverged.loc[diverged.index[:4], "val_loss"] = np.nan
    with pytest.raises(Skip, match="4 kgram_mlp run"):
        importance_table(diverged, "kgram_mlp")


# --------------------------------------------------------------------------------------------------
# which setting colours the overlays
# --------------------------------------------------------------------------------------------------
def test_settings_of_a_family_and_the_default_colour():
    df = kgram_runs(6).assign(model="lstm", layers=[1, 2, 1, 2, 1, 2])
    # k and activation are kgram_mlp settings: an lstm run's value there (a stray cell) is not its setting
    assert "k" not in varying_settings(df, "lstm") and "activation" not in varying_settings(df, "lstm")
    assert "layers" in varying_settings(df, "lstm") and "seed" not in varying_settings(df, "lstm")
    grid = pd.DataFrame({"model": "lstm", "lr": [1e-3, 1e-3, 3e-3, 3e-3], "embed": [16, 32, 64, 128],
                         "hidden": [32, 32, 64, 64]})
    assert default_color_by(grid, "lstm") == "embed"  # the most distinct values
    tie = grid.assign(embed=[16, 16, 32, 32])
    assert default_color_by(tie, "lstm") == "lr"  # a tie goes to the learning rate
    assert default_color_by(grid.iloc[:1], "lstm") is None


def test_color_scale_log_for_rates_and_levels_for_text():
    runs = kgram_runs(5)
    scale = color_scale(runs["lr"], "lr")
    assert isinstance(scale.norm, LogNorm)
    assert scale.colors[runs["lr"].idxmin()] == LINE_CMAP(0.0) and scale.colors[runs["lr"].idxmax()] == LINE_CMAP(1.0)
    levels = color_scale(runs["activation"], "activation")
    assert levels.norm is None and set(levels.levels) == set(runs["activation"])
    linear = color_scale(pd.Series([16, 32, 64]), "embed")  # 4x: not a rate, not 10x: linear
    assert linear.norm is not None and not isinstance(linear.norm, LogNorm) and linear.ticks == [16, 32, 64]


@pytest.mark.parametrize("column", ["lrr", "run_dir", "nonsense"])
def test_check_color_by_rejects_what_is_no_setting(column):
    with pytest.raises(PicoError) as err:
        check_color_by(column)
    assert "\n" not in str(err.value) and f"--color_by {column!r}" in str(err.value)
    if column == "lrr":
        assert "did you mean lr" in str(err.value)


# --------------------------------------------------------------------------------------------------
# overlays
# --------------------------------------------------------------------------------------------------
def test_curves_overlay_one_line_per_run_coloured_by_the_setting(tmp_path):
    df = with_metrics(kgram_runs(5), tmp_path)
    curves, missing = load_curves(df, tmp_path / "analysis_runs")
    assert set(curves) == set(df.index) and missing == {}
    fig = curves_figure(curves, df, "lr", "test")
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    assert [ax.get_xlabel() for ax in panels] == ["training step (count)", "tokens seen (count)", "training time (s)"]
    for ax, x in zip(panels, ["step", "tokens_seen", "elapsed_sec"]):
        assert len(ax.lines) == 5
        best = df["lr"].idxmax()
        line = next(line for line in ax.lines if np.allclose(line.get_ydata(), curves[best]["val_loss"]))
        assert np.allclose(line.get_xdata(), curves[best][x]) and line.get_color() == LINE_CMAP(1.0)
    assert any("log scale" in ax.get_ylabel() for ax in fig.axes)  # the colour bar of lr
    plt.close(fig)


def test_color_by_is_honoured_and_falls_back_where_the_family_lacks_it():
    runs = kgram_runs(6)
    assert curve_color(runs, "kgram_mlp", "activation") == ("activation", "")
    assert curve_color(runs, "kgram_mlp", None) == ("lr", "")  # every lr differs: it varies most
    column, note = curve_color(runs.assign(layers=np.nan), "kgram_mlp", "layers")
    assert column == "lr" and "layers is not set for kgram_mlp; coloured by lr instead" in note


def test_runs_without_metrics_are_left_out_with_a_note(tmp_path):
    df = with_metrics(kgram_runs(4), tmp_path, missing=(1,))
    df.loc[2, "run_dir"] = np.nan
    notes = {}
    [png] = plot_curves(df, "kgram_mlp", "tinyshakespeare", tmp_path, tmp_path, notes=notes)
    assert png.name == "curves_kgram_mlp_tinyshakespeare.png" and png.stat().st_size > 0
    assert set(notes) == {f"curves[{df.loc[1, 'run']}]", f"curves[{df.loc[2, 'run']}]"}
    assert "metrics.csv is missing" in notes[f"curves[{df.loc[1, 'run']}]"]
    assert notes[f"curves[{df.loc[2, 'run']}]"] == "no run_dir in runs.csv"
    gone = df.assign(run_dir=str(tmp_path / "moved"))
    with pytest.raises(Skip, match=r"no kgram_mlp run on tinyshakespeare has a readable metrics.csv.*\(\+3 more\)"):
        plot_curves(gone, "kgram_mlp", "tinyshakespeare", tmp_path, tmp_path)


def test_run_dir_relative_to_the_analysis_dir_s_parent(tmp_path):
    (tmp_path / "checkpoints" / "r").mkdir(parents=True)
    assert resolve_run_dir("checkpoints/r", tmp_path / "analysis_runs") == tmp_path / "checkpoints" / "r"
    assert resolve_run_dir("checkpoints/other", tmp_path / "analysis_runs") is None
    assert corpus_slug("tinyshakespeare") == "tinyshakespeare"
    assert corpus_slug("/a/my corpus.txt").startswith("my_corpus-") and corpus_slug("/a/x.txt") != corpus_slug("/b/x.txt")


# --------------------------------------------------------------------------------------------------
# parallel coordinates
# --------------------------------------------------------------------------------------------------
def test_parallel_axes_scales_and_labels():
    df = kgram_runs(12)
    axes, loss = parallel_table(df, "kgram_mlp")
    by_name = {a.name: a for a in axes}
    assert axes[-1].name == "val_loss" and "seed" not in by_name
    assert by_name["lr"].scale == "log"  # 1e-4 .. 1e-2
    assert by_name["embed"].scale == "linear"  # 16 .. 64: 4x
    assert by_name["activation"].scale == "categorical"
    assert {label for _, label in by_name["activation"].ticks} == set(df["activation"])
    assert {label for _, label in by_name["embed"].ticks} == {str(v) for v in df["embed"].unique()}
    for a in axes:
        assert a.positions.between(0, 1).all()
    assert axes[-1].positions[loss.idxmin()] == 0 and axes[-1].positions[loss.idxmax()] == 1
    lr = by_name["lr"].positions
    assert lr[df["lr"].idxmin()] == 0 and lr[df["lr"].idxmax()] == 1
    mid = np.log10(df["lr"]).sub(np.log10(df["lr"].min())).div(np.log10(df["lr"].max() / df["lr"].min()))
    assert np.allclose(lr, mid)  # positions are on the log scale, not the linear one


def test_parallel_skips_thin_data():
    with pytest.raises(Skip, match="1 kgram_mlp run"):
        parallel_table(kgram_runs(1), "kgram_mlp")
    same = kgram_runs(3).assign(lr=1e-3, embed=32, hidden=64, k=3, dropout=0.0, batch_size=32, activation="relu")
    with pytest.raises(Skip, match="no setting varies"):
        parallel_table(same, "kgram_mlp")


# --------------------------------------------------------------------------------------------------
# through summarize and the scripts
# --------------------------------------------------------------------------------------------------
def test_summarize_draws_the_comparisons_even_when_color_by_is_not_a_family_setting(tmp_path):
    analysis = tmp_path / "analysis_runs"
    analysis.mkdir()
    df = with_metrics(kgram_runs(6), tmp_path)
    df.to_csv(analysis / "runs.csv", index=False)
    result = summarize(analysis, report=False, color_by="layers")  # a column, but no kgram_mlp setting
    names = {p.name for p in result["written"]}
    comparisons = [plot for plot in PLOTS.values() if plot.per_family]  # curves, importance, parallel
    expected = {name for plot in comparisons for _, key in plot.instances(PlotInput(df, analysis), "kgram_mlp")
                for name in plot.files(key)}
    assert len(expected) >= 4 and expected <= names
    assert not any(k.startswith(tuple(plot.name for plot in comparisons)) for k in result["skipped"])


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_unknown_color_by_is_one_error_line_and_nothing_written(tmp_path):
    analysis = tmp_path / "analysis_runs"
    analysis.mkdir()
    kgram_runs(6).to_csv(analysis / "runs.csv", index=False)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for proc in [run_script("total_summary_analysis.py", "--analysis_dir", str(analysis), "--color_by", "lrr"),
                 run_script("auto_train_then_analyze.py", "--fast", "--color_by", "lrr", "--analysis_dir",
                            str(analysis), "--out_dir", str(tmp_path / "ck"), "--log_dir", str(tmp_path / "logs"))]:
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith("error: --color_by 'lrr'") and "did you mean lr" in lines[0]
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no plots/, no checkpoints, no logs
