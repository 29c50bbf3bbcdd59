"""analysis_runs/index.html: one static page over every run, opened straight from disk.

No server, no CDN: relative links, inline CSS and JS. It holds a sortable table of all runs, every summary
plot, and per run its curves, annotated samples (hover a token: log-prob, top-5 alternatives, nearest
embedding neighbours) and influence_top.csv when present. Every piece of text is html-escaped.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from picollm.log import get_logger
from picollm.runs import atomic_write_text
from picollm.table import TABLE_NAME, read_summary_table

log = get_logger()

#: (column, header) of the runs table, in order; missing columns are left out
TABLE_COLUMNS = [("run", "run"), ("model", "family"), ("corpus", "corpus"), ("tokenizer", "tokenizer"),
                 ("embed", "embed"), ("hidden", "hidden"), ("layers", "layers"), ("heads", "heads"), ("k", "k"),
                 ("activation", "activation"), ("learning_rate", "lr"), ("params", "params"),
                 ("val_loss", "val loss"), ("val_ppl", "val ppl"), ("test_ppl", "test ppl"),
                 ("token_accuracy", "val acc"), ("test_acc", "test acc"), ("train_seconds", "train s"),
                 ("steps", "steps"), ("status", "status")]
MAX_SAMPLES = 6  # generations shown per run; the full set is in generations.csv
MAX_INFLUENCE_ROWS = 20

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
td.text, th.text { text-align: left; }
td.wrap { white-space: pre-wrap; max-width: 36em; font-family: ui-monospace, monospace; font-size: 12px; }
table.sortable th { cursor: pointer; background: #f3f3f3; user-select: none; position: sticky; top: 0; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
.scroll { overflow-x: auto; }
figure { display: inline-block; margin: .5em; vertical-align: top; }
figure img { max-width: 640px; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
section.run { border-top: 1px solid #ccc; margin-top: 1.5em; }
.sample { font-family: ui-monospace, monospace; white-space: pre-wrap; background: #fcfcfc;
          border: 1px solid #eee; padding: .5em; margin: .3em 0 .8em; }
.prompt { font-weight: bold; color: #333; }
.tok { position: relative; border-radius: 2px; cursor: help; }
.tok:hover { outline: 1px solid #333; }
.tok:hover::after { content: attr(data-tip); position: absolute; left: 0; top: 1.5em; z-index: 10;
                    background: #222; color: #fff; padding: 4px 6px; border-radius: 3px; font-size: 12px;
                    white-space: pre; pointer-events: none; }
.meta { color: #666; font-size: 12px; }
pre.summary { font-size: 12px; background: #f8f8f8; padding: .6em; overflow-x: auto; }
"""

JS = """
// Click a header to sort by that column; click again to reverse. Numbers compare as numbers (data-v holds
// the raw value), text compares numeric-aware ("run2" < "run10"); empty cells always sort last.
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (th, col) {
    th.addEventListener("click", function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headers, function (h) { h.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var xe = x === "", ye = y === "";
        if (xe || ye) { return xe - ye; }
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _py(v: Any) -> Any:
    """numpy scalar -> the Python value (np.int64 is not an int)."""
    return v.item() if isinstance(v, np.generic) else v


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _fmt(v: Any, column: str = "") -> str:
    """A cell's display text: thousands separators for counts, 4 significant digits otherwise."""
    if _missing(v):
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if column == "learning_rate":
        return f"{v:.1e}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}"


def _href(path: Path, root: Path) -> str:
    """Relative, URL-quoted link from index.html to path (works from file://)."""
    return quote(path.relative_to(root).as_posix())


def runs_table(df: pd.DataFrame) -> str:
    """The sortable table of every run, linking each run to its section."""
    cols = [(c, h) for c, h in TABLE_COLUMNS if c in df.columns]
    head = []
    for c, h in cols:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        head.append(f'<th data-type="{"num" if numeric else "text"}" class="{"num" if numeric else "text"}" '
                    f'aria-sort="none" title="sort by {esc(h)}">{esc(h)}</th>')
    body = []
    for _, row in df.iterrows():
        cells = []
        for c, _ in cols:
            v = _py(row[c])
            raw = "" if _missing(v) else (repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
            text = esc(_fmt(v, c))
            if c == "run":
                text = f'<a href="#{esc(_anchor(row["run"]))}">{text}</a>'
            cls = "text" if not raw or not isinstance(v, (int, float)) or isinstance(v, bool) else "num"
            cells.append(f'<td class="{cls}" data-v="{esc(raw)}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table id="runs" class="sortable"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _anchor(run: Any) -> str:
    return "run-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(run))


def plain_table(df: pd.DataFrame, table_id: str = "") -> str:
    """A small escaped HTML table (sortable too)."""
    head = "".join(f'<th data-type="{"num" if pd.api.types.is_numeric_dtype(df[c]) else "text"}" '
                   f'aria-sort="none">{esc(c)}</th>' for c in df.columns)
    rows = []
    for r in df.itertuples(index=False):
        r = [_py(v) for v in r]
        rows.append("<tr>" + "".join(f'<td class="{"num" if isinstance(v, (int, float)) else "text wrap"}" '
                                     f'data-v="{esc("" if _missing(v) else v)}">{esc(_fmt(v))}</td>' for v in r) + "</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{ident} class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def figure(path: Path, root: Path, caption: str) -> str:
    return (f'<figure><a href="{_href(path, root)}"><img src="{_href(path, root)}" alt="{esc(caption)}"></a>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


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


def sample_html(gen: dict) -> str:
    """One generation: its settings, the prompt, and every generated token with a hover tooltip."""
    params = gen.get("decoding_params", gen.get("params", ""))
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError:
            pass
    if isinstance(params, dict):
        params = ", ".join(f"{k}={v}" for k, v in params.items())
    meta = [f"{gen.get('checkpoint', '')} checkpoint".strip(), f"strategy {gen.get('strategy', '?')}", str(params)]
    for key in ("step", "mean_logprob", "distinct_1", "distinct_2"):
        if not _missing(gen.get(key)):
            meta.append(f"{key} {_fmt(gen[key])}")
    annotation = gen.get("annotation") or []
    text = str(gen.get("text", ""))
    if annotation:
        tokens = [str(a.get("token", "")) for a in annotation]
        # word-level tokens carry no spaces of their own: separate them when that is how the text reads
        sep = " " if "".join(tokens) != text and " ".join(tokens).strip() == text.strip() else ""
        spans = []
        for ann, tok in zip(annotation, tokens):
            lp = ann.get("logprob")
            # shade by surprise: white for confident tokens, red for improbable ones
            alpha = 0.0 if _missing(lp) else min(0.6, max(0.0, -float(lp)) / 10)
            spans.append(f'<span class="tok" style="background: rgba(220,50,47,{alpha:.2f})" '
                         f'data-tip="{esc(token_tip(ann))}">{esc(tok)}</span>')
        body = esc(sep) + esc(sep).join(spans)
    else:
        body = esc(text)
    return (f'<div class="meta">{esc(" | ".join(m for m in meta if m))}</div>'
            f'<div class="sample"><span class="prompt">{esc(gen.get("prompt", ""))}</span>{body}</div>')


def read_generations(path: Path, limit: int = MAX_SAMPLES) -> list[dict]:
    """Up to `limit` rows of generations.jsonl: the first prompt's sample per (checkpoint step, strategy).

    The last checkpoint often is the best one (same step, same samples): it is shown once. Corrupt lines
    are skipped, not fatal.
    """
    rows, seen = [], set()
    with open(path, encoding="utf-8") as f:
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


def run_section(row: pd.Series, analysis_dir: Path) -> str:
    run = str(row["run"])
    run_dir = analysis_dir / run
    parts = [f'<section class="run" id="{esc(_anchor(run))}"><h3>{esc(run)}</h3>']
    facts = [f"{c} {_fmt(row[c], c)}" for c in ("model", "params", "val_loss", "test_ppl", "token_accuracy",
                                                 "status", "status_reason") if c in row and not _missing(row[c])]
    parts.append(f'<p class="meta">{esc(" | ".join(facts))}</p>')
    if not run_dir.is_dir():
        parts.append("<p>not analysed yet (no analysis directory)</p></section>")
        return "".join(parts)
    curve = run_dir / "metrics_curve.png"
    if curve.exists():
        parts.append(figure(curve, analysis_dir, f"{run}: training curves"))
    for png in sorted(p for p in run_dir.glob("*.png") if p != curve):  # e.g. fisher_layers.png from influence
        parts.append(figure(png, analysis_dir, f"{run}: {png.stem.replace('_', ' ')}"))
    links = [f'<a href="{_href(p, analysis_dir)}">{esc(p.name)}</a>' for p in sorted(run_dir.iterdir())
             if p.suffix in (".csv", ".json", ".jsonl")]
    if links:
        parts.append(f'<p class="meta">files: {" ".join(links)}</p>')
    gens = run_dir / "generations.jsonl"
    if gens.exists():
        samples = read_generations(gens)
        parts.append(f"<h4>Samples (first {len(samples)}; hover a token for its log-prob, alternatives and "
                     "embedding neighbours)</h4>")
        parts.extend(sample_html(g) for g in samples)
    influence = run_dir / "influence_top.csv"
    if influence.exists():
        try:
            table = pd.read_csv(influence).head(MAX_INFLUENCE_ROWS)
            parts.append(f"<h4>Most influential training examples</h4>{plain_table(table)}")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            parts.append(f"<p>influence_top.csv unreadable ({esc(e.__class__.__name__)})</p>")
    parts.append("</section>")
    return "".join(parts)


def write_report(analysis_dir: Path | str = "analysis_runs") -> Path:
    """Write <analysis_dir>/index.html from summary_cache.csv, plots/ and the per-run directories."""
    analysis_dir = Path(analysis_dir)
    cache = analysis_dir / TABLE_NAME
    df = read_summary_table(cache)
    if "learning_rate" not in df.columns and "lr" in df.columns:
        df["learning_rate"] = df["lr"]
    if "val_loss" in df.columns:
        df = df.sort_values("val_loss", na_position="last")
    plots = analysis_dir / "plots"
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>picollm report</title>"
           f"<style>{CSS}</style></head><body>",
           "<h1>picollm: all runs</h1>",
           f'<p class="meta">{len(df)} run(s), generated {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} from '
           f"{esc(cache.name)}. Click a column header to sort.</p>",
           "<h2>Runs</h2>", runs_table(df) if len(df) else "<p>no runs in summary_cache.csv yet</p>"]
    if plots.is_dir():
        out.append("<h2>Summary plots</h2>")
        out.extend(figure(p, analysis_dir, p.stem.replace("_", " ")) for p in sorted(plots.glob("*.png")))
        files = sorted(p for p in plots.iterdir() if p.suffix in (".csv", ".md", ".txt"))
        if files:
            out.append('<p class="meta">tables: ' + " ".join(f'<a href="{_href(p, analysis_dir)}">{esc(p.name)}</a>'
                                                            for p in files) + "</p>")
        skipped = plots / "skipped.txt"
        if skipped.exists() and skipped.read_text().strip():
            items = "".join(f"<li>{esc(line)}</li>" for line in skipped.read_text().splitlines() if line.strip())
            out.append(f"<h3>Plots skipped</h3><ul>{items}</ul>")
        regression = plots / "regression_summary.txt"
        if regression.exists():
            out.append("<details><summary>OLS regression summaries</summary>"
                       f'<pre class="summary">{esc(regression.read_text())}</pre></details>')
    out.append("<h2>Runs in detail</h2>")
    out.extend(run_section(row, analysis_dir) for _, row in df.iterrows())
    out.append(f"<script>{JS}</script></body></html>\n")
    path = analysis_dir / "index.html"
    atomic_write_text(path, "\n".join(out))
    log.info(f"wrote {path} ({len(df)} runs)")
    return path
