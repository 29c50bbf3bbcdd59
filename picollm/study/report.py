"""analysis_runs/: a static report over every run that opens straight from disk (no server, no CDN).

    index.html            the runs table (filter by family / corpus / status / text, sort, page; tick runs to
                          overlay their validation-loss curves) and the study: every plot of plots/, grouped
    curves.js             every run's validation-loss curve, loaded by index.html on the first tick
    report_assets/        the CSS and JS every page shares (copied from picollm/templates)
    <run>/index.html      one run: its curves and their numbers, samples with annotated tokens (hover one:
                          log-prob, top-5 alternatives, embedding neighbours), test metrics by frequency
                          bucket, its config, influence_top.csv when present (made by picollm.study.pages)

The table's rows are embedded in index.html as one JSON array and drawn a page at a time in the browser:
one page holding every row and every run's section was 12.9 MB and took ~8 s to open at 10,000 runs; split
this way the index is ~1.5 MB and opens in well under a second (bench/report_scale.py). Pages are Jinja2
templates from picollm/templates with autoescaping, so every piece of text from a run is html-escaped; JSON
in a page goes through Jinja's tojson, which escapes <, > and & so that no value can close its <script>.
Run pages carry no timestamp and are made again only when something they are made from changed (a
signature per run in report_assets/pages.json), so re-running the report over 10,000 runs is quick.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from picollm.core.atomic import atomic_write_text
from picollm.core.log import get_logger
from picollm.runs.table import TABLE_NAME, read_table
from picollm.study import pages
from picollm.study.pages import (
    CHECKPOINT_FILES,
    environment,
    find_run_dir,
    json_value,
    points,
    run_curves,
    run_page,
)
from picollm.study.plots import GROUPS, group_of

log = get_logger()

#: (column, header) of the index's runs table, in order; missing columns are left out
INDEX_COLUMNS = [("run", "run"), ("model", "family"), ("corpus", "corpus"), ("tokenizer", "tokenizer"),
                 ("embed", "embed"), ("hidden", "hidden"), ("layers", "layers"), ("heads", "heads"), ("k", "k"),
                 ("activation", "activation"), ("learning_rate", "lr"), ("params", "params"),
                 ("val_loss", "val loss"), ("val_ppl", "val ppl"), ("test_ppl", "test ppl"),
                 ("token_accuracy", "val acc"), ("test_acc", "test acc"), ("train_seconds", "train s"),
                 ("steps", "steps"), ("status", "status")]
#: the table's select filters: (column, label)
FILTERS = [("model", "family"), ("corpus", "corpus"), ("status", "status")]
MAX_OVERLAY_POINTS = 200  # per run in curves.js: enough for a line 1,000 px wide, small at 10,000 runs
WRITERS = 4  # threads writing run pages
ASSET_DIR = "report_assets"
PAGE_CACHE = "pages.json"  # in ASSET_DIR: per run, the signature of its page's inputs and its curve
ASSETS = ("report.css", "report.js", "index.js")
CURVES_FILE = "curves.js"
#: a URL with {run} where the run's name goes (e.g. the later `picollm playground`'s address); when
#: set, each run links to it ("open in playground"); unset, nothing of it appears in the report
PLAYGROUND_ENV = "PICOLLM_PLAYGROUND_URL"


def _write_if_changed(path: Path, text: str) -> bool:
    """atomic_write_text unless the file already holds `text`: a re-run over 10,000 runs rewrites few pages."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


@functools.cache
def _code_version() -> str:
    """A hash of this module, the run page's and the templates: pages made by other code are made again."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + Path(pages.__file__).read_bytes())
    for item in sorted((resources.files("picollm") / "templates").iterdir(), key=lambda t: t.name):
        digest.update(item.name.encode() + item.read_bytes())
    return digest.hexdigest()


def _signature(row: dict[str, Any], run_dir: Path | None, out: Path, playground: str | None) -> str:
    """A hash of everything a run page is made from: its table row, the name, size and mtime of every file
    of its analysis and of the checkpoint files it reads or links, the playground URL and the code."""
    files = [] if not out.is_dir() else [p for p in sorted(out.iterdir()) if p.name != "index.html"]
    files += [run_dir / name for name in CHECKPOINT_FILES] if run_dir is not None else []
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p in files if (st := _stat(p)) is not None]
    text = json.dumps([row, str(run_dir), stats, playground, _code_version()], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _read_page_cache(path: Path) -> dict[str, list]:
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def write_run_pages(df: pd.DataFrame, analysis_dir: Path, playground: str | None) -> tuple[dict[str, list], int]:
    """Write every run's page; return ({run: its val-loss curve for curves.js}, pages rewritten).

    A page whose inputs have the signature recorded when it was made (report_assets/pages.json, with its
    curve) is neither read nor rendered again: re-running the report over 10,000 runs took ~50 s without.
    """
    cache_path = analysis_dir / ASSET_DIR / PAGE_CACHE
    cache, known = _read_page_cache(cache_path), {}
    curves: dict[str, list] = {}
    # pages are rendered here and written by threads: an atomic write waits on fsync and rename (milliseconds
    # each, with the GIL released), which at 10,000 pages took longer than rendering them
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        writes = []
        for row in df.to_dict("records"):
            run = str(row["run"])
            run_dir = find_run_dir(row.get("run_dir"), analysis_dir)
            signature = _signature(row, run_dir, analysis_dir / run, playground)
            hit = cache.get(run)
            if isinstance(hit, list) and len(hit) == 2 and hit[0] == signature and page_path(analysis_dir, run).exists():
                known[run] = hit
            else:
                metrics, train_log, why = run_curves(run_dir)
                curve = None if metrics is None else points(metrics, "step", "val_loss", MAX_OVERLAY_POINTS)
                page = run_page(row, analysis_dir, run_dir, metrics, train_log, why, playground)
                page_path(analysis_dir, run).parent.mkdir(parents=True, exist_ok=True)
                writes.append(pool.submit(_write_if_changed, page_path(analysis_dir, run), page))
                known[run] = [signature, curve]
            if known[run][1] is not None:
                curves[run] = known[run][1]
        written = sum(w.result() for w in writes)
    _write_if_changed(cache_path, json.dumps(known, separators=(",", ":")) + "\n")
    return curves, written


def page_path(analysis_dir: Path, run: str) -> Path:
    return analysis_dir / run / "index.html"


# --------------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------------
def table_data(df: pd.DataFrame) -> dict[str, Any]:
    """The runs table as embedded in index.html: its columns and one array of cells per run."""
    # the table reader gives every column of the schema: one no run has a value for is left out
    cols = [(c, h) for c, h in INDEX_COLUMNS if c in df.columns and (c == "run" or df[c].notna().any())]
    columns = [{"key": c, "label": h, "num": bool(pd.api.types.is_numeric_dtype(df[c])
                                                   and not pd.api.types.is_bool_dtype(df[c]))} for c, h in cols]
    keys = [c for c, _ in cols]
    rows = [[json_value(v) for v in r] for r in df[keys].itertuples(index=False)]
    return {"columns": columns, "rows": rows}


def plot_groups(plots: Path) -> list[tuple[str, list[str]]]:
    """[(group title, [PNG names])] of plots/: each PNG under its registered plot's group, in GROUPS order,
    then "Other plots" (a PNG no registered plot writes)."""
    groups: dict[str, list[str]] = {title: [] for title in GROUPS}
    groups["Other plots"] = []
    for png in sorted(plots.glob("*.png")) if plots.is_dir() else []:
        groups[group_of(png.name) or "Other plots"].append(png.name)
    return [(title, names) for title, names in groups.items() if names]


def _study(plots: Path) -> dict[str, Any]:
    """What the index shows of plots/: grouped PNGs, links to its tables, skipped plots, OLS summaries."""
    if not plots.is_dir():
        return {"groups": [], "files": [], "skipped": [], "regression": ""}
    skipped = plots / "skipped.txt"
    regression = plots / "regression_summary.txt"
    return {"groups": plot_groups(plots),
            "files": sorted(p.name for p in plots.iterdir() if p.suffix in (".csv", ".md", ".txt")),
            "skipped": [line for line in skipped.read_text().splitlines() if line.strip()] if skipped.exists() else [],
            "regression": regression.read_text() if regression.exists() else ""}


def _filter_options(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"key": c, "label": label, "values": sorted(str(v) for v in df[c].dropna().unique())}
            for c, label in FILTERS if c in df.columns]


def write_assets(analysis_dir: Path, curves: dict[str, list]) -> None:
    """report_assets/ (the shared CSS and JS) and curves.js."""
    templates = resources.files("picollm") / "templates"
    for name in ASSETS:
        _write_if_changed(analysis_dir / ASSET_DIR / name, (templates / name).read_text(encoding="utf-8"))
    # a script, not a .json file: index.html loads it with <script src>, which works from file:// where
    # fetch() of a local file is refused
    text = ("// every run's validation-loss curve: run -> [[step, val_loss], ...] (written by picollm.study.report)\n"
            f"window.PICOLLM_CURVES = {json.dumps(curves, separators=(',', ':'), allow_nan=False)};\n")
    _write_if_changed(analysis_dir / CURVES_FILE, text)


def write_report(analysis_dir: Path | str = "analysis_runs", playground_url: str | None = None) -> Path:
    """Write <analysis_dir>/index.html, curves.js, report_assets/ and every run's <run>/index.html.

    playground_url (default: $PICOLLM_PLAYGROUND_URL): a URL with {run} to link each run to; none by default.
    """
    start = time.perf_counter()
    analysis_dir = Path(analysis_dir)
    playground = playground_url if playground_url is not None else os.environ.get(PLAYGROUND_ENV) or None
    cache = analysis_dir / TABLE_NAME
    df = read_table(cache)
    if df["learning_rate"].isna().all() and "lr" in df.columns:
        df["learning_rate"] = df["lr"]
    df = df.sort_values("val_loss", na_position="last", kind="stable")
    curves, rewritten = write_run_pages(df, analysis_dir, playground)
    write_assets(analysis_dir, curves)
    page = environment().get_template("index.html").render(
        n_runs=len(df), table_name=cache.name, generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        table=table_data(df), filters=_filter_options(df), study=_study(analysis_dir / "plots"),
        playground=playground or "")
    path = analysis_dir / "index.html"
    atomic_write_text(path, page)
    log.info(f"wrote {path} ({len(df)} runs; {rewritten} run page(s) changed) in {time.perf_counter() - start:.1f} s")
    return path
