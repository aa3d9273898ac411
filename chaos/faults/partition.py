"""Network partitions: a group of clients is unreachable for a window of rounds."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from chaos.faults._draws import client_uniforms
from chaos.faults._plans import check_call, plan_where
from fedkit.core.keys import Key, split
from fedkit.protocols import FaultKind, FaultPlan


def _ids(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    out = tuple(value)
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in out):
        raise ValueError(f"Partition.group must hold client ids (ints >= 0), got {value!r}")
    return out


def _round(instance, attribute, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"Partition.{attribute.name} must be an int round, got {value!r}")


@attrs.frozen
class Partition:
    """The clients of a group are unreachable (``DROP``, reason ``"partition"``) in rounds
    ``start <= round < stop`` (``stop=None``: until the end of the run). The group is either
    explicit ``group`` ids, or each client belongs to it with probability ``fraction``,
    decided once per run from a key derived from the fault key alone (never from the round),
    so the group is the same in every round and needs no client count."""

    group: tuple[int, ...] | None = attrs.field(default=None, converter=_ids)
    fraction: float | None = None
    start: int = attrs.field(default=1, validator=_round)
    stop: int | None = attrs.field(default=None, validator=_round)

    def __attrs_post_init__(self) -> None:
        if (self.group is None) == (self.fraction is None):
            raise ValueError("Partition needs exactly one of group (client ids) and fraction")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"Partition.fraction must lie in [0, 1], got {self.fraction!r}")
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(
                f"Partition needs start < stop, got start={self.start}, stop={self.stop}"
            )

    def members(self, clients: torch.Tensor, key: Key) -> torch.Tensor:
        """``bool[m]``: which of ``clients`` belong to the partitioned group (any round)."""
        if self.group is not None:
            return torch.isin(clients, torch.tensor(self.group, dtype=torch.int64))
        (k_group,) = split(key, 1)
        return client_uniforms(k_group, clients, 1)[:, 0] < self.fraction

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        active = self.start <= round and (self.stop is None or round < self.stop)
        cut = (
            self.members(clients, key) if active else torch.zeros(clients.numel(), dtype=torch.bool)
        )
        return plan_where(cut, FaultKind.DROP, "partition")
