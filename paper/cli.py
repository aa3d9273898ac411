"""``fedkit tables RESULTS_DIR [--out DIR] [--no-figures]`` and the console view of a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from paper.table import Table, to_markdown


def print_table(table: Table, console=None) -> None:
    """``table`` on the terminal (rich, best cells in bold); as Markdown when the output is
    not a terminal (a log keeps the bold marks and is not wrapped at 80 columns)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    if not console.is_terminal:
        print(to_markdown(table), end="", flush=True)
        return
    best = table.best()
    console.print(table.caption)
    view = RichTable(show_lines=False)
    for c in table.columns:
        view.add_column(c.title, justify="left" if c.kind == "text" else "right")
    for i, row in enumerate(table.rows):
        cells = []
        for j, cell in enumerate(row):
            if table.columns[j].kind == "text":
                cells.append(str(cell))
                continue
            shown = table.number(i, j)
            text = (
                "–"
                if shown is None
                else shown[0]
                if shown[1] is None
                else f"{shown[0]} ± {shown[1]}"
            )
            cells.append(f"[bold]{text}[/bold]" if (i, j) in best else text)
        view.add_row(*cells)
    console.print(view)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fedkit tables",
        description="LaTeX (booktabs), Markdown and CSV tables and PDF/PNG figures from a "
        "directory of fedkit run records.",
    )
    parser.add_argument("results_dir", type=Path, help="directory searched for *.json run records")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: RESULTS_DIR/tables)"
    )
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    from paper import make_report

    out = args.out or args.results_dir / "tables"
    report = make_report(args.results_dir, out, figures=not args.no_figures)
    main_table = report.main_table()
    if main_table is not None:
        print_table(main_table)
    print(f"{len(report.runs)} records -> {len(report.files)} files in {out}")
    return 0
