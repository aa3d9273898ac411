"""Several fault models at once."""

from __future__ import annotations

import attrs
import torch

from chaos.faults._plans import check_call
from fedkit.core.keys import Key, fold_in
from fedkit.protocols import FAULT_KINDS, FaultKind, FaultModel, FaultPlan
from fedkit.simulation.delivery import replay_depth

_NONE = FAULT_KINDS.index(FaultKind.NONE)


def combine(plans: list[FaultPlan], m: int) -> FaultPlan:
    """Per client the first plan whose kind is not ``NONE`` wins (its kind, detail and
    reason); latency is the maximum over all plans; ``server_crash`` is any plan's."""
    if not plans:
        return FaultPlan.clean(m)
    kinds = torch.stack([p.kind.long() for p in plans])  # [members, m]
    struck = kinds != _NONE
    winner = torch.where(struck.any(0), struck.to(torch.int8).argmax(0), 0)
    cols = torch.arange(m)
    reasons = [p.reason or ("none",) * m for p in plans]
    return FaultPlan(
        kind=kinds[winner, cols],
        latency=torch.stack([p.latency.double() for p in plans]).amax(0),
        detail=torch.stack([p.detail.long() for p in plans])[winner, cols],
        server_crash=any(p.server_crash for p in plans),
        reason=tuple(reasons[w][i] for i, w in enumerate(winner.tolist())),
    )


def _check_members(instance, attribute, value) -> None:
    for f in value:
        if not isinstance(f, FaultModel):
            raise TypeError(
                f"Compose members must be fault models (with .plan), got {type(f).__name__}"
            )


@attrs.frozen(init=False)
class Compose:
    """Several fault models at once: ``Compose(a, b, ...)`` (or ``Compose(faults=[...])`` for
    Hydra). Member ``i`` plans with ``fold_in(key, i)``, so adding a member at the end never
    changes the others' decisions. Precedence: per client the first member (in order) that
    strikes it decides its kind, detail and reason — list the faults that silence a client
    (partition, crash, dropout) before those that alter its reply (corrupt, stale,
    duplicate). Latency is the maximum over members, so a corrupted client that also
    straggles past the deadline is lost as late; ``server_crash`` if any member says so."""

    faults: tuple[FaultModel, ...] = attrs.field(validator=_check_members)

    def __init__(self, *members: FaultModel, faults: tuple[FaultModel, ...] | list = ()) -> None:
        self.__attrs_init__((*members, *faults))

    @property
    def replay_depth(self) -> int:
        """The deepest replay memory any member needs (0: none does)."""
        return max((replay_depth(f) for f in self.faults), default=0)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        m = int(clients.numel())
        plans = [f.plan(round, clients, fold_in(key, i)) for i, f in enumerate(self.faults)]
        for f, p in zip(self.faults, plans, strict=True):
            for name in ("kind", "latency", "detail"):
                if tuple(getattr(p, name).shape) != (m,):
                    raise ValueError(f"{type(f).__name__}.plan returned {name} of the wrong shape")
        return combine(plans, m)
