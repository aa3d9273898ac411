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
  payload can never reach the model, so no old update is needed: the current payload is
  replayed;
* ``STALE_CONTENT``: the reply carries the current round's tag (so validation accepts it)
  but the update the client computed ``max(detail, 1)`` or more rounds earlier — what a
  lazy or buggy client sends. The content comes from a :class:`ReplayMemory` (see there
  for what it holds and its bound): the newest update of that client from rounds
  ``round − depth .. round − age``. **Fallback**: a client with no such update in memory
  (not sampled in that window, the first rounds, a memory of depth 0) sends a zero update
  (it did no work), which also passes validation;
* ``DUPLICATE``: the reply arrives twice;
* ``LATE`` within the deadline, or ``NONE``: the reply arrives.

Arrivals are ordered by latency (ties by sampling order). The memory is updated with every
reply given (what the clients computed this round, before any fault) and returned in the
:class:`Delivery`, so delivery stays a pure function of its arguments. Nothing here raises
on a fault; a plan of the wrong shape is a bug in the fault model and raises ``ValueError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
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


def replay_depth(faults: Any) -> int:
    """How many past rounds of updates a fault model needs delivery to remember (its
    ``replay_depth`` attribute; 0 when it has none, as for every fault that only alters or
    drops the current reply)."""
    depth = getattr(faults, "replay_depth", 0)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"{type(faults).__name__}.replay_depth must be an int >= 0, got {depth!r}")
    return depth


@attrs.frozen(eq=False)
class ReplayMemory:
    """The updates the clients computed in the last ``depth`` rounds, for ``STALE_CONTENT``.

    ``rounds`` holds ``(round, {client: update})`` pairs, oldest first, at most ``depth`` of
    them: memory is bounded by ``depth × clients per round × d`` values (the updates are
    kept as given, no copies). ``depth = 0`` keeps nothing (the default: no cost unless a
    fault model asks, see :func:`replay_depth`). A value: :meth:`remember` returns a new
    memory, so a run is reproducible from its seed. Not saved in checkpoints: after a
    resume, or a server crash whose restore replays rounds, a stale-content reply may fall
    back to zeros where an uninterrupted run had an old update (the run is still
    reproducible from its seed and crash plan, but not equal to the uninterrupted one).
    """

    depth: int = attrs.field(default=0)
    rounds: tuple[tuple[int, Mapping[int, torch.Tensor]], ...] = ()

    @depth.validator
    def _check_depth(self, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"ReplayMemory.depth must be an int >= 0, got {value!r}")

    def remember(self, round: int, replies: Sequence[Reply | None]) -> ReplayMemory:
        """This memory plus the tensor updates of ``replies`` (the clients' own, before any
        fault) as round ``round``: rounds ``>= round`` (a timeline lost to a server crash)
        and rounds older than ``round − depth + 1`` are dropped."""
        if self.depth == 0:
            return self
        sent = {
            r.client: r.update
            for r in replies
            if r is not None and isinstance(r.update, torch.Tensor)
        }
        kept = tuple((t, u) for t, u in self.rounds if round - self.depth < t < round)
        return ReplayMemory(depth=self.depth, rounds=(*kept, (round, sent)))

    def recall(self, client: int, round: int, age: int) -> torch.Tensor | None:
        """The newest update of ``client`` from rounds ``round − depth .. round − age``
        (at least ``age`` rounds old); ``None`` if there is none in memory."""
        for t, sent in reversed(self.rounds):
            if round - self.depth <= t <= round - age and client in sent:
                return sent[client]
        return None


@attrs.frozen(eq=False)
class Delivery:
    """What arrived (in arrival order), what was lost ``{reason: n}``, the faults that
    struck ``{label: n}`` (label: the plan's reason, else the kind), whether the server
    crashes after this round, and the replay memory after this round."""

    replies: tuple[Reply, ...]
    lost: dict[str, int]
    faults: dict[str, int]
    server_crash: bool
    memory: ReplayMemory = attrs.field(factory=ReplayMemory)


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


def stale_content(reply: Reply, age: int, memory: ReplayMemory) -> Reply:
    """``reply`` with its tag kept and its update replaced by the client's update from at
    least ``age`` rounds ago (:meth:`ReplayMemory.recall`), or by zeros when the memory
    has none (module doc)."""
    old = memory.recall(reply.client, reply.round, max(age, 1))
    update = torch.zeros_like(reply.update) if old is None else old
    return attrs.evolve(reply, update=update)


def deliver(
    replies: Sequence[Reply | None],
    plan: FaultPlan,
    *,
    deadline: float | None,
    key: Key,
    memory: ReplayMemory | None = None,
) -> Delivery:
    """Apply ``plan`` to one reply per sampled client (``None``: the client sent nothing);
    ``memory`` holds earlier rounds' updates for ``STALE_CONTENT`` (None: an empty one,
    so every such reply falls back to zeros). The returned memory also holds this round's
    updates."""
    m = len(replies)
    _check_plan(plan, m)
    memory = ReplayMemory() if memory is None else memory
    if not isinstance(memory, ReplayMemory):
        raise TypeError(f"memory must be a ReplayMemory or None, got {type(memory).__name__}")
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
        elif kind is FaultKind.STALE_CONTENT and isinstance(reply.update, torch.Tensor):
            reply = stale_content(reply, detail[i], memory)
        arrivals.append((latency[i], i, reply))
        if kind is FaultKind.DUPLICATE:
            arrivals.append((latency[i], i, reply))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    rounds = {r.round for r in replies if r is not None}
    return Delivery(
        replies=tuple(r for _, _, r in arrivals),
        lost=dict(lost),
        faults=dict(faults),
        server_crash=bool(plan.server_crash),
        memory=memory.remember(rounds.pop(), replies) if len(rounds) == 1 else memory,
    )
