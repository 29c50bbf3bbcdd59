"""summary.py: Pareto frontier vs brute force, OLS vs a direct statsmodels fit, robustness to thin data."""

import itertools

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from picollm.errors import PicoError
from picollm.summary import (
    DEFAULT_FORMULA,
    FAMILY_AXES,
    Skip,
    fit_ols,
    heatmap_table,
    pareto_mask,
    regressions,
    split_formula,
    summarize,
    top_runs,
)

FAMILIES = ["kgram_mlp", "lstm", "xlstm", "transformer"]
#: hyperparameters each family has; every other model field is NaN in summary_cache.csv
OWN = {"kgram_mlp": {"embed", "hidden", "k", "activation", "inner_layers"}, "lstm": {"embed", "hidden", "layers"},
       "xlstm": {"embed", "hidden", "layers", "heads"}, "transformer": {"embed", "layers", "heads"}}


def cache_frame(n_per: int = 8, families=FAMILIES, seed: int = 0) -> pd.DataFrame:
    """A synthetic summary_cache.csv: val loss falls with log(params) and log(lr), plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for fam in families:
        for i in range(n_per):
            lr = float(rng.choice([1e-3, 3e-3, 1e-2]))
            settings = {"embed": int(rng.choice([16, 32, 64])), "hidden": int(rng.choice([32, 64, 128])),
                        "layers": int(rng.choice([1, 2, 3])), "heads": 2, "k": int(rng.choice([2, 3, 4])),
                        "inner_layers": 1, "activation": ["relu", "gelu", "silu"][i % 3]}
            row = {"run": f"{fam}-tinyshakespeare-{seed:02d}{i:06d}", "model": fam, "corpus": "tinyshakespeare",
                   "tokenizer": "char", "lr": lr, "learning_rate": lr, "block_size": 32, "batch_size": 16}
            row.update({k: (v if k in OWN[fam] else np.nan) for k, v in settings.items()})
            params = int(settings["embed"] * 900 * (1 + rng.random()))
            val = 3.0 - 0.2 * np.log(params / 1e4) - 0.1 * np.log(lr / 1e-3) + rng.normal(0, 0.05)
            row.update(params=params, status="done", steps=100, train_seconds=float(rng.uniform(2, 40)),
                       tokens_per_sec=float(rng.uniform(1e3, 1e4)), initial_val_loss=4.17, val_loss=val,
                       final_val_loss=val + 0.01, val_ppl=float(np.exp(val)),
                       token_accuracy=float(0.6 - 0.1 * val + rng.normal(0, 0.01)), test_loss=val + 0.02,
                       test_ppl=float(np.exp(val + 0.02)), test_acc=0.3)
            rows.append(row)
    return pd.DataFrame(rows)


def write_cache(tmp_path, df):
    df.to_csv(tmp_path / "summary_cache.csv", index=False)
    return tmp_path


# --------------------------------------------------------------------------------------------------
# Pareto
# --------------------------------------------------------------------------------------------------
def brute_force_pareto(x, y, minimize_x=True, minimize_y=True):
    sx, sy = (1 if minimize_x else -1), (1 if minimize_y else -1)
    ok = [np.isfinite(a) and np.isfinite(b) for a, b in zip(x, y)]
    out = []
    for i in range(len(x)):
        dominated = any(ok[j] and sx * x[j] <= sx * x[i] and sy * y[j] <= sy * y[i]
                        and (sx * x[j] < sx * x[i] or sy * y[j] < sy * y[i]) for j in range(len(x)))
        out.append(ok[i] and not dominated)
    return np.array(out, dtype=bool)


@pytest.mark.parametrize("minimize_x,minimize_y", list(itertools.product([True, False], repeat=2)))
def test_pareto_matches_brute_force_with_ties_and_nans(minimize_x, minimize_y):
    rng = np.random.default_rng(42)
    for trial in range(300):
        n = int(rng.integers(0, 40))
        # few distinct values -> many exact ties in x, in y, and duplicated points
        x = rng.integers(0, 6, n).astype(float)
        y = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n)
        if n and trial % 3 == 0:
            x[rng.integers(0, n)] = np.nan
            y[rng.integers(0, n)] = np.inf
        got = pareto_mask(x, y, minimize_x, minimize_y)
        want = brute_force_pareto(x, y, minimize_x, minimize_y)
        assert (got == want).all(), (x, y, got, want)


def test_pareto_known_example():
    # (loss, accuracy): b beats a on both; c trades off; d duplicates c exactly (both stay); e is dominated
    loss = [2.0, 1.5, 1.0, 1.0, 1.2]
    acc = [0.3, 0.4, 0.35, 0.35, 0.30]
    assert pareto_mask(loss, acc, minimize_y=False).tolist() == [False, True, True, True, False]


# --------------------------------------------------------------------------------------------------
# regressions
# --------------------------------------------------------------------------------------------------
def test_ols_coefficients_equal_direct_statsmodels_fit():
    df = cache_frame(12)
    fits, skipped = regressions(df, DEFAULT_FORMULA)
    assert not skipped and set(fits) == {"pooled", *FAMILIES}
    # kgram_mlp has every term of the default formula
    kgram = df[df["model"] == "kgram_mlp"]
    direct = smf.ols(DEFAULT_FORMULA, kgram).fit()
    pd.testing.assert_series_equal(fits["kgram_mlp"].result.params, direct.params, rtol=1e-10)
    assert fits["kgram_mlp"].dropped == []
    # the other families have no activation: the term is dropped with a reason, the rest is the direct fit
    for fam in ["lstm", "xlstm", "transformer"]:
        direct = smf.ols("val_loss ~ np.log(params) + np.log(learning_rate)", df[df["model"] == fam]).fit()
        pd.testing.assert_series_equal(fits[fam].result.params, direct.params, rtol=1e-10)
        assert any(d.startswith("C(activation)") and "undefined" in d for d in fits[fam].dropped)
    # pooled: family as a factor; activation would silently reduce it to kgram rows, so it is dropped
    direct = smf.ols("val_loss ~ np.log(params) + np.log(learning_rate) + C(model)", df).fit()
    pd.testing.assert_series_equal(fits["pooled"].result.params, direct.params, rtol=1e-10)
    assert len(fits["pooled"].data) == len(df)
    # the synthetic slope is recovered (the fit is a fit, not just self-consistent)
    assert fits["pooled"].result.params["np.log(params)"] == pytest.approx(-0.2, abs=0.05)


def test_ols_drops_unsupported_terms_with_reasons():
    df = cache_frame(6, ["kgram_mlp"])
    one_level = df.assign(activation="relu")
    fit = fit_ols(one_level, DEFAULT_FORMULA, "kgram_mlp")
    assert fit.dropped == ["C(activation): activation has one level"]
    constant = df.assign(learning_rate=1e-3)
    assert fit_ols(constant, DEFAULT_FORMULA).dropped == ["np.log(learning_rate): learning_rate is constant"]
    # 3 rows, 5 parameters: drop terms from the end until n > p
    few = fit_ols(df.head(3), DEFAULT_FORMULA)
    assert [d.split(":")[0] for d in few.dropped] == ["C(activation)", "np.log(learning_rate)"]
    assert few.formula == "val_loss ~ np.log(params)" and few.result.df_resid >= 1
    assert fit_ols(df, "val_loss ~ np.log(params) + no_such_column").dropped == ["no_such_column: names no column of summary_cache.csv"]
    with pytest.raises(Skip, match="usable run"):
        fit_ols(df.head(1), DEFAULT_FORMULA)
    with pytest.raises(Skip, match="no term left"):  # 2 rows: not even one slope fits; no intercept-only fit
        fit_ols(df.head(2), DEFAULT_FORMULA)
    # NaN rows are left out, not fatal
    holes = df.copy()
    holes.loc[holes.index[:2], "val_loss"] = np.nan
    assert len(fit_ols(holes, DEFAULT_FORMULA).data) == len(df) - 2


def test_formula_parsing_and_errors(tmp_path):
    assert split_formula("y ~ a + np.log(b + c) + C(d)") == ("y", ["a", "np.log(b + c)", "C(d)"])
    fits, _ = regressions(cache_frame(4), "test_ppl ~ np.log(params) + embed")
    assert fits["pooled"].formula == "test_ppl ~ np.log(params) + embed + C(model)"
    write_cache(tmp_path, cache_frame(2))
    with pytest.raises(PicoError, match="exactly one"):
        summarize(tmp_path, formula="val_loss = embed", report=False)
    with pytest.raises(PicoError, match="analyze_all_checkpoints"):
        summarize(tmp_path / "nowhere", report=False)


# --------------------------------------------------------------------------------------------------
# heatmaps, top-10
# --------------------------------------------------------------------------------------------------
def test_heatmaps_only_use_a_family_s_own_axes():
    df = cache_frame(10)
    for fam, (row, col) in FAMILY_AXES.items():
        assert {row, col} <= OWN[fam]
        table = heatmap_table(df, fam)
        assert (table.index.name, table.columns.name) == (row, col)
        part = df[df["model"] == fam]
        assert table.stack().mean() == pytest.approx(part.groupby([row, col])["val_loss"].mean().mean())
    # an axis missing for the family skips its heatmap; it never falls back to another family's axis
    with pytest.raises(Skip, match="k is missing"):
        heatmap_table(df.assign(k=np.nan), "kgram_mlp")
    with pytest.raises(Skip, match="no transformer runs"):
        heatmap_table(df[df["model"] != "transformer"], "transformer")


def test_top_runs_sorted_by_val_loss():
    df = cache_frame(5)
    df.loc[3, "val_loss"] = np.nan
    top = top_runs(df)
    assert len(top) == 10 and top["val_loss"].is_monotonic_increasing and top["val_loss"].notna().all()
    assert top["val_loss"].iloc[0] == df["val_loss"].min()


# --------------------------------------------------------------------------------------------------
# summarize end to end
# --------------------------------------------------------------------------------------------------
def test_summarize_writes_every_plot(tmp_path):
    result = summarize(write_cache(tmp_path, cache_frame(6)), report=False)
    assert result["skipped"] == {}
    plots = tmp_path / "plots"
    names = {p.name for p in result["written"]}
    for expected in ["pareto_val_loss_vs_token_accuracy.png", "pareto_val_loss_vs_token_accuracy.csv",
                     "pareto_val_loss_vs_params.png", "pareto_val_loss_vs_train_seconds.png",
                     "joint_kde_token_accuracy_vs_val_loss.png", "regression_summary.txt",
                     "regression_diagnostics.png", "regression_coefficients.png", "box_val_loss_by_activation.png",
                     "box_val_loss_by_family.png", "heatmap_kgram_mlp_embed_x_k.png", "heatmap_lstm_embed_x_hidden.png",
                     "heatmap_xlstm_embed_x_hidden.png", "heatmap_transformer_embed_x_layers.png",
                     "correlation_matrix.png", "top10.csv", "top10.md"]:
        assert expected in names and (plots / expected).stat().st_size > 0, expected
    assert (plots / "skipped.txt").read_text() == ""
    front = pd.read_csv(plots / "pareto_val_loss_vs_params.csv")
    df = cache_frame(6)
    assert set(front["run"]) == set(df[pareto_mask(df["params"], df["val_loss"])]["run"])
    assert "C(model)" in (plots / "regression_summary.txt").read_text()


@pytest.mark.parametrize("case", ["one_run", "one_family", "nans"])
def test_thin_data_skips_with_reasons(tmp_path, case):
    if case == "one_run":
        df = cache_frame(1, ["lstm"])
    elif case == "one_family":
        df = cache_frame(4, ["transformer"])
    else:
        df = cache_frame(3)
        df["token_accuracy"] = np.nan  # e.g. an older analysis that never measured it
        df.loc[df.index[::2], "val_loss"] = np.nan  # failed runs
        df.loc[df.index[:3], "params"] = np.nan
    result = summarize(write_cache(tmp_path, df), report=False)
    skipped = result["skipped"]
    assert all(reason and "\n" not in reason and not reason.startswith("failed") for reason in skipped.values())
    assert (tmp_path / "plots" / "skipped.txt").read_text().count("\n") == len(skipped)
    written = {p.name for p in result["written"]}
    assert "box_val_loss_by_family.png" in written and "top10.md" in written
    if case == "one_run":
        assert "regressions" in skipped and "correlation" in skipped
        # nothing new: a second call draws nothing; another formula redraws
        assert summarize(tmp_path, report=False, skip_unchanged=True)["unchanged"]
        assert not summarize(tmp_path, formula="test_ppl ~ embed", report=False, skip_unchanged=True)["unchanged"]
        assert "heatmap_lstm_embed_x_hidden.png" in written
        assert skipped["heatmap_kgram_mlp"] == "no kgram_mlp runs"
    if case == "one_family":
        assert skipped["box_by_activation"].startswith("no run has")
        assert "heatmap_transformer_embed_x_layers.png" in written
        assert "C(model)" in (tmp_path / "plots" / "regression_summary.txt").read_text()  # dropped: one level
    if case == "nans":
        assert "pareto_val_loss_vs_token_accuracy" in skipped and "joint_kde" in skipped
        assert "pareto_val_loss_vs_params.png" in written
