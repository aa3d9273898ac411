"""State a client keeps between the rounds it takes part in, for every client of a run.

Today: worker momentum (``ClientConfig.worker_momentum`` = β; Karimireddy, He, Jaggi 2021,
"Learning from History for Byzantine Robust Optimization", ICML): client ``c`` sends
``m_c ← β m_c + (1 − β) Δ_c`` instead of its update ``Δ_c``; ``m_c`` starts at 0.

In a simulation the run driver owns the state of all ``N`` clients: one ``[N, d]`` tensor in
the parameters' dtype (``N · d · 4`` bytes in float32: 20 clients × 10⁶ parameters = 80 MB),
allocated on the first round that needs it, updated only for clients that trained, and
saved in every checkpoint (a resumed run continues the same momenta). The transport
computes the messages (the adversary then rewrites its clients' rows, so a model-poisoning
attack sees the honest clients' momenta, as in the paper). In a deployment each node keeps
its own momentum (:mod:`fedkit.flower.client`).
"""

from __future__ import annotations

import attrs
import torch


@attrs.frozen(eq=False)
class ClientStates:
    """Per-client state of all ``N`` clients (``momentum``: ``[N, d]`` or ``None`` before
    the first round that needs it). Values are never changed in place: :meth:`with_rows`
    returns a new one (one ``N · d`` copy per round: a memory copy, small beside the round's
    training, bought for a state a checkpoint or an adversary's replay can hold on to)."""

    momentum: torch.Tensor | None = None

    def momentum_rows(self, clients: torch.Tensor, num_clients: int, like: torch.Tensor):
        """The momenta of ``clients`` (``[m, d]``; zeros for a client without one yet)."""
        if self.momentum is None:
            return torch.zeros(clients.numel(), like.numel(), dtype=like.dtype, device=like.device)
        if self.momentum.shape[0] != num_clients:
            raise ValueError(
                f"client state holds {self.momentum.shape[0]} clients, the run has {num_clients}"
            )
        return self.momentum.index_select(0, clients.to(self.momentum.device))

    def with_rows(
        self, clients: torch.Tensor, rows: torch.Tensor, num_clients: int
    ) -> ClientStates:
        """A copy whose momenta of ``clients`` are ``rows``."""
        if clients.numel() == 0:
            return self
        base = self.momentum
        if base is None:
            base = torch.zeros(num_clients, rows.shape[1], dtype=rows.dtype, device=rows.device)
        index = clients.to(base.device)
        return ClientStates(momentum=base.index_copy(0, index, rows.to(base)))

    def to_tree(self) -> dict[str, torch.Tensor]:
        return {} if self.momentum is None else {"momentum": self.momentum}

    @classmethod
    def from_tree(cls, tree: dict[str, torch.Tensor] | None) -> ClientStates:
        return cls(momentum=(tree or {}).get("momentum"))


def apply_worker_momentum(
    updates: torch.Tensor, previous: torch.Tensor, trained: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(messages, new momenta)`` of one round's clients: a client that trained sends and
    keeps ``β m + (1 − β) Δ``; one that did not (a dropped straggler) sends its zero row and
    keeps ``m``. Pure."""
    mixed = beta * previous.to(updates.dtype) + (1.0 - beta) * updates
    keep = trained.reshape(-1, 1)
    return torch.where(keep, mixed, updates), torch.where(keep, mixed, previous.to(updates.dtype))
