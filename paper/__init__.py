"""paper (docs/architecture.md): tables and figures generated from run records, never by hand.

:func:`make_report` reads every record under a results directory and writes, for each kind
of table (``attack_defense``, ``utility_vs_epsilon``, ``fault_survival``,
``worst_case``, ``backdoor``; see
:mod:`paper.tables`), ``<kind>.tex`` (booktabs; a comment when there is nothing to show, so
``\\input`` never fails), ``<kind>.md`` and ``<kind>.csv``, plus the figures of
:mod:`paper.figures` under ``figures/``. ``paper/main.tex`` inputs the ``.tex`` files from
``paper/generated/`` (``fedkit tables RESULTS_DIR --out paper/generated``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import attrs

from paper.records import Run, load_runs
from paper.table import Table, to_csv, to_latex, to_markdown
from paper.tables import KINDS, Order

ORDER_FILE = "order.json"


@attrs.frozen
class Report:
    """What :func:`make_report` read and wrote."""

    runs: tuple[Run, ...]
    tables: dict[str, list[Table]]
    files: tuple[Path, ...]

    def main_table(self) -> Table | None:
        """The first attack × defense table (the fault-free one when there is one)."""
        tables = self.tables.get("attack_defense") or []
        clean = [t for t in tables if dict(t.group).get("Faults") == "none"]
        return (clean or tables or [None])[0]


def read_order(results_dir: str | Path) -> dict[str, list[str]]:
    """Preferred row/column orders saved next to the records (``order.json``), if any."""
    path = Path(results_dir) / ORDER_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: [str(v) for v in vs] for k, vs in data.items()}


def write_tables(kind: str, tables: Sequence[Table], out_dir: Path) -> list[Path]:
    """``<kind>.tex``, ``<kind>.md`` and ``<kind>.csv`` for one kind of table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if tables:
        tex = "\n".join(to_latex(t) for t in tables)
        md = "\n".join(to_markdown(t) for t in tables)
    else:
        tex = f"% fedkit tables: no records for the {kind} table.\n"
        md = f"_No records for the {kind} table._\n"
    files = {"tex": tex, "md": md, "csv": to_csv(tables) if tables else ""}
    paths = []
    for ext, text in files.items():
        path = out_dir / f"{kind}.{ext}"
        path.write_text(text)
        paths.append(path)
    return paths


def make_report(
    results_dir: str | Path,
    out_dir: str | Path,
    *,
    figures: bool = True,
    order: Order | None = None,
) -> Report:
    """Tables (and figures) for every record under ``results_dir``, written to ``out_dir``.
    ``order``: preferred orders of defenses, attacks and fault settings (default: the
    results directory's ``order.json``)."""
    runs = load_runs(results_dir)
    if not runs:
        raise FileNotFoundError(f"no fedkit run records (*.json) under {results_dir}")
    order = read_order(results_dir) if order is None else order
    out = Path(out_dir)
    tables = {kind: build(runs, order) for kind, build in KINDS.items()}
    files: list[Path] = []
    for kind, ts in tables.items():
        files += write_tables(kind, ts, out)
    if figures:
        from paper.figures import all_figures

        files += all_figures(runs, out / "figures", order)
    return Report(runs=tuple(runs), tables=tables, files=tuple(files))


__all__ = ["Report", "Run", "Table", "load_runs", "make_report", "read_order", "write_tables"]
