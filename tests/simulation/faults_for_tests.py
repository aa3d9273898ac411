"""Hand-written fault models and adversaries for the simulation tests."""

from __future__ import annotations

import attrs
import torch

from fedkit.protocols import FAULT_KINDS, FaultKind, FaultPlan

TIMES = ("train_time", "aggregate_time", "eval_time", "wall_time")


def without_times(metrics):
    return [{k: v for k, v in m.items() if k not in TIMES} for m in metrics]


@attrs.frozen(eq=False)
class Scripted:
    """The same faults every round: ``kinds[client]``, ``latency[client]``, ``detail[client]``;
    a server crash after each round in ``crash_after``."""

    kinds: dict = attrs.field(factory=dict)
    latency: dict = attrs.field(factory=dict)
    detail: dict = attrs.field(factory=dict)
    crash_after: tuple = ()

    def plan(self, round, clients, key):
        ids = clients.tolist()
        return FaultPlan(
            kind=torch.tensor(
                [FAULT_KINDS.index(self.kinds.get(c, FaultKind.NONE)) for c in ids],
                dtype=torch.int64,
            ),
            latency=torch.tensor(
                [float(self.latency.get(c, 0.0)) for c in ids], dtype=torch.float64
            ),
            detail=torch.tensor([int(self.detail.get(c, 0)) for c in ids], dtype=torch.int64),
            server_crash=round in self.crash_after,
        )


@attrs.frozen(eq=False)
class PowerCut:
    """No faults, but the process dies (an exception) when round ``at`` starts."""

    at: int

    def plan(self, round, clients, key):
        if round == self.at:
            raise RuntimeError("power cut")
        return FaultPlan.clean(clients.numel())


@attrs.define(eq=False)
class Recorder:
    """An adversary that controls ``ids``, flips labels and NaNs its rows, recording calls."""

    ids: tuple = (1, 4)
    nan_rows: bool = False
    calls: list = attrs.field(factory=list)

    def controlled(self, num_clients, key):
        self.calls.append(("controlled", num_clients))
        return torch.tensor(self.ids, dtype=torch.int64)

    def poison_data(self, client, x, y, key):
        self.calls.append(("data", client))
        return x, (y + 1) % 3

    def poison_updates(self, updates, byzantine, weights, round, key):
        self.calls.append(("updates", round, byzantine.clone(), weights.clone(), updates.clone()))
        if not self.nan_rows:
            return updates
        return torch.where(byzantine[:, None], torch.full_like(updates, float("nan")), updates)
