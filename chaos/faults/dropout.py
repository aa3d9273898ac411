"""Dropout: a sampled client's reply never arrives."""

from __future__ import annotations

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan


@attrs.frozen
class Dropout:
    """Each sampled client independently drops out of the round (``DROP``, reason
    ``"dropout"``) with probability ``p``, decided by its own keyed uniform for the round.
    Bonawitz et al. 2019, "Towards Federated Learning at Scale: System Design"."""

    p: float = attrs.field(default=0.1, validator=check_probability)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        drop = round_uniforms(key, round, clients)[:, 0] < self.p
        return plan_where(drop, FaultKind.DROP, "dropout")
