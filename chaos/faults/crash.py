"""Client crashes mid-training: the client sends nothing for several rounds."""

from __future__ import annotations

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_positive_int, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan


def crash_starts(p: float, first: int, last: int, clients: torch.Tensor, key: Key) -> torch.Tensor:
    """``bool[last − first + 1, m]``: whether each client crashes at each round of
    ``first..last`` (an independent keyed coin with probability ``p`` per round and client)."""
    rounds = range(first, last + 1)
    if not rounds:
        return torch.zeros(0, int(clients.numel()), dtype=torch.bool)
    return torch.stack([round_uniforms(key, r, clients)[:, 0] < p for r in rounds])


@attrs.frozen
class Crash:
    """Each client crashes at the start of any round ``r ≥ 1`` with probability ``p`` and sends
    nothing in rounds ``r .. r + rounds − 1`` (``DROP``, reason ``"crash"``); crashes that
    overlap merge into one longer outage. A pure function of (round, client, key): round
    ``r`` looks back at the crash coins of rounds ``max(1, r − rounds + 1) .. r``."""

    p: float = attrs.field(default=0.01, validator=check_probability)
    rounds: int = attrs.field(default=1, validator=check_positive_int)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        starts = crash_starts(self.p, max(1, round - self.rounds + 1), round, clients, key)
        return plan_where(starts.any(dim=0), FaultKind.DROP, "crash")
