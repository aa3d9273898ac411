"""Adversaries (the :class:`fedkit.protocols.Adversary` protocol): model poisoning, data
poisoning, and both at once. Each controls a keyed choice of client ids, given as a count
(``num_byzantine``) or a fraction of the clients (``⌊fraction · num_clients⌋``)."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from attacks.knowledge import KNOWLEDGE_LEVELS, poison_rows
from attacks.poisoning._common import Attack
from fedkit.core.keys import Key, choice, fold_in


def num_controlled(num_clients: int, num_byzantine: int | None, fraction: float | None) -> int:
    """How many of ``num_clients`` clients the adversary controls."""
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 0:
        raise ValueError(f"num_clients must be an int >= 0, got {num_clients!r}")
    if num_byzantine is not None:
        if num_byzantine > num_clients:
            raise ValueError(
                f"the adversary controls num_byzantine={num_byzantine} of {num_clients} clients"
            )
        return num_byzantine
    return math.floor(fraction * num_clients + 1e-9)


def choose_controlled(
    num_clients: int, *, num_byzantine: int | None, fraction: float | None, key: Key
) -> torch.Tensor:
    """The controlled ids (int64, sorted), drawn without replacement from ``key``."""
    count = num_controlled(num_clients, num_byzantine, fraction)
    return torch.sort(choice(key, num_clients, count)).values


def _check_count(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{attribute.name} must be an int >= 0 or None, got {value!r}")


def _check_fraction(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{attribute.name} must lie in [0, 1] or be None, got {value!r}")
    if (value is None) == (instance.num_byzantine is None):
        raise ValueError("give exactly one of num_byzantine (a count) and fraction")


_knowledge = attrs.validators.in_(KNOWLEDGE_LEVELS)


class _ControlsClients:
    """``controlled``: the keyed choice of ``num_byzantine`` clients or a ``fraction``."""

    def controlled(self, num_clients: int, key: Key) -> torch.Tensor:
        return choose_controlled(
            num_clients, num_byzantine=self.num_byzantine, fraction=self.fraction, key=key
        )


@attrs.frozen
class ModelPoisoning(_ControlsClients):
    """The controlled clients send ``attack``'s rows instead of their updates; the attack sees
    what ``knowledge`` allows (:mod:`attacks.knowledge`). The round's key is folded with the
    round number before it reaches the attack."""

    attack: Attack
    num_byzantine: int | None = attrs.field(default=None, validator=_check_count)
    fraction: float | None = attrs.field(default=None, validator=_check_fraction)
    knowledge: str = attrs.field(default="omniscient", validator=_knowledge)

    def poison_data(
        self, client: int, x: torch.Tensor, y: torch.Tensor, key: Key
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def poison_updates(
        self,
        updates: torch.Tensor,
        byzantine: torch.Tensor,
        weights: torch.Tensor,
        round: int,
        key: Key,
    ) -> torch.Tensor:
        return poison_rows(
            self.attack,
            updates,
            byzantine,
            weights,
            knowledge=self.knowledge,
            key=fold_in(key, round),
        )


@attrs.frozen
class DataPoisoning(_ControlsClients):
    """The controlled clients train on ``poison(x, y, key)`` (e.g. :class:`LabelFlip`,
    :class:`Backdoor`) and send their updates unchanged. ``poison_data`` poisons whatever it is
    given: the engine calls it for controlled clients only; the key is folded with the
    client id."""

    poison: Any
    num_byzantine: int | None = attrs.field(default=None, validator=_check_count)
    fraction: float | None = attrs.field(default=None, validator=_check_fraction)

    def poison_data(
        self, client: int, x: torch.Tensor, y: torch.Tensor, key: Key
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.poison(x, y, fold_in(key, client))

    def poison_updates(self, updates, byzantine, weights, round, key):
        return updates


@attrs.frozen
class CombinedPoisoning(_ControlsClients):
    """Data and model poisoning by the same clients: they train on ``poison(x, y)`` and then
    send ``attack``'s rows, e.g. ``Backdoor`` + ``Scaling(factor=n/η)`` with
    ``knowledge="partial"`` for model replacement (Bagdasaryan et al. 2020)."""

    poison: Any
    attack: Attack
    num_byzantine: int | None = attrs.field(default=None, validator=_check_count)
    fraction: float | None = attrs.field(default=None, validator=_check_fraction)
    knowledge: str = attrs.field(default="partial", validator=_knowledge)

    def poison_data(
        self, client: int, x: torch.Tensor, y: torch.Tensor, key: Key
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.poison(x, y, fold_in(key, client))

    def poison_updates(self, updates, byzantine, weights, round, key):
        return poison_rows(
            self.attack,
            updates,
            byzantine,
            weights,
            knowledge=self.knowledge,
            key=fold_in(key, round),
        )
