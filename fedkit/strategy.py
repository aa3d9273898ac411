"""A federated strategy as a value: client config, server chain, sampling, quorum, deadline.

``strategy.init(params)`` and ``strategy.round(state, replies, key)`` are pure; engines (the
in-process simulation, the Flower ServerApp) only drive them:

1. ``clients = strategy.sample(state, num_clients, key)``;
2. ``work, straggler = strategy.plan_work(clients, key)`` (FedProx systems heterogeneity);
3. the clients train and reply; the engine drops replies later than ``deadline``;
4. ``state, info = strategy.round(state, replies, key, clients=clients)`` validates the
   replies (:mod:`fedkit.replies`), stacks the accepted updates into ``U: [m, d]`` (one row
   per sampled client, in sampling order; weight = example count, 0 for a client without an
   accepted reply), runs the server chain and steps ``x ← x + chain(U, w)``. With fewer
   accepted replies than ``quorum`` the round is skipped: parameters and chain state stay,
   the round counter still advances and ``info.quorum_missed`` is set.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import attrs
import torch

from fedkit.client import ClientConfig
from fedkit.core.components import Chain, Component, Info, RoundContext, chain
from fedkit.core.keys import Key, choice, randint, split, uniform
from fedkit.protocols import PrivacyAccountant
from fedkit.replies import Reply, Validation, Verdict, validate


def _as_chain(server: Any) -> Chain:
    if isinstance(server, Chain):
        return server
    if isinstance(server, Component):
        return chain(server)
    if isinstance(server, list | tuple):
        return chain(*server)
    raise TypeError(
        f"Strategy.server must be a fedkit Chain or component, got {type(server).__name__}"
    )


def _weighted_mean() -> Component:
    from fedkit.aggregators import Mean  # the default reducer: FedAvg's weighted mean

    return Mean()


@attrs.frozen
class PartialWork:
    """Systems heterogeneity as in the FedProx paper: each round a ``fraction`` of the
    sampled clients are stragglers that manage a uniform random number of work units in
    ``[1, E]`` (E = the config's epochs, or steps). ``policy="drop"`` discards them
    (FedAvg); ``"partial"`` keeps their partial work (FedProx). Called ``Stragglers``
    before 0.2, a name that clashed with :class:`chaos.Stragglers` (the latency fault).
    Li et al. 2020, "Federated Optimization in Heterogeneous Networks"."""

    fraction: float = attrs.field(default=0.0)
    policy: str = attrs.field(
        default="partial", validator=attrs.validators.in_(("drop", "partial"))
    )

    @fraction.validator
    def _check_fraction(self, attribute, value):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"PartialWork.fraction must lie in [0, 1], got {value}")


@attrs.frozen(eq=False)
class ServerState:
    """Rounds completed, global flat parameters and the server chain's state."""

    round: int
    params: torch.Tensor
    chain_state: Any


@attrs.frozen(eq=False)
class RoundInfo:
    """What happened to one round's replies.

    ``received`` replies arrived; ``valid`` passed validation; ``accepted`` reached the
    reducer with a positive weight; ``rejected`` counts validation reasons and the chain's
    filter reasons; ``accepted_clients`` in sampling order; ``chain`` is the chain's raw info;
    ``verdicts`` says, reply by reply, what became of it (:class:`~fedkit.replies.Verdict`:
    accepted, or rejected by validation, by a chain filter or because the quorum was missed).
    """

    round: int
    expected: int
    received: int
    valid: int
    accepted: int
    rejected: dict[str, int]
    clipped: int
    quorum_missed: bool
    accepted_clients: tuple[int, ...]
    chain: Info = attrs.field(factory=dict)
    verdicts: tuple[Verdict, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """JSON-ready counters for a history record."""
        return {
            "expected": self.expected,
            "received": self.received,
            "valid": self.valid,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "clipped": self.clipped,
            "quorum_missed": self.quorum_missed,
        }


def _verdicts(check: Validation, reason_of: Callable[[int], str | None]) -> tuple[Verdict, ...]:
    """Verdicts of the valid replies (``reason_of(client)``: ``None`` when accepted, else
    why not) followed by those validation rejected."""
    out = []
    for r in check.accepted:
        reason = reason_of(r.client)
        out.append(Verdict(r.client, "accepted" if reason is None else "rejected", reason))
    out += [Verdict(c, "rejected", reason) for c, reason in check.rejected]
    return tuple(out)


def _chain_reasons(
    chain_info: Info, accepted: torch.Tensor, row_of: dict[int, int]
) -> Callable[[int], str | None]:
    """``client -> None`` (aggregated) or the first chain reason that excluded its row
    (``not_aggregated`` for a row whose weight a component zeroed without a reason)."""
    masks = {reason: m.tolist() for reason, m in chain_info.get("rejected", {}).items()}
    kept = accepted.tolist()

    def reason_of(client: int) -> str | None:
        i = row_of[client]
        first = next((reason for reason, m in masks.items() if m[i]), None)
        if first is not None:
            return first
        return None if kept[i] else "not_aggregated"

    return reason_of


SAMPLING = ("fixed", "poisson")
WEIGHTING = ("examples", "uniform")


@attrs.frozen
class Strategy:
    """Client config, server chain (a :class:`Chain` or one component, wrapped), sampling
    (``clients_per_round`` or ``fraction`` of all clients, keyed; all clients when both are
    None; ``sampling="fixed"`` draws exactly that many without replacement, ``"poisson"``
    includes each client independently with probability ``q = clients_per_round / N``, so
    the number per round varies: the sampling the DP-FedAvg accountant assumes),
    ``quorum`` (minimum accepted replies; 0 = the chain runs even on an empty round, which a
    DP mechanism needs: it must release noise whether or not anyone took part), ``weighting``
    (the row weights the chain gets: ``"examples"``, each reply's claimed example count, as
    FedAvg does; ``"uniform"``, 1 per accepted reply, so a client cannot buy weight by
    claiming more examples), ``deadline`` (seconds of simulated latency
    after which a reply counts as lost), ``stragglers`` and ``max_reply_bytes`` (payload
    limit; default twice a valid update); ``root_examples`` (a trust anchor: the number of
    clean examples the server holds as its own root dataset, drawn once per run by the run
    driver; each round the server trains the global model on them like a client and hands
    the update to the chain as ``context.reference``, for FLTrust and MoNNA's pivot;
    required when a chain component reads it); ``accountant`` (a
    :class:`fedkit.protocols.PrivacyAccountant`, e.g. from ``privacy.budget``) tracks ε per
    round and stops a run before it exceeds its target."""

    client: ClientConfig = attrs.field(factory=ClientConfig)
    server: Chain = attrs.field(factory=lambda: _as_chain(_weighted_mean()), converter=_as_chain)
    clients_per_round: int | None = None
    fraction: float | None = None
    sampling: str = attrs.field(default="fixed")
    weighting: str = "examples"
    quorum: int = 1
    deadline: float | None = None
    stragglers: PartialWork | None = None
    max_reply_bytes: int | None = None
    root_examples: int | None = None
    accountant: Any = None

    def __attrs_post_init__(self) -> None:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("give Strategy.clients_per_round or Strategy.fraction, not both")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {self.clients_per_round}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {self.fraction}")
        if self.sampling not in SAMPLING:
            raise ValueError(f"Strategy.sampling must be one of {SAMPLING}, got {self.sampling!r}")
        if self.weighting not in WEIGHTING:
            raise ValueError(
                f"Strategy.weighting must be one of {WEIGHTING}, got {self.weighting!r}"
            )
        if self.quorum < 0:
            raise ValueError(f"quorum must be >= 0, got {self.quorum}")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError(f"deadline must be positive seconds, got {self.deadline}")
        if self.root_examples is not None and (
            isinstance(self.root_examples, bool)
            or not isinstance(self.root_examples, int)
            or self.root_examples < 1
        ):
            raise ValueError(
                f"Strategy.root_examples must be an int >= 1 or None, got {self.root_examples!r}"
            )
        if self.server.needs_reference and self.root_examples is None:
            users = [
                type(c).__name__
                for c in self.server.components
                if getattr(c, "needs_reference", False)
            ]
            raise ValueError(
                f"the server chain's {', '.join(users)} compares clients with the server's own "
                "update on trusted root data: give Strategy(root_examples=N) (Cao et al. 2021 "
                "use N = 100 clean examples)"
            )
        if self.accountant is not None and not isinstance(self.accountant, PrivacyAccountant):
            raise TypeError(
                f"Strategy.accountant {type(self.accountant).__name__} does not implement "
                "fedkit.protocols.PrivacyAccountant"
            )

    def init(self, params: torch.Tensor) -> ServerState:
        """Round 0: the initial flat parameters and the chain's initial state."""
        if not isinstance(params, torch.Tensor) or params.ndim != 1:
            raise ValueError("Strategy.init expects 1-D flat parameters")
        return ServerState(round=0, params=params, chain_state=self.server.init(params.numel()))

    def num_sampled(self, num_clients: int) -> int:
        """Clients per round out of ``num_clients`` (fraction: ``max(1, round(f·K))``)."""
        if num_clients < 1:
            raise ValueError(f"need at least one client, got {num_clients}")
        if self.clients_per_round is not None:
            if self.clients_per_round > num_clients:
                raise ValueError(
                    f"clients_per_round={self.clients_per_round} exceeds the {num_clients} clients"
                )
            return self.clients_per_round
        if self.fraction is not None:
            return max(1, round(self.fraction * num_clients))
        return num_clients

    def sample_rate(self, num_clients: int) -> float:
        """The probability that a given client takes part in a round: ``m / N`` (with
        ``sampling="poisson"`` exactly the inclusion probability; with ``"fixed"`` only its
        marginal)."""
        return self.num_sampled(num_clients) / num_clients

    def sample(self, state: ServerState, num_clients: int, key: Key) -> torch.Tensor:
        """Sorted int64 ids of this round's clients from ``key``: ``num_sampled`` of them
        without replacement (``"fixed"``) or each with probability :meth:`sample_rate`
        (``"poisson"``, possibly none)."""
        m = self.num_sampled(num_clients)
        if m == num_clients:
            return torch.arange(num_clients, dtype=torch.int64)
        if self.sampling == "poisson":
            keep = uniform(key, num_clients, dtype=torch.float64) < m / num_clients
            return torch.nonzero(keep).flatten().to(torch.int64)
        return torch.sort(choice(key, num_clients, m)).values

    def plan_work(self, clients: torch.Tensor, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """Work units per sampled client (0 = dropped straggler) and the straggler mask."""
        m = int(clients.numel())
        full = self.client.work
        work = torch.full((m,), full, dtype=torch.int64)
        straggler = torch.zeros(m, dtype=torch.bool)
        if self.stragglers is None or self.stragglers.fraction == 0.0 or m == 0:
            return work, straggler
        k_who, k_how = split(key)
        straggler[choice(k_who, m, round(self.stragglers.fraction * m))] = True
        if self.stragglers.policy == "drop":
            return torch.where(straggler, 0, work), straggler
        return torch.where(straggler, randint(k_how, 1, full + 1, m), work), straggler

    def round(
        self,
        state: ServerState,
        replies: list[Reply],
        key: Key,
        *,
        clients: torch.Tensor | None = None,
        num_clients: int | None = None,
        reference: torch.Tensor | None = None,
    ) -> tuple[ServerState, RoundInfo]:
        """One aggregation step (pure). ``clients``: the sampled ids, which fixes the rows
        of ``U``; without it the rows are the accepted senders in arrival order.
        ``num_clients`` (the federation's size; default: the largest id seen + 1) and
        ``reference`` (the server's root-data update) go to the chain's
        :class:`~fedkit.core.components.RoundContext`."""
        current = state.round + 1
        params = state.params
        d = params.numel()
        replies = list(replies)
        expected = None if clients is None else [int(c) for c in clients.tolist()]
        if expected is not None and len(set(expected)) != len(expected):
            raise ValueError("Strategy.round: the sampled clients contain duplicates")
        check = validate(
            replies,
            round=current,
            d=d,
            dtype=params.dtype,
            expected=expected,
            max_bytes=self.max_reply_bytes,
        )
        order = expected if expected is not None else [r.client for r in check.accepted]
        rejected = check.reasons
        valid = len(check.accepted)
        base = dict(
            round=current,
            expected=len(order),
            received=len(replies),
            valid=valid,
        )
        if valid < self.quorum:
            info = RoundInfo(
                **base,
                accepted=0,
                rejected=rejected,
                clipped=0,
                quorum_missed=True,
                accepted_clients=(),
                verdicts=_verdicts(check, lambda c: "quorum_missed"),
            )
            return attrs.evolve(state, round=current), info
        row_of = {c: i for i, c in enumerate(order)}
        rows = torch.tensor([row_of[r.client] for r in check.accepted], dtype=torch.int64)
        # quorum 0 and nobody sampled: the chain still runs (a DP mechanism must release
        # noise) on one all-zero row of weight 0, i.e. no contribution (components need n >= 1)
        updates = torch.zeros(max(len(order), 1), d, dtype=params.dtype, device=params.device)
        if valid:  # quorum 0: an empty round still runs the chain (on zero rows)
            updates.index_copy_(
                0, rows, torch.stack([r.update.to(params.device) for r in check.accepted])
            )
        weights = torch.zeros(updates.shape[0], dtype=params.dtype, device=params.device)
        weights[rows] = torch.tensor(
            [
                float(r.num_examples) if self.weighting == "examples" else 1.0
                for r in check.accepted
            ],
            dtype=params.dtype,
            device=params.device,
        )
        row_clients = torch.full((updates.shape[0],), -1, dtype=torch.int64)
        row_clients[: len(order)] = torch.tensor(order, dtype=torch.int64)
        if reference is not None and tuple(reference.shape) != (d,):
            raise ValueError(
                f"Strategy.round: reference must have shape ({d},), got {tuple(reference.shape)}"
            )
        context = RoundContext(
            round=current,
            clients=row_clients,
            num_clients=(max(order, default=-1) + 1) if num_clients is None else num_clients,
            params=params,
            reference=None if reference is None else reference.to(params),
        )
        step, chain_state, chain_info = self.server(
            updates, weights, state.chain_state, key, context=context
        )
        for reason, mask in chain_info.get("rejected", {}).items():
            rejected[reason] = rejected.get(reason, 0) + int(mask.sum())
        accepted_mask = chain_info.get("accepted", weights > 0)
        clipped = chain_info.get("clipped")
        info = RoundInfo(
            **base,
            accepted=int(accepted_mask[: len(order)].sum()),
            rejected=rejected,
            clipped=0 if clipped is None else int(clipped.sum()),
            quorum_missed=False,
            accepted_clients=tuple(
                order[i] for i in torch.nonzero(accepted_mask).flatten().tolist() if i < len(order)
            ),
            chain=chain_info,
            verdicts=_verdicts(check, _chain_reasons(chain_info, accepted_mask, row_of)),
        )
        new = ServerState(
            round=current, params=params + step.to(params.dtype), chain_state=chain_state
        )
        return new, info


def deprecated_stragglers(stacklevel: int = 2) -> type[PartialWork]:
    """``Stragglers``, the 0.1 name of :class:`PartialWork`, with its deprecation warning
    (``stacklevel`` as for :func:`warnings.warn`, counted from the caller)."""
    warnings.warn(
        "fedkit.Stragglers is renamed fedkit.PartialWork (FedProx partial work; "
        "chaos.Stragglers is the latency fault); Stragglers will be removed in 0.3",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return PartialWork


def __getattr__(name: str) -> Any:
    if name == "Stragglers":
        return deprecated_stragglers(stacklevel=2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
