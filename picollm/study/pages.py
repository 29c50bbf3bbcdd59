"""The report's HTML pieces: the Jinja2 environment (templates from picollm/templates, autoescaped), how a cell
reads, and one run's page (analysis_runs/<run>/index.html): its curves and their numbers, samples with
annotated tokens, test metrics by frequency bucket, its config, influence_top.csv when present.

picollm.study.report decides which pages to write and writes them.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
import pandas as pd

from picollm.core.errors import CheckpointError
from picollm.core.log import get_logger
from picollm.runs.layout import read_json, read_metrics
from picollm.runs.table import BUCKETS, CONFIG_COLUMNS

log = get_logger()

#: the evaluations shown as numbers on a run page, when metrics.csv has them
EVAL_COLUMNS = ["step", "tokens_seen", "avg_loss", "val_loss", "perplexity", "token_accuracy", "learning_rate",
                "grad_norm_preclip", "elapsed_sec"]
#: the facts under a run page's title: (column, label)
FACT_COLUMNS = [("model", "family"), ("corpus", "corpus"), ("params", "params"), ("status", "status"),
                ("val_loss", "val loss"), ("best_step", "best step"), ("test_ppl", "test ppl"),
                ("token_accuracy", "val acc"), ("train_seconds", "train s"), ("analyzed_at", "analysed")]
MAX_SAMPLES = 6  # generations shown per run; the full set is in generations.csv
MAX_INFLUENCE_ROWS = 20
MAX_PAGE_POINTS = 500  # per series on a run page (train_log.csv can hold a row every 10 steps)
MAX_EVAL_ROWS = 200  # evaluations listed as numbers on a run page
#: the files of a run's checkpoint directory that its page reads or links
CHECKPOINT_FILES = ("metrics.csv", "train_log.csv", "config.json", "status.json")


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


def json_value(v: Any, digits: int = 6) -> Any:
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
def environment() -> jinja2.Environment:
    """The report's templates, autoescaped; JSON compact and never NaN; the `fmt` filter is a cell's text."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("picollm", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "allow_nan": False}
    env.filters["fmt"] = _fmt
    return env


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


def points(df: pd.DataFrame, x: str, y: str, limit: int) -> list[list[float]]:
    """[[x, y], ...] of the rows where both are finite, at most `limit` of them (evenly spaced, last kept)."""
    if x not in df.columns or y not in df.columns:
        return []
    xs, ys = (pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) for c in (x, y))
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    keep = _spaced(len(xs), limit)
    return [[json_value(a), json_value(b, 5)] for a, b in zip(xs[keep].tolist(), ys[keep].tolist())]


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


def find_run_dir(value: Any, analysis_dir: Path) -> Path | None:
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
        series.append({"name": "validation loss", "points": points(metrics, "step", "val_loss", MAX_PAGE_POINTS)})
    if train_log is not None:
        series.append({"name": "training loss (train_log.csv)",
                       "points": points(train_log, "step", "train_loss", MAX_PAGE_POINTS)})
    elif metrics is not None:
        series.append({"name": "training loss (mean since the previous evaluation)",
                       "points": points(metrics[metrics["step"] > 0], "step", "avg_loss", MAX_PAGE_POINTS)})
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
            summary = read_json(out / "summary.json", fix="analyse the run again (picollm analyze-all) to rewrite it")
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
    return environment().get_template("run.html").render(
        run=run, root="../" * len(Path(run).parts),  # a "/" in a run's name made a subdirectory
        run_dir=str(run_dir or ""), playground=playground_href(playground, run), facts=_facts(row),
        analysed=any(p.exists() for p in (out / "summary.json", gens, curve)),
        series=chart_series(metrics, train_log), why_no_metrics=why_no_metrics, evals=evals, n_evals=n_evals,
        train_log=train_log is not None, curve_png=curve.name if curve.exists() else "",
        other_pngs=sorted(p.name for p in out.glob("*.png") if p != curve),
        samples=[sample_view(g) for g in read_generations(gens)] if gens.exists() else [],
        test=_test_table(row, summary), config=_config_tables(row, summary),
        influence=influence, influence_error=influence_error, files=files, checkpoint_files=checkpoint_files)

