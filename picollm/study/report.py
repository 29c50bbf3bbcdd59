"""analysis_runs/: a static report over every run that opens straight from disk (no server, no CDN).

    index.html            the runs table (filter by family / corpus / status / text, sort, page; tick runs to
                          overlay their validation-loss curves) and the study: every plot of plots/, grouped
    curves.js             every run's validation-loss curve, loaded by index.html on the first tick
    report_assets/        the CSS and JS every page shares (copied from picollm/templates)
    <run>/index.html      one run: its curves and their numbers, samples with annotated tokens (hover one:
                          log-prob, top-5 alternatives, embedding neighbours), test metrics by frequency
                          bucket, its config, influence_top.csv when present

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
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
import pandas as pd

from picollm.core.atomic import atomic_write_text
from picollm.core.errors import CheckpointError
from picollm.core.log import get_logger
from picollm.runs.layout import read_json, read_metrics
from picollm.runs.table import BUCKETS, CONFIG_COLUMNS, TABLE_NAME, read_table

log = get_logger()

#: (column, header) of the runs table, in order; missing columns are left out
TABLE_COLUMNS = [("run", "run"), ("model", "family"), ("corpus", "corpus"), ("tokenizer", "tokenizer"),
                 ("embed", "embed"), ("hidden", "hidden"), ("layers", "layers"), ("heads", "heads"), ("k", "k"),
                 ("activation", "activation"), ("learning_rate", "lr"), ("params", "params"),
                 ("val_loss", "val loss"), ("val_ppl", "val ppl"), ("test_ppl", "test ppl"),
                 ("token_accuracy", "val acc"), ("test_acc", "test acc"), ("train_seconds", "train s"),
                 ("steps", "steps"), ("status", "status")]
#: the table's select filters: (column, label)
FILTERS = [("model", "family"), ("corpus", "corpus"), ("status", "status")]
#: the evaluations shown as numbers on a run page, when metrics.csv has them
EVAL_COLUMNS = ["step", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy", "learning_rate",
                "grad_norm_preclip", "elapsed_sec"]
#: the facts under a run page's title: (column, label)
FACT_COLUMNS = [("model", "family"), ("corpus", "corpus"), ("params", "params"), ("status", "status"),
                ("val_loss", "val loss"), ("best_step", "best step"), ("test_ppl", "test ppl"),
                ("token_accuracy", "val acc"), ("train_seconds", "train s"), ("analyzed_at", "analysed")]
#: plots/ PNGs by file-name prefix, in the order the study shows them; the rest go under "Other plots"
PLOT_GROUPS = [("curves_", "Learning curves"), ("pareto_", "Pareto fronts"), ("importance_", "Hyperparameter importance"),
               ("parallel_", "Parallel coordinates"), ("heatmap_", "Heatmaps"), ("box_", "Distributions"),
               ("joint_", "Distributions"), ("regression_", "Regressions"), ("correlation", "Correlations")]
MAX_SAMPLES = 6  # generations shown per run; the full set is in generations.csv
MAX_INFLUENCE_ROWS = 20
MAX_OVERLAY_POINTS = 200  # per run in curves.js: enough for a line 1,000 px wide, small at 10,000 runs
MAX_PAGE_POINTS = 500  # per series on a run page (train_log.csv can hold a row every 10 steps)
MAX_EVAL_ROWS = 200  # evaluations listed as numbers on a run page
WRITERS = 4  # threads writing run pages
ASSET_DIR = "report_assets"
PAGE_CACHE = "pages.json"  # in ASSET_DIR: per run, the signature of its page's inputs and its curve
#: the files of a run's checkpoint directory that its page reads or links
CHECKPOINT_FILES = ("metrics.csv", "train_log.csv", "config.json", "status.json")
ASSETS = ("report.css", "report.js", "index.js")
CURVES_FILE = "curves.js"
#: a URL with {run} where the run's name goes (e.g. the later `picollm playground`'s address); when
#: set, each run links to it ("open in playground"); unset, nothing of it appears in the report
PLAYGROUND_ENV = "PICOLLM_PLAYGROUND_URL"


def _py(v: Any) -> Any:
    """numpy scalar -> the Python value (np.int64 is not an int)."""
    return v.item() if isinstance(v, np.generic) else v


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any, column: str = "") -> str:
    """A cell's display text: thousands separators for counts, 4 significant digits otherwise."""
    v = _py(v)
    if _missing(v):
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if column in ("learning_rate", "lr"):
        return f"{v:.1e}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"


def _json_value(v: Any, digits: int = 6) -> Any:
    """A cell as compact JSON: None for missing, numbers to `digits` significant digits, the rest as text."""
    v = _py(v)
    if _missing(v):
        return None
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isinf(v):
            return None
        return int(v) if v.is_integer() and abs(v) < 2**53 else float(f"{v:.{digits}g}")
    return str(v)


@functools.cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("picollm", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "allow_nan": False}
    env.filters["fmt"] = _fmt
    return env


def _write_if_changed(path: Path, text: str) -> bool:
    """atomic_write_text unless the file already holds `text`: a re-run over 10,000 runs rewrites few pages."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def playground_href(template: str | None, run: str) -> str:
    """The playground link of a run, or "" when no playground URL is configured."""
    if not template:
        return ""
    name = quote(run, safe="")
    return template.replace("{run}", name) if "{run}" in template else f"{template}?run={name}"


# --------------------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------------------
def _token_text(item: Any) -> str:
    """An alternative / neighbour: {"token": t, ...}, [t, prob] or a bare token string."""
    if isinstance(item, dict):
        return str(item.get("token", ""))
    if isinstance(item, (list, tuple)):
        return str(item[0]) if item else ""
    return str(item)


def _token_prob(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("prob")
    if isinstance(item, (list, tuple)) and len(item) > 1:
        return item[1]
    return None


def token_tip(ann: dict) -> str:
    """The tooltip of one generated token: its log-prob, the top-5 alternatives, its embedding neighbours."""
    lines = []
    if not _missing(ann.get("logprob")):
        lines.append(f"logprob {float(ann['logprob']):.3f}  (p = {math.exp(float(ann['logprob'])):.3f})")
    alternatives = ann.get("alternatives") or ann.get("top5") or []
    if alternatives:
        lines.append("top-5:")
        for alt in alternatives[:5]:
            prob = _token_prob(alt)
            lines.append(f"  {_token_text(alt)!r}" + (f"  {float(prob):.3f}" if not _missing(prob) else ""))
    neighbours = ann.get("neighbours") or ann.get("neighbors") or []
    if neighbours:
        lines.append("neighbours: " + ", ".join(repr(_token_text(n)) for n in neighbours))
    return "\n".join(lines)


def sample_view(gen: dict) -> dict[str, Any]:
    """One generation for the template: its settings line, the prompt, and each token with its tooltip."""
    params = gen.get("decoding_params", gen.get("params", ""))
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError:
            pass
    if isinstance(params, dict):
        params = ", ".join(f"{k}={v}" for k, v in params.items())
    meta = [f"{gen.get('checkpoint', '')} checkpoint".strip(), f"strategy {gen.get('strategy', '?')}", str(params)]
    meta += [f"{key} {_fmt(gen[key])}" for key in ("step", "mean_logprob", "distinct_1", "distinct_2")
             if not _missing(gen.get(key))]
    annotation = [a for a in gen.get("annotation") or [] if isinstance(a, dict)]
    text = str(gen.get("text", ""))
    tokens, sep = [], ""
    if annotation:
        words = [str(a.get("token", "")) for a in annotation]
        # word-level tokens carry no spaces of their own: separate them when that is how the text reads
        sep = " " if "".join(words) != text and " ".join(words).strip() == text.strip() else ""
        for ann, word in zip(annotation, words):
            lp = ann.get("logprob")
            # shade by surprise: white for confident tokens, red for improbable ones
            alpha = 0.0 if _missing(lp) else min(0.6, max(0.0, -float(lp)) / 10)
            tokens.append({"text": word, "tip": token_tip(ann), "alpha": f"{alpha:.2f}"})
    return {"meta": " | ".join(m for m in meta if m), "prompt": str(gen.get("prompt", "")), "text": text,
            "tokens": tokens, "sep": sep}


def read_generations(path: Path, limit: int = MAX_SAMPLES) -> list[dict]:
    """Up to `limit` rows of generations.jsonl: the first prompt's sample per (checkpoint step, strategy).

    The last checkpoint often is the best one (same step, same samples): it is shown once. Corrupt lines
    are skipped, not fatal.
    """
    rows, seen = [], set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            key = (row.get("step", row.get("checkpoint")), row.get("strategy"))
            if key in seen:
                continue
            seen.add(key)
            rows.append(row)
            if len(rows) >= limit:
                break
    return rows


# --------------------------------------------------------------------------------------------------
# a run's curves
# --------------------------------------------------------------------------------------------------
def _spaced(n: int, limit: int) -> np.ndarray:
    """At most `limit` evenly spaced indices of n items, the first and the last among them."""
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int)) if n > limit else np.arange(n)


def _points(df: pd.DataFrame, x: str, y: str, limit: int) -> list[list[float]]:
    """[[x, y], ...] of the rows where both are finite, at most `limit` of them (evenly spaced, last kept)."""
    if x not in df.columns or y not in df.columns:
        return []
    xs, ys = (pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for c in (x, y))
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    keep = _spaced(len(xs), limit)
    return [[_json_value(a), _json_value(b, 5)] for a, b in zip(xs[keep].tolist(), ys[keep].tolist())]


def _read_train_log(run_dir: Path) -> pd.DataFrame | None:
    """<run_dir>/train_log.csv (step, train_loss, ... every few steps) when present and readable, else None.

    It is a finer view only: a file being written (its last line cut off) or unreadable costs the run page
    that view, never the report.
    """
    path = run_dir / "train_log.csv"
    if not path.is_file():
        return None
    try:
        log_df = pd.read_csv(path, on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        log.warning(f"warning: {path} unreadable ({e.__class__.__name__}); its run page shows metrics.csv only")
        return None
    return log_df if {"step", "train_loss"} <= set(log_df.columns) and len(log_df) else None


def _run_dir(value: Any, analysis_dir: Path) -> Path | None:
    """The run's checkpoint directory from the table's run_dir: as written, or beside analysis_dir when it
    was written relative to another working directory."""
    if _missing(value) or not str(value):
        return None
    path = Path(str(value))
    for candidate in (path, analysis_dir.parent / path):
        if candidate.is_dir():
            return candidate
    return None


def run_curves(run_dir: Path | None) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str]:
    """(metrics.csv, train_log.csv or None, why there are no metrics) of a run."""
    if run_dir is None:
        return None, None, "no checkpoint directory"
    try:
        metrics = read_metrics(run_dir)
    except CheckpointError as e:
        return None, _read_train_log(run_dir), str(e)
    return metrics, _read_train_log(run_dir), ""


def chart_series(metrics: pd.DataFrame | None, train_log: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The run page's loss chart: validation loss per evaluation and training loss, finest source first."""
    series = []
    if metrics is not None:
        series.append({"name": "validation loss", "points": _points(metrics, "step", "val_loss", MAX_PAGE_POINTS)})
    if train_log is not None:
        series.append({"name": "training loss (train_log.csv)",
                       "points": _points(train_log, "step", "train_loss", MAX_PAGE_POINTS)})
    elif metrics is not None:
        series.append({"name": "training loss (mean since the previous evaluation)",
                       "points": _points(metrics[metrics["step"] > 0], "step", "avg_loss", MAX_PAGE_POINTS)})
    return [s for s in series if s["points"]]


# --------------------------------------------------------------------------------------------------
# a run's page
# --------------------------------------------------------------------------------------------------
def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))


def _table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A small table for the template: its header, which columns are numbers, and rows of cells
    (display text, sort value, is number). Plain lists: a DataFrame per table cost more than the page."""
    rows = [[_py(v) for v in r] for r in rows]
    cells = [[(_fmt(v, c), "" if _missing(v) else str(v), _is_num(v)) for c, v in zip(columns, r)] for r in rows]
    num = [all(_is_num(r[j]) or _missing(r[j]) for r in rows) for j in range(len(columns))]
    return {"columns": columns, "num": num, "rows": cells}


def _frame_table(df: pd.DataFrame) -> dict[str, Any]:
    return _table([str(c) for c in df.columns], list(zip(*(df[c].tolist() for c in df.columns))))


def _test_table(row: dict[str, Any], summary: dict) -> dict[str, Any] | None:
    """Test perplexity overall and per training-frequency bucket (from summary.json, else the table row)."""
    test = summary.get("test") if isinstance(summary.get("test"), dict) else {}
    get = lambda key: _py(test.get(key, row.get(key)))
    lines = [["all tokens", get("test_ppl"), get("test_tokens"), get("test_loss"), get("test_acc")]]
    lines += [[b, get(f"test_ppl_{b}"), get(f"test_tokens_{b}"), None, None] for b in BUCKETS]
    if all(_missing(line[1]) for line in lines):
        return None
    columns = ["tokens", "test ppl", "count", "test loss", "test acc"]
    keep = [j for j in range(len(columns)) if any(not _missing(line[j]) for line in lines)]
    return _table([columns[j] for j in keep], [[line[j] for j in keep] for line in lines])


def _config_tables(row: dict[str, Any], summary: dict, parts: int = 3) -> list[dict[str, Any]]:
    """Every setting (summary.json's config when the run was analysed, else the settings in the table row),
    alphabetically, in `parts` side-by-side tables: ~60 settings in one column would fill three screens."""
    config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
    if not config:
        config = {c: _py(row[c]) for c in ["model", *CONFIG_COLUMNS] if c in row and not _missing(_py(row[c]))}
    # as configured: a seed is 1337, not 1,337
    items = [(k, json.dumps(v) if isinstance(v, (dict, list)) else "" if _missing(v) else str(v))
             for k, v in sorted(config.items())]
    size = max(1, math.ceil(len(items) / parts))
    return [_table(["setting", "value"], [list(item) for item in items[i:i + size]]) for i in range(0, len(items), size)]


def _influence(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.exists():
        return None, ""
    try:
        return _frame_table(pd.read_csv(path).head(MAX_INFLUENCE_ROWS)), ""
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        return None, f"influence_top.csv unreadable ({e.__class__.__name__})"


def _eval_table(metrics: pd.DataFrame | None) -> tuple[dict[str, Any] | None, int]:
    """metrics.csv as numbers (at most MAX_EVAL_ROWS rows, evenly spaced) and its full row count."""
    if metrics is None:
        return None, 0
    columns = [c for c in EVAL_COLUMNS if c in metrics.columns]
    keep = _spaced(len(metrics), MAX_EVAL_ROWS)
    return _table(columns, list(zip(*(metrics[c].to_numpy()[keep].tolist() for c in columns)))), len(metrics)


def _facts(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) of the run's headline numbers; the status with its reason."""
    facts = [(label, _fmt(row[c], c)) for c, label in FACT_COLUMNS if c in row and not _missing(_py(row[c]))]
    reason = _py(row.get("status_reason"))
    if not _missing(reason) and str(reason):
        facts = [(k, f"{v} ({reason})" if k == "status" else v) for k, v in facts]
    return facts


def run_page(row: dict[str, Any], analysis_dir: Path, run_dir: Path | None, metrics: pd.DataFrame | None,
             train_log: pd.DataFrame | None, why_no_metrics: str, playground: str | None) -> str:
    """The HTML of analysis_runs/<run>/index.html."""
    run = str(row["run"])
    out = analysis_dir / run
    summary: dict = {}
    if (out / "summary.json").exists():
        try:
            summary = read_json(out / "summary.json")
        except CheckpointError as e:
            log.warning(f"warning: {e}; its run page shows the table row only")
    gens = out / "generations.jsonl"
    curve = out / "metrics_curve.png"
    influence, influence_error = _influence(out / "influence_top.csv")
    evals, n_evals = _eval_table(metrics)
    checkpoint_files = [] if run_dir is None else [
        (quote(Path(os.path.relpath(run_dir / name, out)).as_posix()), name)
        for name in CHECKPOINT_FILES if (run_dir / name).exists()]
    files = sorted(p.name for p in out.iterdir() if p.suffix in (".csv", ".json", ".jsonl")) if out.is_dir() else []
    return _env().get_template("run.html").render(
        run=run, root="../" * len(Path(run).parts),  # a "/" in a run's name made a subdirectory
        run_dir=str(run_dir or ""), playground=playground_href(playground, run), facts=_facts(row),
        analysed=any(p.exists() for p in (out / "summary.json", gens, curve)),
        series=chart_series(metrics, train_log), why_no_metrics=why_no_metrics, evals=evals, n_evals=n_evals,
        train_log=train_log is not None, curve_png=curve.name if curve.exists() else "",
        other_pngs=sorted(p.name for p in out.glob("*.png") if p != curve),
        samples=[sample_view(g) for g in read_generations(gens)] if gens.exists() else [],
        test=_test_table(row, summary), config=_config_tables(row, summary),
        influence=influence, influence_error=influence_error, files=files, checkpoint_files=checkpoint_files)


@functools.cache
def _code_version() -> str:
    """A hash of this module and the templates: pages made by other code are made again."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
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
            run_dir = _run_dir(row.get("run_dir"), analysis_dir)
            signature = _signature(row, run_dir, analysis_dir / run, playground)
            hit = cache.get(run)
            if isinstance(hit, list) and len(hit) == 2 and hit[0] == signature and page_path(analysis_dir, run).exists():
                known[run] = hit
            else:
                metrics, train_log, why = run_curves(run_dir)
                curve = None if metrics is None else _points(metrics, "step", "val_loss", MAX_OVERLAY_POINTS)
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
    cols = [(c, h) for c, h in TABLE_COLUMNS if c in df.columns and (c == "run" or df[c].notna().any())]
    columns = [{"key": c, "label": h, "num": bool(pd.api.types.is_numeric_dtype(df[c])
                                                   and not pd.api.types.is_bool_dtype(df[c]))} for c, h in cols]
    keys = [c for c, _ in cols]
    rows = [[_json_value(v) for v in r] for r in df[keys].itertuples(index=False)]
    return {"columns": columns, "rows": rows}


def plot_groups(plots: Path) -> list[tuple[str, list[str]]]:
    """[(group title, [PNG names])] of plots/, in PLOT_GROUPS order, then "Other plots"."""
    groups: dict[str, list[str]] = {title: [] for _, title in PLOT_GROUPS}
    groups["Other plots"] = []
    for png in sorted(plots.glob("*.png")) if plots.is_dir() else []:
        title = next((t for prefix, t in PLOT_GROUPS if png.name.startswith(prefix)), "Other plots")
        groups[title].append(png.name)
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
    page = _env().get_template("index.html").render(
        n_runs=len(df), table_name=cache.name, generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        table=table_data(df), filters=_filter_options(df), study=_study(analysis_dir / "plots"),
        playground=playground or "")
    path = analysis_dir / "index.html"
    atomic_write_text(path, page)
    log.info(f"wrote {path} ({len(df)} runs; {rewritten} run page(s) changed) in {time.perf_counter() - start:.1f} s")
    return path
