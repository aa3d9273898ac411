"""Server crashes: the server dies after given rounds and restarts from its last checkpoint."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from chaos.faults._plans import check_call
from fedkit.core.keys import Key
from fedkit.protocols import FaultPlan


def _rounds(value: Any) -> tuple[int, ...]:
    out = (value,) if isinstance(value, int) else tuple(value)
    if not out or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in out):
        raise ValueError(
            f"ServerCrash.at_round must be a round >= 1 or a list of them, got {value!r}"
        )
    return tuple(sorted(set(out)))


@attrs.frozen
class ServerCrash:
    """The server crashes after aggregating each round in ``at_round`` (one round or a list);
    clients are unaffected. The engine restores its newest checkpoint and replays the lost
    rounds (each crash fires once), counting rounds lost and recovery time."""

    at_round: tuple[int, ...] = attrs.field(converter=_rounds)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        clean = FaultPlan.clean(int(clients.numel()))
        return attrs.evolve(clean, server_crash=round in self.at_round)
