"""A results table and its three renderings: LaTeX (booktabs), Markdown and CSV.

A :class:`Table` has text columns (labels) and statistic columns (mean ± std over runs);
a statistic column with ``better`` set marks its best cells, compared at the displayed
precision so that cells that read the same are all bold. Standard deviations are sample
standard deviations (``n − 1``); a cell of one run shows its mean alone.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

MISSING_MD = "–"
MISSING_TEX = "--"


@attrs.frozen
class Stat:
    """Mean and sample standard deviation of ``n`` values (std ``None`` when ``n < 2``)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not xs:
            return cls(None, None, 0)
        mean = math.fsum(xs) / len(xs)
        if len(xs) < 2:
            return cls(mean, None, len(xs))
        var = math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
        return cls(mean, math.sqrt(var), len(xs))


@attrs.frozen
class Column:
    """A column: ``kind`` text or stat; stats are shown as ``scale · value`` with ``digits``
    decimals; ``better`` (``"max"``/``"min"``) marks the best cells; ``tex`` is the LaTeX
    header (default: the escaped title)."""

    title: str
    kind: Literal["text", "stat"] = "stat"
    better: Literal["max", "min"] | None = None
    digits: int = 1
    scale: float = 1.0
    tex: str | None = None


Cell = str | Stat


@attrs.frozen
class Table:
    """``rows`` hold one cell per column; ``group`` names what the whole table is about
    (e.g. ``(("Task", "digits"), ("Faults", "none"))``: prepended as columns in CSV)."""

    name: str
    caption: str
    columns: tuple[Column, ...] = attrs.field(converter=tuple)
    rows: tuple[tuple[Cell, ...], ...] = attrs.field(converter=lambda rs: tuple(map(tuple, rs)))
    group: tuple[tuple[str, str], ...] = ()

    def __attrs_post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.name}: row {i} has {len(row)} cells for {len(self.columns)} columns"
                )

    def number(self, i: int, j: int) -> tuple[str, str | None] | None:
        """Cell ``(i, j)`` as displayed strings ``(mean, std)``, or ``None`` if missing."""
        cell, col = self.rows[i][j], self.columns[j]
        if not isinstance(cell, Stat) or cell.mean is None:
            return None
        std = None if cell.std is None else fmt(cell.std * col.scale, col.digits)
        return fmt(cell.mean * col.scale, col.digits), std

    def best(self) -> set[tuple[int, int]]:
        """Cells holding their column's best displayed mean."""
        out: set[tuple[int, int]] = set()
        for j, col in enumerate(self.columns):
            if col.kind != "stat" or col.better is None:
                continue
            shown = {i: float(s[0]) for i in range(len(self.rows)) if (s := self.number(i, j))}
            if not shown:
                continue
            target = max(shown.values()) if col.better == "max" else min(shown.values())
            out |= {(i, j) for i, v in shown.items() if v == target}
        return out


def fmt(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, never ``-0.0``."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


# --- LaTeX -----------------------------------------------------------------------------

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "ε": r"$\varepsilon$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "σ": r"$\sigma$",
    "δ": r"$\delta$",
    "×": r"$\times$",
    "†": r"\textsuperscript{\dag}",
    "≤": r"$\leq$",
    "→": r"$\to$",
    "–": "--",
}


def tex_escape(text: str) -> str:
    """``text`` safe in LaTeX text mode (specials escaped; ε ± Δ σ δ × ≤ → as math)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _tex_cell(table: Table, i: int, j: int, bold: bool) -> str:
    cell = table.rows[i][j]
    if not isinstance(cell, Stat):
        return tex_escape(cell)
    shown = table.number(i, j)
    if shown is None:
        return MISSING_TEX
    body = shown[0] if shown[1] is None else f"{shown[0]} \\pm {shown[1]}"
    return f"$\\mathbf{{{body}}}$" if bold else f"${body}$"


def to_latex(table: Table, label: str | None = None) -> str:
    """A ``table`` float with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
    best = table.best()
    spec = "".join("l" if c.kind == "text" else "r" for c in table.columns)
    header = " & ".join(c.tex or tex_escape(c.title) for c in table.columns)
    lines = [
        r"\begin{table}[t]",
        r"  \centering",
        r"  \small",
        f"  \\caption{{{tex_escape(table.caption)}}}",
        f"  \\label{{tab:{label or table.name.replace('_', '-')}}}",
        f"  \\begin{{tabular}}{{{spec}}}",
        r"    \toprule",
        f"    {header} \\\\",
        r"    \midrule",
    ]
    for i, row in enumerate(table.rows):
        cells = [_tex_cell(table, i, j, (i, j) in best) for j in range(len(row))]
        lines.append(f"    {' & '.join(cells)} \\\\")
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --- Markdown --------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _md_cell(table: Table, i: int, j: int, bold: bool) -> str:
    cell = table.rows[i][j]
    if not isinstance(cell, Stat):
        return _md_escape(cell)
    shown = table.number(i, j)
    if shown is None:
        return MISSING_MD
    body = shown[0] if shown[1] is None else f"{shown[0]} ± {shown[1]}"
    return f"**{body}**" if bold else body


def to_markdown(table: Table) -> str:
    """A caption line and a pipe table (numbers right-aligned)."""
    best = table.best()
    lines = [
        f"**{_md_escape(table.caption)}**",
        "",
        "| " + " | ".join(_md_escape(c.title) for c in table.columns) + " |",
        "|" + "|".join(":---" if c.kind == "text" else "---:" for c in table.columns) + "|",
    ]
    for i, row in enumerate(table.rows):
        lines.append(
            "| " + " | ".join(_md_cell(table, i, j, (i, j) in best) for j in range(len(row))) + " |"
        )
    return "\n".join(lines) + "\n"


# --- CSV -------------------------------------------------------------------------------


def csv_header(tables: Sequence[Table]) -> list[str]:
    """Group names, then each text column, then ``<title>`` and ``<title> std`` per stat
    column (union over ``tables``, in first-seen order)."""
    names: list[str] = []
    for t in tables:
        for name, _ in t.group:
            if name not in names:
                names.append(name)
    for t in tables:
        for c in t.columns:
            for name in (c.title,) if c.kind == "text" else (c.title, f"{c.title} std"):
                if name not in names:
                    names.append(name)
    return names


def to_csv(tables: Sequence[Table]) -> str:
    """Several tables as one CSV (numbers at the displayed precision; missing: empty)."""
    header = csv_header(tables)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for t in tables:
        for i, row in enumerate(t.rows):
            values = dict(t.group)
            for j, (cell, col) in enumerate(zip(row, t.columns, strict=True)):
                if col.kind == "text":
                    values[col.title] = str(cell)
                    continue
                shown = t.number(i, j)
                values[col.title] = "" if shown is None else shown[0]
                values[f"{col.title} std"] = "" if shown is None or shown[1] is None else shown[1]
            writer.writerow([values.get(name, "") for name in header])
    return buf.getvalue()
