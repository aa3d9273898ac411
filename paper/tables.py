"""The paper's three tables, built from flattened runs (:mod:`paper.records`).

(a) :func:`attack_defense` — final test accuracy (%) per defense (rows) and attack (columns),
    one table per task and fault setting; best defense per attack in bold.
(b) :func:`utility_vs_epsilon` — for runs with DP: ε and accuracy per attack, one row per
    defense and noise level, sorted by ε.
(c) :func:`fault_survival` — per fault setting and defense (over attacks and seeds): rounds
    completed, updates lost (%), accuracy (%) and its change from the same run without faults
    (same task, defense, attack, noise and seed), in percentage points.
(d) :func:`worst_case` — one per task and fault setting: each defense's accuracy without
    attack and under its most damaging attack (lowest mean over seeds), and that attack.
(e) :func:`backdoor` — one per task and fault setting, for runs with a backdoor success
    rate: clean accuracy and attack success rate per defense and backdoor attack.
(f) :func:`detection` — one per task and fault setting, for attacked runs: the server's
    true- and false-positive rates per defense and attack (``counters.detection``).

Rows and columns follow ``order`` (a dict of preferred orders for ``defense``, ``attack``,
``chaos``, ``task``), then ``none`` first, then alphabetical. A defense run at several noise levels
gets one row per level, labelled with its noise multiplier σ.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from paper.records import Run
from paper.table import Column, Stat, Table

Order = Mapping[str, Sequence[str]]

PERCENT = 100.0


def ordered(values: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    """Distinct ``values``: those in ``preferred`` in its order, then ``none``, then sorted."""
    seen = set(values)
    head = [v for v in preferred if v in seen]
    rest = sorted(seen - set(head), key=lambda v: (v != "none", v))
    return head + rest


def group_by(runs: Iterable[Run], key: Callable[[Run], Hashable]) -> dict[Any, list[Run]]:
    out: dict[Any, list[Run]] = defaultdict(list)
    for r in runs:
        out[key(r)].append(r)
    return dict(out)


def defense_rows(runs: Sequence[Run], order: Order) -> list[tuple[str, float | None, str]]:
    """``(defense, noise multiplier, row label)`` in display order."""
    levels = group_by(runs, lambda r: r.defense)
    rows = []
    for d in ordered(levels, order.get("defense", ())):
        zs = sorted({r.noise_multiplier for r in levels[d]}, key=lambda z: (z is None, z or 0.0))
        for z in zs:
            rows.append((d, z, d if len(zs) == 1 or z is None else f"{d} (σ={z:g})"))
    return rows


def _seeds_phrase(stats: Iterable[Stat]) -> str:
    counts = {s.n for s in stats if s.n}
    if len(counts) == 1:
        n = counts.pop()
        return f"over {n} seed{'s' if n != 1 else ''}"
    return "over seeds"


def _fixed(runs: Sequence[Run], field: str) -> list[str]:
    return sorted({getattr(r, field) for r in runs})


def attack_defense(runs: Sequence[Run], order: Order | None = None) -> list[Table]:
    """Table (a), one per (task, fault setting)."""
    order = order or {}
    tables = []
    by_setting = group_by(runs, lambda r: (r.task, r.chaos))
    tasks = ordered({t for t, _ in by_setting}, order.get("task", ()))
    settings = ordered({c for _, c in by_setting}, order.get("chaos", ()))
    for task in tasks:
        for chaos in settings:
            group = by_setting.get((task, chaos))
            if not group:
                continue
            attacks = ordered({r.attack for r in group}, order.get("attack", ()))
            cells = group_by(group, lambda r: (r.defense, r.noise_multiplier, r.attack))
            rows, stats = [], []
            for d, z, label in defense_rows(group, order):
                row: list[Any] = [label]
                for a in attacks:
                    s = Stat.of(r.accuracy for r in cells.get((d, z, a), []))
                    row.append(s)
                    stats.append(s)
                rows.append(row)
            caption = (
                f"Final test accuracy (%) on {task} with faults: {chaos}; defenses (rows) "
                f"under attacks (columns), mean ± std {_seeds_phrase(stats)}; best per "
                "attack in bold."
            )
            tables.append(
                Table(
                    name=f"attack_defense_{task}_{chaos}",
                    caption=caption,
                    columns=[
                        Column("Defense", kind="text"),
                        *(Column(a, better="max", scale=PERCENT) for a in attacks),
                    ],
                    rows=rows,
                    group=(("Task", task), ("Faults", chaos)),
                )
            )
    return tables


def epsilon_marked(eps: Stat, statuses: Sequence[str]) -> str:
    """A non-sound ε as text with its mark, so it never reads as a proven ε."""
    value = "–" if eps.mean is None else f"{eps.mean:.2f}"
    return f"{value}† ({', '.join(statuses)})"


def utility_vs_epsilon(runs: Sequence[Run], order: Order | None = None) -> list[Table]:
    """Table (b): one table (empty list when no run has an ε)."""
    order = order or {}
    private = [r for r in runs if r.epsilon is not None]
    if not private:
        return []
    tasks, settings = _fixed(private, "task"), _fixed(private, "chaos")
    attacks = ordered({r.attack for r in private}, order.get("attack", ()))
    groups = group_by(private, lambda r: (r.task, r.chaos, r.defense, r.noise_multiplier))
    cells = group_by(private, lambda r: (r.task, r.chaos, r.defense, r.noise_multiplier, r.attack))
    marked = False
    columns = []
    if len(tasks) > 1:
        columns.append(Column("Task", kind="text"))
    if len(settings) > 1:
        columns.append(Column("Faults", kind="text"))
    columns += [
        Column("Defense", kind="text"),
        Column("ε", digits=2, tex=r"$\varepsilon$"),
        *(Column(a, better="max", scale=PERCENT) for a in attacks),
    ]
    keyed = []
    for task in ordered(tasks, order.get("task", ())):
        for chaos in ordered(settings, order.get("chaos", ())):
            for d, z, label in defense_rows(
                [r for r in private if (r.task, r.chaos) == (task, chaos)], order
            ):
                members = groups[(task, chaos, d, z)]
                eps = Stat.of(r.epsilon for r in members)
                row: list[Any] = []
                if len(tasks) > 1:
                    row.append(task)
                if len(settings) > 1:
                    row.append(chaos)
                not_sound = sorted({r.privacy_status for r in members} - {"sound"})
                marked = marked or bool(not_sound)
                row += [label, eps if not not_sound else epsilon_marked(eps, not_sound)]
                row += [
                    Stat.of(r.accuracy for r in cells.get((task, chaos, d, z, a), []))
                    for a in attacks
                ]
                keyed.append(((task, chaos, d, eps.mean), row))
    # within a task and fault setting: by defense (display order kept), then by ε
    position = {k[:3]: i for i, (k, _) in enumerate(keyed)}
    keyed.sort(key=lambda kr: (position[kr[0][:3]], kr[0][3]))
    rows = [row for _, row in keyed]
    accuracy = [c for row in rows for c in row if isinstance(c, Stat)]
    caption = (
        "Utility vs privacy: ε (δ as configured) and final test accuracy (%) per attack, "
        f"mean ± std {_seeds_phrase(accuracy)}; best per attack in bold."
    )
    if marked:
        caption += (
            " ε marked † is not proven: nominal (noise calibrated as for DP-FedAvg on a chain "
            "without a proven sensitivity bound) or unknown (a record from before the check)."
        )
    return [Table(name="utility_vs_epsilon", caption=caption, columns=columns, rows=rows)]


def fault_survival(runs: Sequence[Run], order: Order | None = None) -> list[Table]:
    """Table (c): one table (empty list when every run is fault-free)."""
    order = order or {}
    faulty = [r for r in runs if r.chaos != "none"]
    if not faulty:
        return []
    baseline = {
        (r.task, r.defense, r.noise_multiplier, r.attack, r.seed): r.accuracy
        for r in runs
        if r.chaos == "none"
    }

    def delta(r: Run) -> float | None:
        base = baseline.get((r.task, r.defense, r.noise_multiplier, r.attack, r.seed))
        if base is None or r.accuracy is None:
            return None
        return r.accuracy - base

    tasks = _fixed(faulty, "task")
    groups = group_by(faulty, lambda r: (r.task, r.chaos, r.defense, r.noise_multiplier))
    columns = [Column("Task", kind="text")] if len(tasks) > 1 else []
    columns += [
        Column("Faults", kind="text"),
        Column("Defense", kind="text"),
        Column("Rounds completed", better="max"),
        Column("Updates lost (%)", better="min", scale=PERCENT),
        Column("Accuracy (%)", better="max", scale=PERCENT),
        Column("Δ accuracy (pp)", better="max", scale=PERCENT, tex=r"$\Delta$ accuracy (pp)"),
    ]
    rows = []
    for task in ordered(tasks, order.get("task", ())):
        of_task = [r for r in faulty if r.task == task]
        for chaos in ordered({r.chaos for r in of_task}, order.get("chaos", ())):
            for d, z, label in defense_rows([r for r in of_task if r.chaos == chaos], order):
                members = groups[(task, chaos, d, z)]
                row: list[Any] = [task] if len(tasks) > 1 else []
                row += [
                    chaos,
                    label,
                    Stat.of(r.rounds_completed for r in members),
                    Stat.of(r.lost_fraction for r in members),
                    Stat.of(r.accuracy for r in members),
                    Stat.of(delta(r) for r in members),
                ]
                rows.append(row)
    caption = (
        "Fault survival per fault setting and defense, mean ± std over attacks and seeds: "
        "rounds completed, updates lost (%), final test accuracy (%) and its change from the "
        "same runs without faults (percentage points); best per column in bold."
    )
    return [Table(name="fault_survival", caption=caption, columns=columns, rows=rows)]


def _blocks(runs: Sequence[Run], order: Order) -> list[tuple[str, str, list[Run]]]:
    """``(task, fault setting, runs)`` in display order, non-empty ones only."""
    by_setting = group_by(runs, lambda r: (r.task, r.chaos))
    tasks = ordered({t for t, _ in by_setting}, order.get("task", ()))
    settings = ordered({c for _, c in by_setting}, order.get("chaos", ()))
    return [(t, c, by_setting[(t, c)]) for t in tasks for c in settings if (t, c) in by_setting]


def worst_case(runs: Sequence[Run], order: Order | None = None) -> list[Table]:
    """Table (d), one per (task, fault setting) with attacked runs."""
    order = order or {}
    tables = []
    for task, chaos, group in _blocks(runs, order):
        attacks = ordered({r.attack for r in group} - {"none"}, order.get("attack", ()))
        if not attacks:
            continue
        cells = group_by(group, lambda r: (r.defense, r.noise_multiplier, r.attack))
        rows = []
        for d, z, label in defense_rows(group, order):
            stats = {a: Stat.of(r.accuracy for r in cells.get((d, z, a), [])) for a in attacks}
            # an attack without a finite accuracy (diverged on every seed) counts as the worst
            worst = min(attacks, key=lambda a: -1.0 if stats[a].mean is None else stats[a].mean)
            clean = Stat.of(r.accuracy for r in cells.get((d, z, "none"), []))
            rows.append([label, clean, stats[worst], worst])
        caption = (
            f"Worst case per defense on {task} with faults: {chaos}: final test accuracy (%) "
            "without attack and under the attack with the lowest mean accuracy (– when it "
            "diverged), mean ± std over seeds; best per column in bold."
        )
        columns = [
            Column("Defense", kind="text"),
            Column("No attack (%)", better="max", scale=PERCENT),
            Column("Worst case (%)", better="max", scale=PERCENT),
            Column("Worst attack", kind="text"),
        ]
        group_names = (("Task", task), ("Faults", chaos))
        tables.append(Table(f"worst_case_{task}_{chaos}", caption, columns, rows, group_names))
    return tables


@attrs.frozen
class _Pair:
    """Two numbers per (defense, attack) cell: run fields ``fields`` shown under ``headers``
    (``{a}`` is the attack) with their better direction."""

    fields: tuple[str, str]
    headers: tuple[str, str]
    better: tuple[str, str]


def _paired_tables(
    runs: Sequence[Run], order: Order, name: str, pair: _Pair, caption: Callable[..., str]
) -> list[Table]:
    """One table per (task, fault setting): defenses (rows) × attacks, two columns each
    (``pair``); ``caption(task, chaos, seeds_phrase)``."""
    tables = []
    for task, chaos, group in _blocks(runs, order):
        attacks = ordered({r.attack for r in group}, order.get("attack", ()))
        cells = group_by(group, lambda r: (r.defense, r.noise_multiplier, r.attack))
        rows, stats = [], []
        for d, z, label in defense_rows(group, order):
            row: list[Any] = [label]
            for a in attacks:
                members = cells.get((d, z, a), [])
                values = [Stat.of(getattr(r, f) for r in members) for f in pair.fields]
                row += values
                stats += values
            rows.append(row)
        columns = [Column("Defense", kind="text")]
        for a in attacks:
            columns += [
                Column(h.format(a=a), better=b, scale=PERCENT)
                for h, b in zip(pair.headers, pair.better, strict=True)
            ]
        group_names = (("Task", task), ("Faults", chaos))
        tables.append(
            Table(
                f"{name}_{task}_{chaos}",
                caption(task, chaos, _seeds_phrase(stats)),
                columns,
                rows,
                group_names,
            )
        )
    return tables


def backdoor(runs: Sequence[Run], order: Order | None = None) -> list[Table]:
    """Table (e), one per (task, fault setting) with backdoor success rates: per defense
    (rows) and backdoor attack (pairs of columns), the clean accuracy and the attack success
    rate (ASR)."""
    return _paired_tables(
        [r for r in runs if r.backdoor is not None],
        order or {},
        "backdoor",
        _Pair(("accuracy", "backdoor"), ("{a} clean (%)", "{a} ASR (%)"), ("max", "min")),
        lambda task, chaos, seeds: (
            f"Backdoor attacks on {task} with faults: {chaos}: per attack, final test accuracy "
            "(%) on clean test images and attack success rate (ASR, %: triggered test images "
            f"of other classes classified as the target), mean ± std {seeds}; "
            "best per column in bold."
        ),
    )


def detection(runs: Sequence[Run], order: Order | None = None) -> list[Table]:
    """Table (f), one per (task, fault setting) with attacked runs that count detections:
    per defense (rows) and attack, the true-positive rate (poisoned replies the server
    rejected, %) and the false-positive rate (honest replies rejected, %)."""
    return _paired_tables(
        [r for r in runs if r.attack != "none" and (r.tpr is not None or r.fpr is not None)],
        order or {},
        "detection",
        _Pair(("tpr", "fpr"), ("{a} TPR", "{a} FPR"), ("max", "min")),
        lambda task, chaos, seeds: (
            f"Detection on {task} with faults: {chaos}: per attack, TPR = poisoned replies the "
            "server rejected (or gave zero weight) over poisoned replies that reached it, FPR = "
            f"honest replies rejected over honest replies, in %, mean ± std {seeds}."
        ),
    )


KINDS: dict[str, Callable[[Sequence[Run], Order | None], list[Table]]] = {
    "attack_defense": attack_defense,
    "utility_vs_epsilon": utility_vs_epsilon,
    "fault_survival": fault_survival,
    "worst_case": worst_case,
    "backdoor": backdoor,
    "detection": detection,
}
