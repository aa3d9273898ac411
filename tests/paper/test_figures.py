"""Figures (PDF and PNG) from the hand-made records."""

from __future__ import annotations

from paper_records import write_records

from paper import make_report


def test_figures_are_written_as_pdf_and_png(tmp_path):
    root = write_records(tmp_path / "records")
    report = make_report(root, tmp_path / "out")
    figures = sorted(p.name for p in report.files if p.parent.name == "figures")
    stems = {
        "accuracy_rounds_digits_none", "accuracy_rounds_digits_dropout",
        "heatmap_digits_none", "heatmap_digits_dropout", "epsilon_accuracy",
    }  # fmt: skip
    assert figures == sorted(f"{s}.{ext}" for s in stems for ext in ("pdf", "png"))
    for path in report.files:
        if path.suffix == ".pdf":
            assert path.read_bytes()[:5] == b"%PDF-"
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_epsilon_figure_without_dp_runs(tmp_path):
    root = write_records(tmp_path / "records")
    for run in root.glob("run0[89]"):  # the two DP runs
        (run / "record.json").unlink()
    report = make_report(root, tmp_path / "out")
    assert not any(p.stem == "epsilon_accuracy" for p in report.files)
    assert (tmp_path / "out" / "utility_vs_epsilon.tex").read_text().startswith("%")
