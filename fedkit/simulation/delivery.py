"""How replies travel in the simulation: a fault plan (:class:`fedkit.protocols.FaultPlan`)
applied to one round's replies.

Per sampled client, in this order:

* ``DROP``: the reply never arrives (lost, ``dropped``);
* any kind with ``latency`` above the strategy's deadline: lost as ``late``;
* ``CORRUPT``: the payload is damaged, variant ``detail % 6``: 0 one NaN, 1 one +Inf,
  2 truncated to half its length, 3 cast to the wrong dtype, 4 random bytes instead of a
  tensor, 5 four times too long (oversized); validation rejects every variant;
* ``STALE``: the reply is a replay of one sent ``max(detail, 1)`` rounds earlier; it carries
  that round's tag, which validation rejects. Because a replay is rejected by its tag, its
  payload can never reach the model, so the engine keeps no per-client history of old
  updates (that would cost ``clients × d`` memory) and replays the current payload;
* ``DUPLICATE``: the reply arrives twice;
* ``LATE`` within the deadline, or ``NONE``: the reply arrives.

Arrivals are ordered by latency (ties by sampling order). Nothing here raises on a fault;
a plan of the wrong shape is a bug in the fault model and raises ``ValueError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs
import torch

from fedkit.core.keys import Key, fold_in, randint
from fedkit.protocols import FAULT_KINDS, FaultKind, FaultPlan
from fedkit.replies import Reply

CORRUPTIONS = ("nan", "inf", "truncated", "wrong_dtype", "bytes", "oversized")


def corrupt(update: torch.Tensor, detail: int, key: Key) -> Any:
    """A damaged copy of ``update`` (variant ``CORRUPTIONS[detail % 6]``)."""
    variant = CORRUPTIONS[detail % len(CORRUPTIONS)]
    d = update.numel()
    if variant in ("nan", "inf"):
        out = update.clone()
        out[int(randint(key, 0, max(d, 1), 1))] = float("nan") if variant == "nan" else float("inf")
        return out
    if variant == "truncated":
        return update[: d // 2].clone()
    if variant == "wrong_dtype":
        return update.to(torch.float32 if update.dtype == torch.float64 else torch.float64)
    if variant == "bytes":
        size = d * update.element_size()
        return randint(key, 0, 256, size).to(torch.uint8).numpy().tobytes()
    return update.repeat(4)


@attrs.frozen(eq=False)
class Delivery:
    """What arrived (in arrival order), what was lost ``{reason: n}``, the faults that
    struck ``{label: n}`` (label: the plan's reason, else the kind) and whether the server
    crashes after this round."""

    replies: tuple[Reply, ...]
    lost: dict[str, int]
    faults: dict[str, int]
    server_crash: bool


def _check_plan(plan: FaultPlan, m: int) -> None:
    for name in ("kind", "latency", "detail"):
        value = getattr(plan, name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (m,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"fault plan field {name!r} must have shape ({m},), got {shape}")
    if m and (int(plan.kind.min()) < 0 or int(plan.kind.max()) >= len(FAULT_KINDS)):
        raise ValueError(f"fault plan kinds must index FAULT_KINDS (0..{len(FAULT_KINDS) - 1})")
    if plan.reason and len(plan.reason) != m:
        raise ValueError(f"fault plan has {len(plan.reason)} reasons for {m} clients")


def deliver(
    replies: Sequence[Reply | None], plan: FaultPlan, *, deadline: float | None, key: Key
) -> Delivery:
    """Apply ``plan`` to one reply per sampled client (``None``: the client sent nothing)."""
    m = len(replies)
    _check_plan(plan, m)
    kinds = plan.kind.tolist()
    latency = plan.latency.tolist()
    detail = plan.detail.tolist()
    lost: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    arrivals: list[tuple[float, int, Reply]] = []
    for i, reply in enumerate(replies):
        kind = FAULT_KINDS[kinds[i]]
        if kind is not FaultKind.NONE:
            label = (
                plan.reason[i] if plan.reason and plan.reason[i] not in ("", "none") else kind.value
            )
            faults[label] += 1
        if reply is None:
            continue
        if kind is FaultKind.DROP:
            lost["dropped"] += 1
            continue
        if deadline is not None and latency[i] > deadline:
            lost["late"] += 1
            continue
        if kind is FaultKind.CORRUPT:
            reply = attrs.evolve(reply, update=corrupt(reply.update, detail[i], fold_in(key, i)))
        elif kind is FaultKind.STALE:
            reply = attrs.evolve(reply, round=reply.round - max(detail[i], 1))
        arrivals.append((latency[i], i, reply))
        if kind is FaultKind.DUPLICATE:
            arrivals.append((latency[i], i, reply))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return Delivery(
        replies=tuple(r for _, _, r in arrivals),
        lost=dict(lost),
        faults=dict(faults),
        server_crash=bool(plan.server_crash),
    )
