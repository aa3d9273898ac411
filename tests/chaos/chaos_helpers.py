"""Helpers for the chaos tests: plans over many rounds, and the counters a plan implies."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs
import torch

from fedkit.protocols import FAULT_KINDS, FaultKind, FaultPlan
from fedkit.simulation.delivery import CORRUPTIONS

KIND = {k: FAULT_KINDS.index(k) for k in FaultKind}

# What validation calls each corruption variant (fedkit.replies).
REJECTED_AS = {
    "nan": "non_finite",
    "inf": "non_finite",
    "truncated": "wrong_shape",
    "wrong_dtype": "wrong_dtype",
    "bytes": "malformed",
    "oversized": "oversized",
}


@attrs.frozen(eq=False)
class Plans:
    """Plans of rounds ``rounds`` stacked: tensors ``[R, m]``, reasons ``[R][m]``."""

    kind: torch.Tensor
    latency: torch.Tensor
    detail: torch.Tensor
    server_crash: list[bool]
    reason: list[tuple[str, ...]]


def plans(model: Any, rounds: range, clients: torch.Tensor, key) -> Plans:
    out = [model.plan(r, clients, key) for r in rounds]
    return Plans(
        kind=torch.stack([p.kind for p in out]),
        latency=torch.stack([p.latency for p in out]),
        detail=torch.stack([p.detail for p in out]),
        server_crash=[p.server_crash for p in out],
        reason=[p.reason for p in out],
    )


def counters(plan: FaultPlan, *, deadline: float | None, quorum: int) -> dict[str, Any]:
    """The per-round counters the engine must report for ``plan`` when every sampled client
    trained (an independent model of delivery + validation, client by client)."""
    lost: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    received = valid = 0
    rows = zip(
        plan.kind.tolist(), plan.latency.tolist(), plan.detail.tolist(), plan.reason, strict=True
    )
    for kind, latency, detail, reason in rows:
        kind = FAULT_KINDS[kind]
        if kind is not FaultKind.NONE:
            faults[reason] += 1
        if kind is FaultKind.DROP:
            lost["dropped"] += 1
            continue
        if deadline is not None and latency > deadline:
            lost["late"] += 1
            continue
        received += 1
        if kind is FaultKind.CORRUPT:
            rejected[REJECTED_AS[CORRUPTIONS[detail % len(CORRUPTIONS)]]] += 1
        elif kind is FaultKind.STALE:
            rejected["stale"] += 1
        else:
            valid += 1
        if kind is FaultKind.DUPLICATE:
            received += 1
            rejected["duplicate"] += 1
    return {
        "expected": len(plan.reason),
        "received": received,
        "valid": valid,
        "accepted": valid if valid >= quorum else 0,
        "rejected": dict(rejected),
        "lost": dict(lost),
        "faults": dict(faults),
        "quorum_missed": valid < quorum,
    }


def runs(down: list[bool]) -> list[tuple[int, int]]:
    """Maximal runs of True as ``(first index, length)``."""
    out: list[tuple[int, int]] = []
    for i, d in enumerate(down):
        if d and (i == 0 or not down[i - 1]):
            out.append((i, 1))
        elif d:
            out[-1] = (out[-1][0], out[-1][1] + 1)
    return out
