"""Tables from a small hand-made set of records have exactly the expected content."""

from __future__ import annotations

import json
import re

import pytest
from paper_records import RECORDS, record, write_records

from paper import make_report
from paper.records import attack_of, chaos_of, defense_of, load_runs, snake, to_run
from paper.table import Column, Stat, Table, tex_escape, to_csv, to_latex, to_markdown

ATTACK_DEFENSE_MD = """\
**Final test accuracy (%) on digits with faults: none; defenses (rows) under attacks (columns), mean ± std over seeds; best per attack in bold.**

| Defense | none | alie |
|:---|---:|---:|
| dp_tm (σ=0.5) | 70.0 | – |
| dp_tm (σ=1) | 60.0 | – |
| fedavg | **91.0 ± 1.4** | 55.0 ± 7.1 |
| krum | 82.0 ± 2.8 | **79.0 ± 1.4** |

**Final test accuracy (%) on digits with faults: dropout; defenses (rows) under attacks (columns), mean ± std over seeds; best per attack in bold.**

| Defense | none |
|:---|---:|
| fedavg | **88.0 ± 4.2** |
| krum | 80.0 |
"""

ATTACK_DEFENSE_CSV = """\
Task,Faults,Defense,none,none std,alie,alie std
digits,none,dp_tm (σ=0.5),70.0,,,
digits,none,dp_tm (σ=1),60.0,,,
digits,none,fedavg,91.0,1.4,55.0,7.1
digits,none,krum,82.0,2.8,79.0,1.4
digits,dropout,fedavg,88.0,4.2,,
digits,dropout,krum,80.0,,,
"""

EPSILON_MD = """\
**Utility vs privacy: ε (δ as configured) and final test accuracy (%) per attack, mean ± std over 1 seed; best per attack in bold. ε marked † is not proven: nominal (noise calibrated as for DP-FedAvg on a chain without a proven sensitivity bound) or unknown (a record from before the check).**

| Defense | ε | none |
|:---|---:|---:|
| dp_tm (σ=1) | 2.00† (unknown) | 60.0 |
| dp_tm (σ=0.5) | 8.00† (nominal) | **70.0** |
"""

EPSILON_TEX = r"""\begin{table}[t]
  \centering
  \small
  \caption{Utility vs privacy: $\varepsilon$ ($\delta$ as configured) and final test accuracy (\%) per attack, mean $\pm$ std over 1 seed; best per attack in bold. $\varepsilon$ marked \textsuperscript{\dag} is not proven: nominal (noise calibrated as for DP-FedAvg on a chain without a proven sensitivity bound) or unknown (a record from before the check).}
  \label{tab:utility-vs-epsilon}
  \begin{tabular}{lrr}
    \toprule
    Defense & $\varepsilon$ & none \\
    \midrule
    dp\_tm ($\sigma$=1) & 2.00\textsuperscript{\dag} (unknown) & $60.0$ \\
    dp\_tm ($\sigma$=0.5) & 8.00\textsuperscript{\dag} (nominal) & $\mathbf{70.0}$ \\
    \bottomrule
  \end{tabular}
\end{table}
"""

FAULTS_MD = """\
**Fault survival per fault setting and defense, mean ± std over attacks and seeds: rounds completed, updates lost (%), final test accuracy (%) and its change from the same runs without faults (percentage points); best per column in bold.**

| Faults | Defense | Rounds completed | Updates lost (%) | Accuracy (%) | Δ accuracy (pp) |
|:---|:---|---:|---:|---:|---:|
| dropout | fedavg | 2.5 ± 0.7 | 15.0 ± 7.1 | **88.0 ± 4.2** | -3.0 ± 2.8 |
| dropout | krum | **3.0** | **0.0** | 80.0 | **0.0** |
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = write_records(tmp_path_factory.mktemp("records"))
    return make_report(root, root / "tables", figures=False), root / "tables"


def test_records_are_read_and_non_records_skipped(report):
    rep, _ = report
    assert len(rep.runs) == len(RECORDS)


def test_attack_defense_tables_markdown_and_csv(report):
    _, out = report
    assert (out / "attack_defense.md").read_text() == ATTACK_DEFENSE_MD
    assert (out / "attack_defense.csv").read_text() == ATTACK_DEFENSE_CSV


def test_utility_vs_epsilon_markdown_and_latex(report):
    _, out = report
    assert (out / "utility_vs_epsilon.md").read_text() == EPSILON_MD
    assert (out / "utility_vs_epsilon.tex").read_text() == EPSILON_TEX


def test_sound_epsilon_is_a_number_and_nominal_or_unknown_ones_are_marked():
    from paper.tables import utility_vs_epsilon

    runs = [
        to_run(record("dp_fedavg", "none", "none", 0, 0.8, epsilon=3.0, z=1.0, status="sound")),
        to_run(record("dp_krum", "none", "none", 0, 0.7, epsilon=3.0, z=1.0, status="nominal")),
    ]
    (table,) = utility_vs_epsilon(runs)
    cells = {row[0]: row[1] for row in table.rows}
    assert cells["dp_fedavg"] == Stat(3.0, None, 1)
    assert cells["dp_krum"] == "3.00† (nominal)"
    assert "† is not proven" in table.caption
    (sound_only,) = utility_vs_epsilon(runs[:1])
    assert "†" not in sound_only.caption


def test_fault_survival_markdown(report):
    _, out = report
    assert (out / "fault_survival.md").read_text() == FAULTS_MD


def test_main_table_is_the_fault_free_attack_defense_table(report):
    rep, _ = report
    assert rep.main_table().name == "attack_defense_digits_none"


def test_preferred_order_is_kept(tmp_path):
    root = write_records(tmp_path / "records")
    order = {"defense": ["krum", "fedavg"], "attack": ["alie"], "chaos": ["dropout"]}
    rep = make_report(root, tmp_path / "out", figures=False, order=order)
    first = rep.tables["attack_defense"][0]
    assert dict(first.group)["Faults"] == "dropout"
    table = rep.tables["attack_defense"][1]
    assert [c.title for c in table.columns] == ["Defense", "alie", "none"]
    assert [row[0] for row in table.rows] == ["krum", "fedavg", "dp_tm (σ=0.5)", "dp_tm (σ=1)"]


def test_empty_kinds_write_placeholders(tmp_path):
    root = tmp_path / "records"
    (root / "a").mkdir(parents=True)
    (root / "a" / "record.json").write_text(__import__("json").dumps(RECORDS[0]))
    make_report(root, tmp_path / "out", figures=False)
    assert (tmp_path / "out" / "fault_survival.tex").read_text().startswith("% ")
    assert (tmp_path / "out" / "utility_vs_epsilon.csv").read_text() == ""


def test_no_records_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no fedkit run records"):
        make_report(tmp_path, tmp_path / "out")


def test_labels_are_derived_from_targets_when_missing():
    rec = record("x", "y", "z", 3, 0.5)
    del rec["labels"]
    rec["strategy"] = {
        "server": {
            "components": [
                {"_target_": "fedkit.filters.clip.Clip", "clip_norm": 1.0},
                {"_target_": "fedkit.aggregators.trimmed_mean.TrimmedMean", "f": 2},
            ]
        }
    }
    rec["run"]["adversary"] = {
        "_target_": "attacks.adversary.ModelPoisoning",
        "attack": {"_target_": "attacks.poisoning.alie.ALIE", "z": None},
    }
    rec["run"]["faults"] = {
        "_target_": "chaos.faults.compose.Compose",
        "faults": [
            {"_target_": "chaos.faults.dropout.Dropout"},
            {"_target_": "chaos.faults.corrupt.Corrupt"},
        ],
    }
    run = to_run(rec)
    assert (run.defense, run.attack, run.chaos, run.seed) == (
        "clip+trimmed_mean", "alie", "dropout+corrupt", 3,
    )  # fmt: skip
    assert attack_of({"_target_": "fedkit.protocols.NoAdversary"}) == "none"
    assert chaos_of({"_target_": "fedkit.protocols.NoFaults"}) == "none"
    assert defense_of({}) == "unknown"
    assert [snake(n) for n in ("SignFlip", "ALIE", "MinMax", "NNM", "GeometricMedian")] == [
        "sign_flip", "alie", "min_max", "nnm", "geometric_median",
    ]  # fmt: skip


def test_stat_and_bold_ties_at_displayed_precision():
    assert Stat.of([1.0, None, float("nan"), 3.0]) == Stat(2.0, 2**0.5, 2)
    assert Stat.of([]) == Stat(None, None, 0)
    t = Table(
        name="t",
        caption="c",
        columns=[Column("Name", kind="text"), Column("v", better="min", digits=1)],
        rows=[["a", Stat(0.04, None, 1)], ["b", Stat(-0.04, None, 1)], ["c", Stat(0.2, None, 1)]],
    )
    assert t.best() == {(0, 1), (1, 1)}  # both show 0.0 (never "-0.0")
    assert "| b | **0.0** |" in to_markdown(t)
    assert to_csv([t]).splitlines()[0] == "Name,v,v std"


def test_latex_escapes_specials():
    assert tex_escape("a_b & 50% #1 {x} ~ ^ \\") == (
        r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )


def test_every_latex_table_is_syntactically_sane(report):
    _, out = report
    for kind in ("attack_defense", "utility_vs_epsilon", "fault_survival"):
        tex = (out / f"{kind}.tex").read_text()
        check_latex(tex)


def check_latex(tex: str) -> None:
    """Balanced braces and math, matched environments, booktabs rules, no bare specials."""
    body = re.sub(r"\\[{}%$&#_]", "", tex)  # escaped characters
    depth = 0
    for ch in body:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert body.count("$") % 2 == 0
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") >= 1
    n = tex.count(r"\begin{tabular}")
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == n
    outside_math = re.sub(r"\$[^$]*\$", "", body)
    assert not re.search(r"[_%&#^]", outside_math.replace(" & ", " ")), outside_math
    cols = re.findall(r"\\begin\{tabular\}\{([lrc]+)\}", tex)
    rows = [line for line in tex.splitlines() if line.rstrip().endswith(r"\\")]
    widths = {len(spec) for spec in cols}
    assert all(line.count(" & ") + 1 in widths for line in rows)


def test_runs_load_in_path_order(tmp_path):
    root = write_records(tmp_path)
    runs = load_runs(root)
    assert [r.path for r in runs] == sorted(r.path for r in runs)
    assert runs[10].lost == 3 and runs[10].rounds_completed == 2
    assert runs[12].lost == 0  # filter rejections and duplicates are not lost updates


def test_latex_of_a_hand_built_table_is_sane():
    t = Table(
        name="x_y",
        caption="under_score & 100%",
        columns=[Column("Def_ense", kind="text"), Column("ε", better="max", tex=r"$\varepsilon$")],
        rows=[["a_b", Stat(1.0, 0.5, 2)], ["c", Stat(None, None, 0)]],
    )
    tex = to_latex(t)
    check_latex(tex)
    assert r"a\_b & $\mathbf{1.0 \pm 0.5}$ \\" in tex
    assert r"c & -- \\" in tex


def test_detection_table_reports_tpr_and_fpr_per_defense_and_attack(tmp_path):

    def counted(defense, attack, seed, tp, fp, tn, fn):
        r = record(defense, attack, "none", seed, 0.5)
        det = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
        det["tpr"] = tp / (tp + fn) if tp + fn else None
        det["fpr"] = fp / (fp + tn) if fp + tn else None
        r["counters"]["detection"] = det
        return r

    records = [
        counted("krum", "alie", 0, 6, 3, 21, 0),
        counted("krum", "alie", 1, 3, 3, 21, 3),
        counted("fedavg", "alie", 0, 0, 0, 24, 6),
        record("fedavg", "none", "none", 0, 0.9),  # no attack: not in the table
    ]
    for i, r in enumerate(records):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    rep = make_report(tmp_path, tmp_path / "tables", figures=False)
    (table,) = rep.tables["detection"]
    cells = {row[0]: row[1:] for row in table.rows}
    assert set(cells) == {"fedavg", "krum"}
    tpr, fpr = cells["krum"]
    assert tpr.mean == pytest.approx(0.75) and tpr.n == 2
    assert fpr.mean == pytest.approx(0.125)
    assert cells["fedavg"][0].mean == 0.0
    md = (tmp_path / "tables" / "detection.md").read_text()
    assert "alie TPR" in md and "alie FPR" in md


def test_the_terminal_view_bolds_the_best_cells_and_shows_spread():
    from rich.console import Console

    from paper.cli import print_table

    t = Table(
        name="t",
        caption="accuracy per defense",
        columns=[Column("Defense", kind="text"), Column("acc", better="max", digits=1)],
        rows=[
            ["krum", Stat(90.04, 1.26, 3)],
            ["mean", Stat(40.0, None, 1)],
            ["none", Stat(None, None, 0)],
        ],
    )
    console = Console(force_terminal=True, record=True, width=100, color_system="standard")
    print_table(t, console)
    text = console.export_text(styles=True, clear=False)
    plain = console.export_text()
    assert "accuracy per defense" in plain
    assert "90.0 ± 1.3" in plain and "40.0" in plain and "–" in plain
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│")}
    assert "\x1b[1m90.0 ± 1.3" in rows["krum"], text  # the best cell is bold
    assert "\x1b[1m" not in rows["mean"] + rows["none"], text
