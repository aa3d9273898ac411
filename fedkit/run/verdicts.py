"""One round's verdicts: what became of every reply and of every sampled client's missing one.

Three sources, in this order: the transport's own (a reply refused before validation, a
client it knows was lost and why: :attr:`Exchange.verdicts`), the strategy's
(:attr:`RoundInfo.verdicts`: validation, chain filters, quorum) with the node each reply came
from, and, for a sampled client none of them mentions, ``lost``: ``straggler`` when the plan
gave it no work, else the one reason left in the transport's ``lost`` counts, else
``unattributed`` (the transport lost it without saying which reason was whose).
"""

from __future__ import annotations

from collections import Counter

import attrs

from fedkit.replies import Verdict
from fedkit.run.plan import RoundPlan
from fedkit.run.transport import Exchange
from fedkit.strategy import RoundInfo


def round_verdicts(plan: RoundPlan, exchange: Exchange, info: RoundInfo) -> tuple[Verdict, ...]:
    """Every verdict of round ``plan.round`` (module doc); pure."""
    from_strategy = [
        v if v.node is not None else attrs.evolve(v, node=exchange.nodes.get(v.client))
        for v in info.verdicts
    ]
    known = [*exchange.verdicts, *from_strategy]
    covered = {v.client for v in known}
    left = Counter(exchange.lost)
    left.subtract(Counter(v.reason for v in exchange.verdicts if v.status == "lost"))
    missing: list[tuple[int, str | None]] = []
    for c, w in zip(plan.clients.tolist(), plan.work.tolist(), strict=True):
        if c in covered:
            continue
        if w <= 0:
            left["straggler"] -= 1
        missing.append((c, "straggler" if w <= 0 else None))
    reasons = [r for r, n in left.items() if n > 0]
    guess = reasons[0] if len(reasons) == 1 else "unattributed"
    return (*known, *(Verdict(c, "lost", reason or guess) for c, reason in missing))


def tally(verdicts: tuple[Verdict, ...]) -> dict[str, dict[str, int]]:
    """``{status: {reason: n}}`` (reason ``"-"`` for accepted)."""
    out: dict[str, Counter[str]] = {}
    for v in verdicts:
        out.setdefault(v.status, Counter())[v.reason or "-"] += 1
    return {status: dict(c) for status, c in out.items()}


def detection(verdicts: tuple[Verdict, ...], controlled: set[int]) -> dict[str, int]:
    """``{tp, fp, tn, fn}`` of one round's server decisions: a positive is a reply from a
    client the adversary controls that reached the server; it is detected when the server
    rejected it (validation or a chain component: a filter that zeroed its weight, a
    reducer that left it out, e.g. Krum's unselected rows or FLTrust's trust 0). Lost
    replies and rounds skipped for a missed quorum decide nothing and are not counted."""
    out = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for v in verdicts:
        if v.status not in ("accepted", "rejected") or v.reason == "quorum_missed":
            continue
        bad, caught = v.client in controlled, v.status == "rejected"
        out[("t" if bad == caught else "f") + ("p" if caught else "n")] += 1
    return out
