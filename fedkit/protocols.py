"""Extension points the run driver and its transports call: tasks, adversaries (attacks
suite), fault models (chaos suite), client DP-SGD settings and privacy accountants (privacy
suite). fedkit defines them (with no-op defaults where that makes sense); the suites and
the task builders implement them.

Both are pure: every decision is a function of (round, client, key) and of what the
adversary may know, so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key


@runtime_checkable
class Task(Protocol):
    """A federated task: a model as a pure function of flat parameters (``spec``), the
    clients' data and the server's test metrics.

    * ``name``, ``meta`` (what a record says about it), ``spec``, ``num_clients``;
    * ``client_size(c)``: examples of client ``c``;
    * ``init(key)``: initial flat parameters;
    * ``evaluate(params)``: test metrics of the global model (``test_loss``,
      ``test_accuracy``, or the task's own);
    * ``train_client(params, client, cfg, work, key)``: ``(update, num_examples, metrics)``
      of one client's local training (``metrics`` holds ``loss`` and ``steps``).

    :class:`fedkit.tasks.SupervisedTask` (in-memory classification) is the base the
    engines train themselves (vectorised, with data poisoning); other tasks (SO-100
    policies) bring their own ``train_client``.
    """

    name: str
    spec: ParamSpec
    meta: Mapping[str, Any]

    @property
    def num_clients(self) -> int: ...

    def client_size(self, client: int) -> int: ...

    def init(self, key: Key) -> torch.Tensor: ...

    def evaluate(self, params: torch.Tensor) -> dict[str, float]: ...

    def train_client(
        self, params: torch.Tensor, client: int, cfg: Any, work: int, key: Key
    ) -> tuple[torch.Tensor, int, dict[str, Any]]: ...


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
    STALE_CONTENT = "stale_content"  # current round tag, an earlier round's update inside


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


@runtime_checkable
class DPSGDSetting(Protocol):
    """Client DP-SGD as the engines run it (``ClientConfig(dp_sgd=...)``; implemented by
    ``privacy.dpsgd.DPSGD``): per-example gradients clipped to ``max_grad_norm``, Gaussian
    noise of std ``noise_multiplier · max_grad_norm`` on their sum, Poisson-sampled local
    batches of expected size ``batch_size``; ``sample_rate(n)`` is the Poisson rate of a
    client with ``n`` examples. The math is :func:`fedkit.client_dp.dp_local_step`."""

    max_grad_norm: float
    noise_multiplier: float
    batch_size: int

    def sample_rate(self, local_examples: int) -> float: ...


@runtime_checkable
class DPUnitTask(Protocol):
    """A task whose client DP-SGD protects a unit larger than one example (e.g. the SO-100
    task's episodes, ``dp_unit = "episode"``): ``dp_units(client)`` is how many units a
    client holds (the Poisson population of its DP-SGD batches) and ``steps_for(client, cfg,
    work)`` its local steps. Accountants count units, not examples."""

    dp_unit: str

    def dp_units(self, client: int) -> int: ...

    def steps_for(self, client: int, cfg: Any, work: int) -> int: ...


@attrs.frozen(eq=False)
class RoundSpend:
    """What one round is about to release, known before anyone trains: the ids of the
    clients that will train (int64 ``[k]``), their example counts (privacy units under
    DP-SGD on a :class:`DPUnitTask`) and local steps (int64 ``[k]``), the population size,
    the clients sampled this round, the strategy's client DP-SGD setting (``None`` without),
    the probability ``sample_rate`` that a client is sampled and how (``sampling``: ``"fixed"`` size without replacement or ``"poisson"``)."""

    round: int
    clients: torch.Tensor
    local_examples: torch.Tensor
    local_steps: torch.Tensor
    num_clients: int
    clients_per_round: int
    dp_sgd: Any = None
    sample_rate: float = 1.0
    sampling: str = "fixed"


@runtime_checkable
class PrivacyAccountant(Protocol):
    """Tracks ε over a run (implemented in ``privacy.accounting``). Pure: the ledger is a
    value the engine keeps (and checkpoints).

    * ``init(num_clients)``: the empty ledger;
    * ``spend(ledger, round)``: the ledger after the round described by a :class:`RoundSpend`;
    * ``epsilon(ledger)``: ε spent at ``delta``;
    * ``target_epsilon``: ``None`` or the budget; the engine stops *before* a round whose
      ledger would have ``epsilon > target_epsilon``.
    """

    delta: float
    target_epsilon: float | None

    def init(self, num_clients: int) -> Any: ...

    def spend(self, ledger: Any, round: RoundSpend) -> Any: ...

    def epsilon(self, ledger: Any) -> float: ...
