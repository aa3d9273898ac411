"""Extension points the engines call: adversaries (attacks suite) and fault models (chaos
suite). fedkit defines them with no-op defaults; the suites implement them.

Both are pure: every decision is a function of (round, client, key) and of what the
adversary may know, so a run is reproducible from its seed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

import attrs
import torch

from fedkit.core.keys import Key


@runtime_checkable
class Adversary(Protocol):
    """An adversary controls a fixed set of client ids for the whole run.

    * ``controlled(num_clients, key)``: the ids it controls (int64 tensor), chosen once.
    * ``poison_data(client, x, y, key)``: what a controlled client trains on (data poisoning).
    * ``poison_updates(updates, byzantine, weights, round, key)``: the round's update matrix
      with the rows where ``byzantine`` is True replaced (model poisoning). ``updates`` holds
      the honest updates of every sampled client (Byzantine clients' own honest updates
      included); an implementation with partial knowledge must only read its own rows.
    """

    def controlled(self, num_clients: int, key: Key) -> torch.Tensor: ...

    def poison_data(
        self, client: int, x: torch.Tensor, y: torch.Tensor, key: Key
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def poison_updates(
        self,
        updates: torch.Tensor,
        byzantine: torch.Tensor,
        weights: torch.Tensor,
        round: int,
        key: Key,
    ) -> torch.Tensor: ...


@attrs.frozen
class NoAdversary:
    """Every client is honest."""

    def controlled(self, num_clients: int, key: Key) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.int64)

    def poison_data(self, client, x, y, key):
        return x, y

    def poison_updates(self, updates, byzantine, weights, round, key):
        return updates


class FaultKind(StrEnum):
    NONE = "none"
    DROP = "drop"  # the reply never arrives (dropout, crash, partition)
    LATE = "late"  # the reply arrives after the deadline
    CORRUPT = "corrupt"  # the payload is damaged (NaN/Inf, truncated, wrong dtype, bytes)
    STALE = "stale"  # an update from an earlier round is replayed
    DUPLICATE = "duplicate"  # the reply arrives twice


@attrs.frozen
class FaultPlan:
    """One round's fault decisions for the sampled clients (all tensors ``[m]``).

    ``kind`` holds indices into ``list(FaultKind)``; ``latency`` is seconds (compared to the
    strategy's deadline); ``detail`` is a kind-specific integer (corruption variant, replay
    age in rounds); ``server_crash`` says the server dies after this round's aggregation.
    """

    kind: torch.Tensor
    latency: torch.Tensor
    detail: torch.Tensor
    server_crash: bool = False
    reason: tuple[str, ...] = ()  # per client, a short label of the cause (for counters)

    @classmethod
    def clean(cls, m: int) -> FaultPlan:
        return cls(
            kind=torch.zeros(m, dtype=torch.int64),
            latency=torch.zeros(m, dtype=torch.float64),
            detail=torch.zeros(m, dtype=torch.int64),
            reason=("none",) * m,
        )


FAULT_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)


@runtime_checkable
class FaultModel(Protocol):
    """Decides, per round and sampled client, what goes wrong: ``plan(round, clients, key)``
    with ``clients`` an int64 tensor of the sampled ids."""

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan: ...


@attrs.frozen
class NoFaults:
    """Nothing goes wrong."""

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        return FaultPlan.clean(int(clients.numel()))
