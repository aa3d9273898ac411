"""Stale or replayed updates: a reply from an earlier round arrives instead of this one's."""

from __future__ import annotations

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_positive_int, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan


@attrs.frozen
class Stale:
    """With probability ``p`` a sampled client's reply is a replay of the one it sent ``age``
    rounds earlier (``STALE``, reason ``"stale"``, ``detail`` = age), the age uniform on
    ``1..max_age``. The engine tags the replay with that earlier round, which validation
    rejects as ``stale`` (:class:`~chaos.faults.stale_content.StaleContent` keeps the
    current tag, so its old update gets through)."""

    p: float = attrs.field(default=0.1, validator=check_probability)
    max_age: int = attrs.field(default=1, validator=check_positive_int)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        u = round_uniforms(key, round, clients, 2)
        age = 1 + torch.clamp((u[:, 1] * self.max_age).long(), max=self.max_age - 1)
        return plan_where(u[:, 0] < self.p, FaultKind.STALE, "stale", detail=age)
