"""The HTML report at scale: write it for N synthetic runs, then open it in headless Chromium.

    python bench/report_scale.py [--runs 10000] [--evals 11] [--loads 3] [--keep DIR]

Synthesises a table of N runs (four families, three corpora, a few failed / diverged) and a checkpoint
directory per run holding only a small metrics.csv (no analyses: the run pages then hold curves, numbers and
config, not samples), writes the report twice (the second time nothing changed), and opens index.html from
disk in headless Chromium through selenium. Prints the sizes, the write times and, per load, the time to
DOMContentLoaded, to load and to the table being rendered (the performance mark index.js sets after drawing
its first page), then the time to filter, sort, tick two runs until both curves are drawn (curves.js loads
on the first tick) and open a run page. Before the per-run pages (one page holding everything) the index was
12.9 MB and took ~8 s to open at 10,000 runs. Needs chromium, chromedriver (apt-get install -y chromium
chromium-driver) and selenium.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picollm.runs.layout import METRIC_COLUMNS  # noqa: E402
from picollm.runs.table import TABLE_COLUMNS, TABLE_NAME  # noqa: E402
from picollm.study.report import CURVES_FILE, write_report  # noqa: E402

FAMILIES = ["kgram_mlp", "lstm", "xlstm", "transformer"]
CORPORA = ["tinyshakespeare", "wikitext2", "ptb"]


def synthesise(root: Path, n: int, evals: int, seed: int = 0) -> None:
    """root/analysis_runs/runs.csv with n rows, and root/checkpoints/<run>/metrics.csv for each."""
    rng = np.random.default_rng(seed)
    ar, ck = root / "analysis_runs", root / "checkpoints"
    ar.mkdir(parents=True)
    rows = []
    for i in range(n):
        fam, corpus = FAMILIES[i % 4], CORPORA[(i // 4) % 3]
        run = f"{fam}-{corpus}-{i:08x}"
        start, final = 4.2 + rng.normal(0, 0.05), float(1.5 + rng.gamma(2.0, 0.3))
        status = rng.choice(["done", "stopped", "diverged", "failed"], p=[0.9, 0.05, 0.03, 0.02])
        steps = np.linspace(0, 2000, evals).round().astype(int)
        val = final + (start - final) * np.exp(-steps / 300) + rng.normal(0, 0.01, evals)
        run_dir = ck / run
        run_dir.mkdir(parents=True)
        # plain writes: this is the bench's input, not picollm's output
        metrics = pd.DataFrame({"step": steps, "epoch": 0, "tokens_seen": steps * 2048, "avg_loss": val + 0.05,
                                "val_loss": val, "perplexity": np.exp(val), "learning_rate": 1e-3,
                                "elapsed_sec": steps / 40.0}).reindex(columns=METRIC_COLUMNS)
        (run_dir / "metrics.csv").write_text(metrics.to_csv(index=False))
        lr = float(rng.choice([1e-3, 3e-3, 1e-2]))
        rows.append(dict(run=run, run_dir=str(run_dir), model=fam, corpus=corpus, tokenizer="char",
                         embed=int(rng.choice([32, 64, 128])), hidden=int(rng.choice([64, 128, 256])),
                         layers=int(rng.integers(1, 4)), heads=4 if fam in ("xlstm", "transformer") else None,
                         k=int(rng.integers(2, 6)) if fam == "kgram_mlp" else None, lr=lr, learning_rate=lr,
                         params=int(rng.integers(10_000, 2_000_000)), status=status, status_reason="synthetic",
                         steps=2000, train_seconds=float(rng.uniform(20, 600)), initial_val_loss=start,
                         val_loss=float(val.min()), val_ppl=float(np.exp(val.min())),
                         token_accuracy=float(0.7 - 0.1 * val.min()), test_ppl=float(np.exp(val.min() + 0.02)),
                         test_acc=0.4, test_ppl_rare=900.0, test_ppl_medium=40.0, test_ppl_frequent=5.0))
    pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS).to_csv(ar / TABLE_NAME, index=False)


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


TIMINGS = """
const nav = performance.getEntriesByType('navigation')[0];
const mark = performance.getEntriesByName('runs-table-rendered')[0];
return [nav.domContentLoadedEventEnd, nav.loadEventEnd, mark ? mark.startTime : NaN,
        document.querySelectorAll('#runs tbody tr').length, document.getElementById('count').textContent];
"""
# each returns the milliseconds of one interaction, measured in the page
FILTER = """
const t = performance.now(), s = document.getElementById('filter-model');
s.value = 'lstm'; s.dispatchEvent(new Event('change'));
const ms = performance.now() - t; s.value = ''; s.dispatchEvent(new Event('change')); return ms;"""
TEXT = """
const t = performance.now(), box = document.getElementById('filter-text');
box.value = 'wikitext2-000'; box.dispatchEvent(new Event('input'));
const ms = performance.now() - t; box.value = ''; box.dispatchEvent(new Event('input')); return ms;"""
SORT = """
const t = performance.now(); document.querySelector('#runs th[data-key=params]').click(); return performance.now() - t;"""
TICK = """
const done = arguments[arguments.length - 1], t = performance.now();
document.querySelectorAll('#runs tbody input[type=checkbox]').forEach((b, i) => { if (i < 2) b.click(); });
(function wait() {
  if (document.querySelectorAll('#overlay path.curve').length === 2) done(performance.now() - t);
  else requestAnimationFrame(wait);
})();"""


def browse(index: Path, loads: int) -> None:
    driver = chromium()
    try:
        print(f"headless {driver.capabilities.get('browserName')} {driver.capabilities.get('browserVersion')}, "
              f"{index} from disk:")
        worst = []
        for i in range(loads):
            start = time.perf_counter()
            driver.get(index.resolve().as_uri())  # returns after the load event
            wall = time.perf_counter() - start
            dcl, load, rendered, shown, count = driver.execute_script(TIMINGS)
            worst.append(max(dcl, load) / 1000)
            print(f"  load {i + 1}: DOMContentLoaded {dcl / 1000:.3f} s, load {load / 1000:.3f} s, table rendered "
                  f"{rendered / 1000:.3f} s ({shown} rows drawn; {count}); driver.get {wall:.3f} s")
        print(f"  filter by family {driver.execute_script(FILTER) / 1000:.3f} s, text filter "
              f"{driver.execute_script(TEXT) / 1000:.3f} s, sort by params {driver.execute_script(SORT) / 1000:.3f} s")
        driver.set_script_timeout(30)
        print(f"  tick 2 runs until both curves are drawn (loads {CURVES_FILE}): "
              f"{driver.execute_async_script(TICK) / 1000:.3f} s")
        first = driver.execute_script("return document.querySelector('#runs tbody td:nth-child(2) a').href")
        start = time.perf_counter()
        driver.get(first)
        print(f"  a run page: driver.get {time.perf_counter() - start:.3f} s")
        verdict = "yes" if max(worst) <= 2 else "NO"
        print(f"goal, index.html opens in <= 2 s: {verdict} (slowest load {max(worst):.3f} s, "
              f"median {statistics.median(worst):.3f} s)")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--evals", type=int, default=11, help="evaluations per run (rows of metrics.csv)")
    parser.add_argument("--loads", type=int, default=3, help="times index.html is opened")
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep it (default: a temp dir, removed)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="report_scale-"))
    try:
        start = time.perf_counter()
        synthesise(root, args.runs, args.evals)
        print(f"synthesised {args.runs:,} runs ({args.evals} evaluations each) in {time.perf_counter() - start:.1f} s")
        ar = root / "analysis_runs"
        start = time.perf_counter()
        index = write_report(ar)
        first = time.perf_counter() - start
        start = time.perf_counter()
        write_report(ar)
        again = time.perf_counter() - start
        pages = [p.stat().st_size for p in ar.glob("*/index.html")]
        mb = lambda p: p.stat().st_size / 1e6
        print(f"report written in {first:.1f} s ({first / args.runs * 1000:.1f} ms per run), again with nothing "
              f"changed {again:.1f} s ({again / first:.2f}x)")
        print(f"index.html {mb(index):.2f} MB, {CURVES_FILE} {mb(ar / CURVES_FILE):.2f} MB, {len(pages):,} run pages "
              f"of median {statistics.median(pages) / 1000:.1f} kB")
        browse(index, args.loads)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
