"""picollm.study: Pareto frontier vs brute force, OLS vs a direct statsmodels fit, robustness to thin data."""

import hashlib
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from picollm.core.errors import PicoError
from picollm.models import FAMILIES as REGISTRY
from picollm.models import default_families
from picollm.runs.layout import write_metrics
from picollm.study.common import Skip
from picollm.study.plots import PLOTS, PlotInput, plot_instances
from picollm.study.plots.heatmap import heatmap_table
from picollm.study.plots.top import top_runs
from picollm.study.stats import (
    DEFAULT_FORMULA,
    check_formula,
    fit_ols,
    pareto_mask,
    regressions,
    split_formula,
)
from picollm.study.summarize import load_summary, summarize

ROOT = Path(__file__).resolve().parents[2]

FAMILIES = default_families()
#: hyperparameters each family has; every other model field is NaN in runs.csv
OWN = {"kgram_mlp": {"embed", "hidden", "k", "activation", "inner_layers"}, "lstm": {"embed", "hidden", "layers"},
       "xlstm": {"embed", "hidden", "layers", "heads"}, "transformer": {"embed", "layers", "heads"}}


def cache_frame(n_per: int = 8, families=FAMILIES, seed: int = 0) -> pd.DataFrame:
    """A synthetic runs.csv: val loss falls with log(params) and log(lr), plus noise."""
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
    df.to_csv(tmp_path / "runs.csv", index=False)
    return tmp_path


def with_run_dirs(root: Path, df: pd.DataFrame) -> pd.DataFrame:
    """df with a run directory per run under root/checkpoints, holding a metrics.csv that ends at its val_loss."""
    dirs = []
    for _, row in df.iterrows():
        run_dir = root / "checkpoints" / row["run"]
        write_metrics(run_dir, [{"step": s, "tokens_seen": s * 512, "elapsed_sec": s / 10,
                                 "val_loss": row["val_loss"] + (4.17 - row["val_loss"]) * np.exp(-s / 30)}
                                for s in (0, 50, 100)])
        dirs.append(str(run_dir))
    return df.assign(run_dir=dirs)


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
    assert fit_ols(df, "val_loss ~ np.log(params) + no_such_column").dropped == ["no_such_column: names no column of runs.csv"]
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
    for fam in FAMILIES:
        row, col = REGISTRY[fam].heatmap_axes
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
    result = summarize(write_cache(tmp_path, with_run_dirs(tmp_path, cache_frame(6))), report=False)
    assert result["skipped"] == {}
    plots = tmp_path / "plots"
    names = {p.name for p in result["written"]}
    # every registered plot, each instance (per corpus, family, ...) with every file it declares
    instances = list(plot_instances(PlotInput(load_summary(tmp_path), tmp_path, fits=result["fits"])))
    assert {plot.name for plot, _, _ in instances} == set(PLOTS)
    expected = [name for plot, _, key in instances for name in plot.files(key)]
    assert len(expected) == len(set(expected)) == len(names)
    for plot, _, key in instances:
        for expected in plot.files(key):
            assert expected.startswith(plot.prefix), expected  # how the report files it under the plot's group
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


# --------------------------------------------------------------------------------------------------
# bad input: a malformed table or an unusable --formula is one error line, exit 2, and nothing written
# --------------------------------------------------------------------------------------------------
def tree_state(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and 'dir' for every directory) under root; {} when it is absent."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def run_summary_script(*args: str) -> subprocess.CompletedProcess:
    """total_summary_analysis.py as a user types it, from the repository root."""
    return subprocess.run([sys.executable, "total_summary_analysis.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def csv_lines(df: pd.DataFrame) -> list[str]:
    return df.to_csv(index=False).splitlines(keepends=True)


def set_cell(line: str, header: str, column: str, value: str) -> str:
    """line with one cell replaced (the synthetic table has no quoted commas)."""
    cells = line.rstrip("\n").split(",")
    cells[header.rstrip("\n").split(",").index(column)] = value
    return ",".join(cells) + "\n"


def malformed_table(case: str) -> tuple[bytes, list[str]]:
    """A runs.csv broken one way, and the words its error must contain (file lines: header = 1)."""
    lines = csv_lines(cache_frame(3))
    header, width = lines[0], lines[0].count(",") + 1
    if case == "ragged":  # a row cut off (pandas pads it) and one with extra fields (pandas shifts it)
        lines[3] = ",".join(lines[3].split(",")[:6]) + "\n"
        lines[7] = lines[7].rstrip("\n") + ",extra\n"
        return "".join(lines).encode(), ["lines 4, 8", f"not {width} fields", "analyze_all_checkpoints.py"]
    if case == "non_utf8":
        data = "".join(lines).encode().splitlines(keepends=True)
        data[5] = data[5].replace(b"tinyshakespeare", b"tiny\xff\xfeshakespeare")
        return b"".join(data), ["not UTF-8", "line 6"]
    if case == "unknown_family":  # well-formed garbage: would be drawn as a family of its own
        for i in (2, 5, 6, 9, 11):
            lines[i] = set_cell(lines[i], header, "model", "gpt")
        return "".join(lines).encode(), ["model", "lines 3, 6, 7 (+2 more)", "'gpt'", "delete those rows"]
    if case == "text_in_number":
        lines[4] = set_cell(lines[4], header, "val_loss", "lots")
        return "".join(lines).encode(), ["val_loss is not a number", "line 5", "'lots'"]
    if case == "missing_column":
        frame = cache_frame(3).drop(columns=["val_loss"])
        return frame.to_csv(index=False).encode(), ["no val_loss column"]
    raise ValueError(case)


@pytest.mark.parametrize("case", ["ragged", "non_utf8", "unknown_family", "text_in_number", "missing_column"])
def test_malformed_table_is_one_error_line_naming_the_rows(tmp_path, case):
    data, words = malformed_table(case)
    (tmp_path / "runs.csv").write_bytes(data)
    before = tree_state(tmp_path)
    proc = run_summary_script("--analysis_dir", str(tmp_path))
    assert_one_line_error(proc, str(tmp_path / "runs.csv"), *words)
    assert tree_state(tmp_path) == before  # no plots/ folder, no report, the table untouched


def test_empty_numbers_load_and_garbage_rows_are_named(tmp_path):
    # an empty numeric cell (a diverged run) and inf load; both count as missing
    df = cache_frame(3).astype({"params": float})
    df.loc[2, "val_loss"] = np.nan
    df.loc[3, "params"] = np.inf
    loaded = load_summary(write_cache(tmp_path, df))
    assert len(loaded) == len(df) and loaded["val_loss"].isna().sum() == 1 and loaded["params"].isna().sum() == 1
    # a row without a run is reported, not drawn
    lines = csv_lines(cache_frame(3))
    lines[2] = set_cell(lines[2], lines[0], "run", "")
    (tmp_path / "runs.csv").write_text("".join(lines))
    with pytest.raises(PicoError, match=r"run is empty on line 3;"):
        load_summary(tmp_path)
    # garbage in every column: the first two columns and a count, still one line
    lines = csv_lines(cache_frame(3)) + ["x" + ",x" * lines[0].count(",") + "\n"]
    (tmp_path / "runs.csv").write_text("".join(lines))
    with pytest.raises(PicoError, match=r"line 14 .*more column\(s\)") as err:
        load_summary(tmp_path)
    assert "\n" not in str(err.value)
    # a header without rows is an empty table, not a malformed one
    (tmp_path / "runs.csv").write_text(lines[0])
    with pytest.raises(PicoError, match="holds no runs"):
        load_summary(tmp_path)


@pytest.mark.parametrize("formula", [DEFAULT_FORMULA, "np.log(val_loss) ~ I(embed ** 2) + Q('k') + embed:layers",
                                     "test_ppl ~ C(activation, Treatment('relu')) + center(params) + C(model)",
                                     "val_loss ~ np.log(lr) + dropout * hidden - 1"])
def test_check_formula_accepts_formulas_over_the_table_columns(formula):
    check_formula(formula)


@pytest.mark.parametrize("formula,words", [
    ("val_loss ~~ ((", ["exactly one '~'"]),
    ("val_loss ~ np.log(params", ["not a formula", "unclosed bracket"]),
    ("val_loss ~ ((", ["not a formula"]),
    ("~ embed", ["no response"]),
    ("val_loss ~ np.log(parms) + embed", ["unknown column parms", "did you mean params", "learning_rate"]),
    ("val_loss ~ foo(params)", ["cannot be evaluated", "'foo'"]),
    ("val_loss ~ np.log(status)", ["cannot be evaluated", "inside C(...)"]),
    ("model ~ embed", ["text column model as its response"]),
])
def test_check_formula_rejects_unusable_formulas(formula, words):
    with pytest.raises(PicoError) as err:
        check_formula(formula)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_user_formula_that_fails_on_the_data_is_an_error_the_default_is_skipped():
    df = cache_frame(6)
    formula = "val_loss ~ np.log(params) + C(activation, Treatment('tanh'))"  # no run has tanh
    check_formula(formula)  # nothing wrong without data: the level is a setting's choice away
    fits, _ = regressions(df, formula)
    assert any(d.startswith("C(activation") and "cannot evaluate" in d for d in fits["kgram_mlp"].dropped)
    with pytest.raises(PicoError, match=r"Treatment\('tanh'\).*kgram_mlp runs"):
        regressions(df, formula, strict=True)
    # thin data is not the formula's fault: a user formula is skipped there like the default
    fits, skipped = regressions(cache_frame(1, ["lstm"]), "test_ppl ~ embed", strict=True)
    assert fits == {} and set(skipped) == {"regression[pooled]", "regression[lstm]"}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """An analysis directory whose plots were drawn: a failing call must leave them as they are."""
    root = tmp_path_factory.mktemp("drawn")
    summarize(write_cache(root, cache_frame(4)), report=False)
    return root


@pytest.mark.parametrize("formula,words", [
    ("val_loss ~~ ((", ["exactly one '~'"]),
    ("val_loss ~ np.log(params) + no_such_column", ["unknown column no_such_column"]),
    ("val_loss ~ C(activation, Treatment('tanh'))", ["cannot be evaluated on the kgram_mlp runs", "tanh"]),
])
def test_unusable_formula_fails_before_any_plot_is_written(drawn, tmp_path, formula, words):
    analysis = Path(shutil.copytree(drawn, tmp_path / "analysis_runs"))
    before = tree_state(analysis)
    assert "plots/pareto_val_loss_vs_params.png" in before
    proc = run_summary_script("--analysis_dir", str(analysis), "--formula", formula)
    assert_one_line_error(proc, "--formula", *words)
    assert tree_state(analysis) == before
