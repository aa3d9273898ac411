"""Adversaries (the :class:`fedkit.protocols.Adversary` protocol): model poisoning, data
poisoning, and both at once.

Which clients. Exactly one of ``clients`` (explicit ids), ``num_byzantine`` (a count) or
``fraction`` (``⌊fraction · num_clients⌋`` clients). A count or fraction is drawn once per
run from the run's ``controlled`` key (:class:`fedkit.run.plan.RunKeys`): a uniformly random
subset, without replacement (:func:`fedkit.core.keys.choice`), returned sorted; explicit ids
are checked against the task's ``num_clients`` when the run starts.

What they claim. A client that sends a crafted row (model poisoning) reports the example
count of :func:`attacks.knowledge.claimed_examples` (the mean of the honest counts it sees),
so it keeps a positive weight even with no data of its own; a data-poisoning client trains
on its (poisoned) data and reports its true count.

What they measure. Data-poisoning adversaries have ``evaluate(task, params)``: the attack
success rate of the poison on the task's test set (:func:`attacks.data.attack_success_rate`),
which the run driver adds to each evaluated round's metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import torch

from attacks.data.metrics import attack_success_rate
from attacks.knowledge import KNOWLEDGE_LEVELS, claimed_examples, poison_rows
from attacks.poisoning import Attack
from fedkit.core.keys import Key, choice, fold_in
from fedkit.tasks.base import SupervisedTask


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


def check_clients(clients: Sequence[int], num_clients: int) -> torch.Tensor:
    """Explicit ids as a sorted int64 tensor; each must lie in ``[0, num_clients)``."""
    bad = [c for c in clients if not 0 <= c < num_clients]
    if bad:
        raise ValueError(
            f"clients={list(clients)} names client(s) {bad}, but the task has {num_clients} "
            f"clients (ids 0 to {num_clients - 1})"
        )
    return torch.tensor(sorted(clients), dtype=torch.int64)


def choose_controlled(
    num_clients: int,
    *,
    num_byzantine: int | None,
    fraction: float | None,
    key: Key,
    clients: Sequence[int] | None = None,
) -> torch.Tensor:
    """The controlled ids (int64, sorted): ``clients`` when given (checked against
    ``num_clients``), else a count drawn without replacement from ``key``."""
    if clients is not None:
        return check_clients(clients, num_clients)
    count = num_controlled(num_clients, num_byzantine, fraction)
    return torch.sort(choice(key, num_clients, count)).values


def _client_ids(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | torch.Tensor):
        raise ValueError(f"clients must be a list of client ids or None, got {value!r}")
    ids = value.tolist() if isinstance(value, torch.Tensor) else list(value)
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, int):
            raise ValueError(f"clients must hold int client ids, got {c!r} in {ids}")
    return tuple(ids)


def _check_ids(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    if any(c < 0 for c in value):
        raise ValueError(f"clients must be ids >= 0, got {list(value)}")
    repeated = sorted({c for c in value if value.count(c) > 1})
    if repeated:
        raise ValueError(f"clients must be distinct, got {list(value)} ({repeated} repeated)")


def _check_count(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{attribute.name} must be an int >= 0 or None, got {value!r}")


def _check_fraction(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{attribute.name} must lie in [0, 1] or be None, got {value!r}")


_knowledge = attrs.validators.in_(KNOWLEDGE_LEVELS)


class _ControlsClients:
    """``controlled``: explicit ``clients``, or the keyed choice of ``num_byzantine`` clients
    or of a ``fraction`` (module doc); construction checks that exactly one is given."""

    def __attrs_post_init__(self) -> None:
        given = {
            name: getattr(self, name)
            for name in ("clients", "num_byzantine", "fraction")
            if getattr(self, name) is not None
        }
        if len(given) != 1:
            got = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "none"
            raise ValueError(
                "give exactly one of clients (ids), num_byzantine (a count) and fraction, "
                f"got {got} (from a config: set the others to null, e.g. attack.fraction=null)"
            )
        attack = getattr(self, "attack", None)
        levels = getattr(attack, "knowledge_levels", KNOWLEDGE_LEVELS)
        if attack is not None and self.knowledge not in levels:
            raise ValueError(
                f"{type(attack).__name__} needs knowledge in {levels}, got "
                f"knowledge={self.knowledge!r}"
            )

    def controlled(self, num_clients: int, key: Key) -> torch.Tensor:
        return choose_controlled(
            num_clients,
            num_byzantine=self.num_byzantine,
            fraction=self.fraction,
            key=key,
            clients=self.clients,
        )


class _PoisonsData:
    """``poison_data`` with the poison and ``evaluate`` (module doc). A poison with
    ``per_client`` (:class:`attacks.DBA`) also gets the client's rank among the controlled
    ids, which the caller passes as ``controlled`` (or explicit ``clients`` give)."""

    @property
    def uses_controlled(self) -> bool:
        return bool(getattr(self.poison, "per_client", False))

    def poison_data(
        self,
        client: int,
        x: torch.Tensor,
        y: torch.Tensor,
        key: Key,
        *,
        controlled: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = fold_in(key, client)
        if not self.uses_controlled:
            return self.poison(x, y, k)
        ids = self.clients if controlled is None else torch.as_tensor(controlled).tolist()
        if ids is None:
            raise ValueError(
                f"{type(self.poison).__name__} assigns its parts by rank among the controlled "
                "ids, which the caller must pass (train_planned(..., controlled=ids)) unless "
                "the adversary names its clients"
            )
        ids = sorted(int(c) for c in ids)
        if client not in ids:
            raise ValueError(f"client {client} is not among the controlled ids {ids}")
        return self.poison(x, y, k, rank=ids.index(client))

    def evaluate(self, task: Any, params: torch.Tensor) -> dict[str, float]:
        if not isinstance(task, SupervisedTask) or int(task.test_y.numel()) == 0:
            return {}
        rate = attack_success_rate(
            self.poison, lambda x: task.apply(params, x), task.test_x, task.test_y
        )
        return {} if rate is None else {"attack_success_rate": rate}


def _clients_field() -> Any:
    return attrs.field(default=None, converter=_client_ids, validator=_check_ids, kw_only=True)


@attrs.frozen
class ModelPoisoning(_ControlsClients):
    """The controlled clients send ``attack``'s rows instead of their updates; the attack sees
    what ``knowledge`` allows (:mod:`attacks.knowledge`). The round's key is folded with the
    round number before it reaches the attack. Its clients train only when the attack reads
    their updates (``needs_training``), and claim :func:`attacks.knowledge.claimed_examples`."""

    attack: Attack
    num_byzantine: int | None = attrs.field(default=None, validator=_check_count)
    fraction: float | None = attrs.field(default=None, validator=_check_fraction)
    knowledge: str = attrs.field(default="omniscient", validator=_knowledge)
    clients: tuple[int, ...] | None = _clients_field()

    @property
    def needs_training(self) -> bool:
        """Whether the rows depend on the controlled clients' own honest updates."""
        return self.knowledge == "partial" or bool(getattr(self.attack, "reads_own", False))

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

    def claimed_examples(self, num_examples: torch.Tensor, byzantine: torch.Tensor):
        return claimed_examples(num_examples, byzantine, self.knowledge)


@attrs.frozen
class DataPoisoning(_PoisonsData, _ControlsClients):
    """The controlled clients train on ``poison(x, y, key)`` (e.g. :class:`LabelFlip`,
    :class:`Backdoor`, :class:`DBA`) and send their updates unchanged. ``poison_data``
    poisons whatever it is given: the engine calls it for controlled clients only; the key
    is folded with the client id."""

    poison: Any
    num_byzantine: int | None = attrs.field(default=None, validator=_check_count)
    fraction: float | None = attrs.field(default=None, validator=_check_fraction)
    clients: tuple[int, ...] | None = _clients_field()

    def poison_updates(self, updates, byzantine, weights, round, key):
        return updates


@attrs.frozen
class CombinedPoisoning(_PoisonsData, _ControlsClients):
    """Data and model poisoning by the same clients: they train on ``poison(x, y)`` and then
    send ``attack``'s rows, e.g. ``Backdoor`` + ``Scaling(factor=n/η)`` with
    ``knowledge="partial"`` for model replacement (Bagdasaryan et al. 2020), or ``Backdoor``
    + ``Neurotoxin`` with ``knowledge="omniscient"`` (Zhang et al. 2022)."""

    poison: Any
    attack: Attack
    num_byzantine: int | None = attrs.field(default=None, validator=_check_count)
    fraction: float | None = attrs.field(default=None, validator=_check_fraction)
    knowledge: str = attrs.field(default="partial", validator=_knowledge)
    clients: tuple[int, ...] | None = _clients_field()

    @property
    def needs_training(self) -> bool:
        """Whether the rows depend on the controlled clients' own (poisoned) updates."""
        return self.knowledge == "partial" or bool(getattr(self.attack, "reads_own", False))

    def poison_updates(self, updates, byzantine, weights, round, key):
        return poison_rows(
            self.attack,
            updates,
            byzantine,
            weights,
            knowledge=self.knowledge,
            key=fold_in(key, round),
        )

    def claimed_examples(self, num_examples: torch.Tensor, byzantine: torch.Tensor):
        return claimed_examples(num_examples, byzantine, self.knowledge)
