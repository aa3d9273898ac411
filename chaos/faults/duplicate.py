"""Duplicate replies: the network delivers a reply twice."""

from __future__ import annotations

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan


@attrs.frozen
class Duplicate:
    """Each sampled client's reply arrives twice (``DUPLICATE``, reason ``"duplicate"``) with
    probability ``p``; validation keeps the first copy and rejects the second."""

    p: float = attrs.field(default=0.1, validator=check_probability)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        twice = round_uniforms(key, round, clients)[:, 0] < self.p
        return plan_where(twice, FaultKind.DUPLICATE, "duplicate")
