"""The report: every run present and escaped, index.html the table + study, one page per run; in a real headless
Chromium it loads cleanly, filters, sorts, pages, overlays ticked runs' curves, shows images and token tooltips."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_no_errors
from markupsafe import escape

import picollm.study.report as report_module
from picollm.runs.layout import write_metrics
from picollm.study.plots import GROUPS, Plot, group_of, register_plot, unregister_plot
from picollm.study.report import CURVES_FILE, PLAYGROUND_ENV, write_report
from picollm.study.summarize import summarize

EVIL_RUN = 'kgram_mlp-<b>bold</b>&"quote\'-00000000'
EVIL_TOKEN = "<script>alert(1)</script>"
TRAIN_LOG_RUN = 1  # the row whose run directory also has a train_log.csv


def synthetic_cache(n_per: int = 3) -> pd.DataFrame:
    """A runs.csv-shaped frame: four families, NaN where a family lacks a setting."""
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
                             test_loss=val + 0.01, test_ppl=float(np.exp(val + 0.01)), test_acc=0.3,
                             test_ppl_rare=900.0 + i, test_ppl_medium=40.0, test_ppl_frequent=5.5,
                             test_tokens_rare=12, test_tokens_medium=300, test_tokens_frequent=5000))
    df = pd.DataFrame(rows)
    df.loc[0, "run"] = EVIL_RUN
    df.loc[len(df) - 1, "status"] = "diverged"
    df.loc[len(df) - 2, "corpus"] = "wikitext2"
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
    # the format of picollm.analyze.generate.annotate
    annotation = [{"token": tok, "id": 1, "logprob": -1.25, "alternatives": [["<a>", 0.4], ["e", 0.2]],
                   "neighbours": ["x", "</span>", "y", "z", "w"]} for tok in ["Hel", "lo ", EVIL_TOKEN]]
    gens = [{"run": run, "checkpoint": checkpoint, "step": step, "strategy": strategy,
             "decoding_params": json.dumps({"temperature": 0.8}), "prompt": "ROMEO:", "text": "Hello " + EVIL_TOKEN,
             "annotation": annotation, "mean_logprob": -1.25, "distinct_1": 0.9, "distinct_2": 1.0}
            for checkpoint, step in (("best", 20), ("last", 30), ("last", 30)) for strategy in ("greedy", "top_p", "beam")]
    (run_dir / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    (run_dir / "summary.json").write_text(json.dumps({"run": run, "config": {"model": run.split("-")[0], "embed": 16,
                                                                              "note": "<i>cfg</i>"}}))


def val_losses(seed: int, evals: int = 6) -> list[float]:
    return [round(4.2 - 0.3 * i - 0.01 * seed, 4) for i in range(evals)]


def fake_checkpoint(run_dir: Path, seed: int, train_log: bool = False, evals: int = 6) -> None:
    """A run directory's metrics.csv (evaluations every 20 steps: val_losses) and, if asked, its train_log.csv."""
    val = val_losses(seed, evals)
    write_metrics(run_dir, [{"step": 20 * i, "tokens_seen": 640 * i, "avg_loss": v + 0.1, "val_loss": v,
                             "learning_rate": 1e-3, "elapsed_sec": float(i)} for i, v in enumerate(val)])
    if train_log:
        (run_dir / "train_log.csv").write_text("step,train_loss,learning_rate,tokens_seen,elapsed_sec\n" + "".join(
            f"{s},{4.3 - s / 40:.3f},0.001,{32 * s},{s / 10}\n" for s in range(10, 101, 10)))


def page(root: Path, run: str) -> Path:
    return root / run / "index.html"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("analysis_runs")
    df = synthetic_cache()
    df["run_dir"] = [str(root.parent / "checkpoints" / run) for run in df["run"]]
    df.to_csv(root / "runs.csv", index=False)
    for i, (run, run_dir) in enumerate(zip(df["run"], df["run_dir"])):
        fake_run_files(root / run, run)
        fake_checkpoint(Path(run_dir), i, train_log=i == TRAIN_LOG_RUN)
    (root / df["run"][1] / "influence_top.csv").write_text("rank,text,score\n1,<i>to be</i>,0.5\n2,or not,0.25\n")
    result = summarize(root)
    assert result["report"] == root / "index.html"
    # the summary plots of other modules: any PNG in plots/ is shown, grouped by its name
    for name in ["importance_lstm.png", "curves_lstm_tinyshakespeare.png", "zz_custom_view.png"]:
        shutil.copy(root / "lstm-tinyshakespeare-00000000" / "metrics_curve.png", root / "plots" / name)
    return write_report(root)


def runs_data(index: Path) -> dict:
    text = index.read_text()
    start = text.index('<script type="application/json" id="runs-data">') + len('<script type="application/json" id="runs-data">')
    return json.loads(text[start:text.index("</script>", start)])


def test_html_contains_every_run_escaped(report):
    root = report.parent
    text = report.read_text()
    df = pd.read_csv(root / "runs.csv")
    assert sorted(r[0] for r in runs_data(report)["rows"]) == sorted(df["run"])  # every run in the index's table
    pages = {run: page(root, run).read_text() for run in df["run"]}
    for run in df["run"]:
        assert f">{escape(run)}<" in pages[run], run  # its own page, title escaped (as Jinja2 escapes)
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in pages[EVIL_RUN]
    assert "\\u003cb\\u003ebold\\u003c/b\\u003e" in text  # in the index's JSON: no value can close the <script>
    assert all(EVIL_TOKEN not in p and "&lt;script&gt;alert(1)&lt;/script&gt;" in p for p in pages.values())
    assert "&lt;i&gt;to be&lt;/i&gt;" in pages[df["run"][1]]  # influence_top.csv shown, escaped
    assert "&lt;i&gt;cfg&lt;/i&gt;" in pages[df["run"][2]]  # the config from summary.json, escaped
    assert sum(p.count('class="sample"') for p in pages.values()) == 6 * len(df)  # one per (checkpoint step, strategy)
    for shipped in [text, *pages.values(), *(p.read_text() for p in (root / "report_assets").iterdir())]:
        assert "http://" not in shipped and "https://" not in shipped  # nothing to fetch: opens offline
    for png in (root / "plots").glob("*.png"):
        assert f'src="plots/{png.name}"' in text
    assert 'class="sample"' not in text and 'class="tok"' not in text  # the index stays the table and the study


def test_index_groups_every_plot(report):
    text = report.read_text()
    shown = [title for title in [*GROUPS, "Other plots"] if f"<h3>{title}</h3>" in text]
    assert len(shown) >= 5 and shown[-1] == "Other plots"
    assert [text.index(f"<h3>{title}</h3>") for title in shown] == sorted(text.index(f"<h3>{t}</h3>") for t in shown)
    assert group_of("zz_custom_view.png") is None  # no registered plot writes it
    for name in ["curves_lstm_tinyshakespeare.png", "importance_lstm.png", "zz_custom_view.png", "box_val_loss_by_family.png"]:
        heading = text.rindex("<h3>", 0, text.index(f'src="plots/{name}"'))
        assert text.startswith(f"<h3>{group_of(name) or 'Other plots'}</h3>", heading), name


def test_run_page_holds_curves_buckets_and_config(report):
    root = report.parent
    df = pd.read_csv(root / "runs.csv")
    with_log, without = page(root, df["run"][TRAIN_LOG_RUN]).read_text(), page(root, df["run"][2]).read_text()
    assert "training loss (train_log.csv)" in with_log and "train_log.csv</a>" in with_log
    assert "training loss (mean since the previous evaluation)" in without and "train_log.csv" not in without
    assert 'id="test-buckets"' in without and ">rare<" in without and ">902<" in without and ">5,000<" in without
    assert 'id="config-table"' in without and 'id="evals"' in without and "6 evaluation(s) from metrics.csv" in without
    # curves.js: every run's val-loss curve, as written to metrics.csv
    curves = curves_js(root)
    assert set(curves) == set(df["run"])
    assert curves[df["run"][3]] == [[20 * i, v] for i, v in enumerate(val_losses(3))]


@pytest.fixture
def toy_plot():
    """A plot registered from outside the package, as a user's would be; unregistered after."""
    def draw(loss, paths):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(3, 2))
        ax.hist(loss)
        fig.savefig(paths[0])
        return paths

    plot = register_plot(Plot("toy_hist", "Toy histograms", "toy_", data=lambda inputs, key: inputs.runs["val_loss"],
                              draw=draw, files=lambda key: ["toy_hist.png"]))
    yield plot
    unregister_plot(plot.name)
    GROUPS.remove(plot.group)


def test_a_registered_plot_is_drawn_and_shown_under_its_group(toy_plot, tmp_path):
    synthetic_cache(2).to_csv(tmp_path / "runs.csv", index=False)
    result = summarize(tmp_path)
    assert tmp_path / "plots" / "toy_hist.png" in result["written"] and "toy_hist" not in result["skipped"]
    text = result["report"].read_text()
    heading = text.rindex("<h3>", 0, text.index('src="plots/toy_hist.png"'))
    assert text.startswith("<h3>Toy histograms</h3>", heading)


def test_importing_the_study_leaves_matplotlib_s_backend_alone():
    code = ("import matplotlib, picollm.study.summarize, picollm.study.report, picollm.study.plots; "
            "print(matplotlib.get_backend(auto_select=False))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "None", proc.stderr  # none chosen: an interactive session keeps its own


def test_report_without_plots_or_runs_dirs(tmp_path):
    synthetic_cache(1).to_csv(tmp_path / "runs.csv", index=False)
    text = write_report(tmp_path).read_text()
    assert "<img" not in text
    run_page = page(tmp_path, "lstm-tinyshakespeare-00000000").read_text()
    assert "not analysed yet" in run_page and "<img" not in run_page and "no checkpoint directory" in run_page


def test_rerun_rewrites_only_the_index(report, monkeypatch):
    written = []
    monkeypatch.setattr(report_module, "atomic_write_text", lambda path, text: written.append(path))
    write_report(report.parent)
    assert written == [report]  # run pages, curves.js and the assets are unchanged: not rewritten


def curves_js(root: Path) -> dict[str, list]:
    return json.loads((root / CURVES_FILE).read_text().split(" = ", 1)[1].rstrip().rstrip(";"))


def test_a_changed_run_rewrites_its_page_and_curves_only(tmp_path, monkeypatch):
    df = synthetic_cache(1)
    df["run_dir"] = [str(tmp_path / "ck" / run) for run in df["run"]]
    df.to_csv(tmp_path / "runs.csv", index=False)
    for i, run_dir in enumerate(df["run_dir"]):
        fake_checkpoint(Path(run_dir), i)
    write_report(tmp_path)
    run, run_dir = df["run"][1], Path(df["run_dir"][1])
    fake_checkpoint(run_dir, 1, train_log=True, evals=7)  # trained on: one more evaluation, and the finer log
    written, real = [], report_module.atomic_write_text
    monkeypatch.setattr(report_module, "atomic_write_text", lambda path, text: (written.append(path), real(path, text)))
    write_report(tmp_path)
    assert sorted(written) == sorted([tmp_path / "index.html", page(tmp_path, run), tmp_path / CURVES_FILE,
                                      tmp_path / "report_assets" / "pages.json"])
    assert "training loss (train_log.csv)" in page(tmp_path, run).read_text()
    assert curves_js(tmp_path)[run] == [[20 * i, v] for i, v in enumerate(val_losses(1, 7))]


def test_playground_link_only_when_configured(tmp_path, monkeypatch):
    synthetic_cache(1).to_csv(tmp_path / "runs.csv", index=False)
    run = "lstm-tinyshakespeare-00000000"
    monkeypatch.delenv(PLAYGROUND_ENV, raising=False)
    write_report(tmp_path)
    assert 'class="playground"' not in page(tmp_path, run).read_text()
    assert f'data-run="{run}"' in page(tmp_path, run).read_text()  # the hook is there either way
    monkeypatch.setenv(PLAYGROUND_ENV, "http://127.0.0.1:8765/play?run={run}")
    write_report(tmp_path)
    assert f'<a class="playground" href="http://127.0.0.1:8765/play?run={run}">' in page(tmp_path, run).read_text()
    write_report(tmp_path, playground_url="/play/{run}")  # the argument wins over the environment
    assert 'href="/play/kgram_mlp-%3Cb%3Ebold%3C%2Fb%3E%26%22quote%27-00000000"' in page(tmp_path, EVIL_RUN).read_text()


# --------------------------------------------------------------------------------------------------
# real browser
# --------------------------------------------------------------------------------------------------
def open_page(driver, path: Path) -> None:
    """Load a page from disk and wait for it and its images; no console error on the way."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    assert_no_errors(driver)


def column(driver, index: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#runs tbody tr'))"
        ".map(r => r.cells[arguments[0]].dataset.v);", index)


def visible_runs(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.querySelectorAll('#runs tbody tr td:nth-child(2) a'))"
                                 ".map(a => a.textContent);")


def images_loaded(driver) -> list:
    images = driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert all(width > 0 for _, width in images), [src for src, width in images if not width]
    return images


def test_report_in_headless_chromium(report, browser):
    from selenium.webdriver.common.by import By

    open_page(browser, report)
    assert len(images_loaded(browser)) == len(list((report.parent / "plots").glob("*.png")))  # the study
    assert len(visible_runs(browser)) == 12

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
    assert_no_errors(browser)


def test_filters_reduce_the_visible_rows(report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, report)
    family = Select(browser.find_element(By.ID, "filter-model"))
    family.select_by_value("lstm")
    assert sorted(visible_runs(browser)) == [f"lstm-tinyshakespeare-{i:08d}" for i in range(3)]
    assert browser.find_element(By.ID, "count").text == "3 of 12 runs match"
    family.select_by_value("")
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("diverged")
    assert visible_runs(browser) == ["transformer-tinyshakespeare-00000002"]
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-corpus")).select_by_value("wikitext2")
    assert visible_runs(browser) == ["transformer-tinyshakespeare-00000001"]
    Select(browser.find_element(By.ID, "filter-corpus")).select_by_value("")

    text = browser.find_element(By.ID, "filter-text")
    text.send_keys("LSTM")  # case-insensitive, any text column: lstm and xlstm runs
    assert sorted(visible_runs(browser)) == sorted(f"{f}-tinyshakespeare-{i:08d}" for f in ("lstm", "xlstm") for i in range(3))
    text.clear()
    text.send_keys("<b>bold")
    assert visible_runs(browser) == [EVIL_RUN]
    family.select_by_value("lstm")
    assert visible_runs(browser) == []
    assert_no_errors(browser)


def test_ticking_two_runs_overlays_two_curves(report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, report)
    curves = lambda d: d.execute_script("return document.querySelectorAll('#overlay path.curve').length")
    assert curves(browser) == 0
    boxes = browser.find_elements(By.CSS_SELECTOR, "#runs tbody input[type=checkbox]")
    picked = [b.get_attribute("data-run") for b in boxes[:2]]
    for box in boxes[:2]:
        box.click()
    WebDriverWait(browser, 10).until(lambda d: curves(d) == 2)  # curves.js loads on the first tick
    legend = browser.execute_script("return Array.from(document.querySelectorAll('#overlay .legend a')).map(a => a.textContent)")
    assert legend == picked
    browser.refresh()  # the ticks are kept in the URL: a reload (or the back button) shows the same overlay
    WebDriverWait(browser, 10).until(lambda d: curves(d) == 2)
    browser.find_elements(By.CSS_SELECTOR, "#runs tbody input[type=checkbox]:checked")[0].click()
    WebDriverWait(browser, 10).until(lambda d: curves(d) == 1)
    assert_no_errors(browser)
    browser.find_element(By.ID, "untick").click()
    assert curves(browser) == 0


def test_run_page_in_headless_chromium(report, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, report)
    browser.find_element(By.ID, "filter-text").send_keys("bold")
    browser.find_element(By.LINK_TEXT, EVIL_RUN).click()  # the strangest name: its page is found all the same
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    assert browser.find_element(By.TAG_NAME, "h1").text == EVIL_RUN
    assert_no_errors(browser)
    assert len(images_loaded(browser)) == 1  # metrics_curve.png
    assert browser.execute_script("return document.querySelectorAll('#curves path.curve').length") == 2  # val + train

    tok = browser.find_elements(By.CSS_SELECTOR, ".tok")[2]
    tip = "return getComputedStyle(arguments[0], '::after').content"
    assert browser.execute_script(tip, tok) == "none"
    ActionChains(browser).move_to_element(tok).perform()
    shown = browser.execute_script(tip, tok)
    assert "logprob -1.250" in shown and "'<a>'" in shown and "neighbours" in shown
    assert tok.text == EVIL_TOKEN  # shown as text, never run

    loaded = lambda d: d.execute_script("return document.readyState === 'complete'")
    browser.find_element(By.LINK_TEXT, "the study").click()
    WebDriverWait(browser, 20).until(loaded)
    assert abs(browser.execute_script("return document.getElementById('study').getBoundingClientRect().top")) < 5
    browser.back()
    WebDriverWait(browser, 20).until(loaded)
    browser.find_element(By.LINK_TEXT, "\u2190 all runs").click()
    WebDriverWait(browser, 20).until(loaded)
    assert browser.find_element(By.TAG_NAME, "h1").text == "picollm: all runs"
    assert_no_errors(browser)


def test_paging_at_more_runs_than_a_page(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    synthetic_cache(40).to_csv(tmp_path / "runs.csv", index=False)  # 160 runs, no analyses
    open_page(browser, write_report(tmp_path))
    assert len(visible_runs(browser)) == 100 and browser.find_element(By.ID, "page").text == "page 1 of 2 (1\u2013100)"
    browser.find_element(By.ID, "next").click()
    assert len(visible_runs(browser)) == 60 and not browser.find_element(By.ID, "next").is_enabled()
    Select(browser.find_element(By.ID, "filter-model")).select_by_value("xlstm")  # a new filter starts at page 1
    assert len(visible_runs(browser)) == 40 and browser.find_element(By.ID, "page").text == "page 1 of 1 (1\u201340)"
    Select(browser.find_element(By.ID, "page-size")).select_by_value("50")
    Select(browser.find_element(By.ID, "filter-model")).select_by_value("")
    assert len(visible_runs(browser)) == 50 and browser.find_element(By.ID, "page").text == "page 1 of 4 (1\u201350)"
    assert_no_errors(browser)
