"""index.html: every run present and escaped; in a real headless Chromium it loads cleanly, sorts, shows images."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from picollm.report import write_report
from picollm.summary import summarize

EVIL_RUN = 'kgram_mlp-<b>bold</b>&"quote\'-00000000'
EVIL_TOKEN = "<script>alert(1)</script>"


def synthetic_cache(n_per: int = 3) -> pd.DataFrame:
    """A summary_cache.csv-shaped frame: four families, NaN where a family lacks a setting."""
    rng = np.random.default_rng(1)
    rows = []
    for fam in ["kgram_mlp", "lstm", "xlstm", "transformer"]:
        for i in range(n_per):
            lr = [1e-3, 3e-3, 1e-2][i % 3]
            params = int(rng.choice([9, 10, 100, 2_000, 35_000]))  # digit counts differ: sorting must be numeric
            val = float(2.0 + rng.random())
            rows.append(dict(run=f"{fam}-tinyshakespeare-{i:08d}", model=fam, corpus="tinyshakespeare",
                             tokenizer="char", embed=[16, 32][i % 2],
                             hidden=np.nan if fam == "transformer" else 64, layers=np.nan if fam == "kgram_mlp" else 2,
                             heads=4 if fam in ("xlstm", "transformer") else np.nan,
                             k=[2, 3, 4][i % 3] if fam == "kgram_mlp" else np.nan,
                             activation=["relu", "gelu", "silu"][i % 3] if fam == "kgram_mlp" else np.nan,
                             lr=lr, learning_rate=lr, params=params, status="done", status_reason="completed",
                             steps=100, train_seconds=float(rng.uniform(1, 30)), initial_val_loss=4.2,
                             val_loss=val, val_ppl=float(np.exp(val)), token_accuracy=float(0.7 - 0.1 * val),
                             test_loss=val + 0.01, test_ppl=float(np.exp(val + 0.01)), test_acc=0.3))
    df = pd.DataFrame(rows)
    df.loc[0, "run"] = EVIL_RUN
    return df


def fake_run_files(run_dir: Path, run: str) -> None:
    """What analysis.py writes per run: a curve, annotated generations, and (sometimes) influence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 10, 20], [4.2, 3.0, 2.5])
    fig.savefig(run_dir / "metrics_curve.png")
    plt.close(fig)
    # the format of picollm.generate.annotate
    annotation = [{"token": tok, "id": 1, "logprob": -1.25, "alternatives": [["<a>", 0.4], ["e", 0.2]],
                   "neighbours": ["x", "</span>", "y", "z", "w"]} for tok in ["Hel", "lo ", EVIL_TOKEN]]
    gens = [{"run": run, "checkpoint": checkpoint, "step": step, "strategy": strategy,
             "decoding_params": json.dumps({"temperature": 0.8}), "prompt": "ROMEO:", "text": "Hello " + EVIL_TOKEN,
             "annotation": annotation, "mean_logprob": -1.25, "distinct_1": 0.9, "distinct_2": 1.0}
            for checkpoint, step in (("best", 20), ("last", 30), ("last", 30)) for strategy in ("greedy", "top_p", "beam")]
    (run_dir / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    (run_dir / "summary.json").write_text(json.dumps({"run": run}))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("analysis_runs")
    df = synthetic_cache()
    df.to_csv(root / "summary_cache.csv", index=False)
    for run in df["run"]:
        fake_run_files(root / run, run)
    (root / df["run"][1] / "influence_top.csv").write_text("rank,text,score\n1,<i>to be</i>,0.5\n2,or not,0.25\n")
    result = summarize(root)
    assert result["report"] == root / "index.html"
    return root / "index.html"


def test_html_contains_every_run_escaped(report):
    text = report.read_text()
    df = pd.read_csv(report.parent / "summary_cache.csv")
    for run in df["run"]:
        assert f">{__import__('html').escape(run)}<" in text, run
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert EVIL_TOKEN not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;i&gt;to be&lt;/i&gt;" in text  # influence_top.csv shown, escaped
    assert text.count('class="sample"') == 6 * len(df)  # one sample per (checkpoint step, strategy)
    assert "http://" not in text and "https://" not in text  # nothing to fetch: opens offline
    for png in (report.parent / "plots").glob("*.png"):
        assert f'src="plots/{png.name}"' in text


def test_report_without_plots_or_runs_dirs(tmp_path):
    synthetic_cache(1).to_csv(tmp_path / "summary_cache.csv", index=False)
    text = write_report(tmp_path).read_text()
    assert "not analysed yet" in text and "<img" not in text


# --------------------------------------------------------------------------------------------------
# real browser
# --------------------------------------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def column(driver, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#runs tbody tr'))"
        ".map(r => r.cells[arguments[0]].dataset.v);", index)


def test_report_in_headless_chromium(report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(report.resolve().as_uri())
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    images = browser.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(images) >= 10  # summary plots + one curve per run
    assert all(width > 0 for _, width in images), [src for src, width in images if not width]

    headers = [th.text.strip() for th in browser.find_elements(By.CSS_SELECTOR, "#runs thead th")]
    for name, key in [("params", float), ("val loss", float), ("run", str)]:
        i = headers.index(name)
        th = browser.find_elements(By.CSS_SELECTOR, "#runs thead th")[i]
        th.click()
        values = [key(v) for v in column(browser, i)]
        assert values == sorted(values), (name, values)
        th.click()
        values = [key(v) for v in column(browser, i)]
        assert values == sorted(values, reverse=True), (name, values)
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

    tip = browser.execute_script("return document.querySelector('.tok').dataset.tip")
    assert "logprob -1.250" in tip and "'<a>'" in tip and "neighbours" in tip
