"""Plain-text tables for the terminal: the one aligner every command's summary uses."""

from __future__ import annotations


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned plain-text table: the header, a rule of dashes, then the rows, columns two spaces apart."""
    cells = [header] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
