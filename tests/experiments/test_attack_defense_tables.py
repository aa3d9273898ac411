"""The worst-case and backdoor tables (paper.tables) on hand-made runs with known content."""

from __future__ import annotations

from paper import make_report
from paper.records import to_run
from paper.table import to_markdown
from paper.tables import KINDS, attack_defense, backdoor, worst_case


def rec(task, defense, attack, seed, accuracy, backdoor_success=None):
    final = {"round": 3, "test_accuracy": accuracy}
    if backdoor_success is not None:
        final["backdoor_success"] = backdoor_success
    return {
        "format": "fedkit.run/1",
        "run": {"rounds": 3, "seed": seed},
        "metrics": [],
        "final": final,
        "counters": {"expected": 30},
        "labels": {
            "task": task,
            "defense": defense,
            "attack": attack,
            "chaos": "none",
            "privacy": "none",
            "seed": seed,
        },
        "privacy": {"mechanism": "none", "epsilon": None},
    }


RECORDS = [
    rec("b-iid", "krum", "none", 0, 0.90),
    rec("b-iid", "krum", "none", 1, 0.92),
    rec("b-iid", "krum", "alie", 0, 0.40),
    rec("b-iid", "krum", "alie", 1, 0.50),
    rec("b-iid", "krum", "ipm", 0, 0.80),
    rec("b-iid", "krum", "backdoor", 0, 0.85, 0.25),
    rec("b-iid", "krum", "backdoor", 1, 0.87, 0.35),
    rec("b-iid", "median", "none", 0, 0.88),
    rec("b-iid", "median", "alie", 0, 0.70),
    rec("b-iid", "median", "ipm", 0, float("nan")),  # diverged: counts as the worst
    rec("b-iid", "median", "backdoor", 0, 0.86, 0.05),
    rec("a-dir", "krum", "none", 0, 0.70),
    rec("a-dir", "krum", "alie", 0, 0.20),
]
RUNS = [to_run(r) for r in RECORDS]
ORDER = {"task": ["b-iid", "a-dir"], "attack": ["none", "alie", "ipm", "backdoor"]}

WORST_MD = """\
**Worst case per defense on b-iid with faults: none: final test accuracy (%) without attack and under the attack with the lowest mean accuracy (– when it diverged), mean ± std over seeds; best per column in bold.**

| Defense | No attack (%) | Worst case (%) | Worst attack |
|:---|---:|---:|:---|
| krum | **91.0 ± 1.4** | **45.0 ± 7.1** | alie |
| median | 88.0 | – | ipm |

**Worst case per defense on a-dir with faults: none: final test accuracy (%) without attack and under the attack with the lowest mean accuracy (– when it diverged), mean ± std over seeds; best per column in bold.**

| Defense | No attack (%) | Worst case (%) | Worst attack |
|:---|---:|---:|:---|
| krum | **70.0** | **20.0** | alie |
"""

BACKDOOR_MD = """\
**Backdoor attacks on b-iid with faults: none: per attack, final test accuracy (%) on clean test images and attack success rate (ASR, %: triggered test images of other classes classified as the target), mean ± std over seeds; best per column in bold.**

| Defense | backdoor clean (%) | backdoor ASR (%) |
|:---|---:|---:|
| krum | **86.0 ± 1.4** | 30.0 ± 7.1 |
| median | **86.0** | **5.0** |
"""


def test_runs_carry_the_backdoor_success_rate():
    assert [r.backdoor for r in RUNS if r.attack == "backdoor"] == [0.25, 0.35, 0.05]
    assert all(r.backdoor is None for r in RUNS if r.attack != "backdoor")


def test_worst_case_table_picks_the_most_damaging_attack_per_defense():
    tables = worst_case(RUNS, ORDER)
    assert [t.name for t in tables] == ["worst_case_b-iid_none", "worst_case_a-dir_none"]
    assert "\n".join(to_markdown(t) for t in tables) == WORST_MD


def test_backdoor_table_shows_clean_accuracy_and_success():
    (table,) = backdoor(RUNS, ORDER)
    assert to_markdown(table) == BACKDOOR_MD


def test_tables_without_attacks_or_backdoors_are_empty():
    clean = [r for r in RUNS if r.attack == "none"]
    assert worst_case(clean) == [] and backdoor(clean) == []


def test_attack_defense_blocks_follow_the_task_order():
    names = [t.name for t in attack_defense(RUNS, ORDER)]
    assert names == ["attack_defense_b-iid_none", "attack_defense_a-dir_none"]
    names = [t.name for t in attack_defense(RUNS, {})]
    assert names == ["attack_defense_a-dir_none", "attack_defense_b-iid_none"]


def test_report_writes_the_new_kinds(tmp_path):
    import json

    for i, r in enumerate(RECORDS):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "record.json").write_text(json.dumps(r))
    report = make_report(tmp_path, tmp_path / "tables", figures=False, order=ORDER)
    assert {"worst_case", "backdoor"} <= set(KINDS) <= set(report.tables)
    assert (tmp_path / "tables" / "worst_case.md").read_text() == WORST_MD
    assert (tmp_path / "tables" / "backdoor.md").read_text() == BACKDOOR_MD
