"""Run a strategy's server side on a synthetic population, as a white-box auditor sees it.

:func:`released` drives ``strategy.sample`` and ``strategy.round`` (validation, example-count
weights, quorum, the whole server chain with its state) for ``rounds`` rounds and returns what
the server released: the final parameters minus the initial ones. Sampled honest clients reply
with fresh random updates; a sampled canary replies with its update when it is present and
sends nothing when it is absent. An absent canary is a silent slot, the same as removing it
under Poisson sampling (each slot is drawn independently); under fixed-size sampling it is the
substitution that the accountant's rate ``m / N`` stands for.

:func:`client_messages` is the release of local DP: each row after the chain's client-side
:class:`~privacy.mechanisms.LocalDP` transform, what leaves the client.
"""

from __future__ import annotations

import torch

from fedkit.core.components import Role
from fedkit.core.keys import Key, fold_in, split
from fedkit.replies import Reply
from privacy.audit.population import Population, honest_updates


def released(
    strategy,
    population: Population,
    *,
    canary_ids: torch.Tensor,
    canary_rows: torch.Tensor,
    present: torch.Tensor,
    rounds: int,
    key: Key,
) -> torch.Tensor:
    """``Tensor[d]`` (float64): the sum of the server's ``rounds`` releases when the canaries
    ``canary_ids`` (distinct slots of ``population``) hold ``canary_rows`` and take part where
    ``present``; every other slot is an honest client."""
    n, d = population.num_clients, population.dim
    ids = torch.as_tensor(canary_ids, dtype=torch.int64).reshape(-1)
    present = torch.as_tensor(present, dtype=torch.bool).reshape(-1)
    if canary_rows.shape != (ids.numel(), d) or present.numel() != ids.numel():
        raise ValueError(
            f"canary_rows must be [{ids.numel()}, {d}] and present [{ids.numel()}], got "
            f"{tuple(canary_rows.shape)} and {tuple(present.shape)}"
        )
    if ids.numel() and (
        int(ids.min()) < 0 or int(ids.max()) >= n or ids.unique().numel() != ids.numel()
    ):
        raise ValueError(
            f"canary_ids must be distinct slots in [0, {n}), got {ids.tolist()[:8]}..."
        )
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    dtype = canary_rows.dtype
    slot = torch.full((n,), -1, dtype=torch.int64)
    slot[ids] = torch.arange(ids.numel())
    start = strategy.init(torch.zeros(d, dtype=dtype))
    state = start
    for t in range(int(rounds)):
        k_sample, k_honest, k_round = split(fold_in(key, t), 3)
        clients = strategy.sample(state, n, k_sample)
        which = slot[clients]
        honest = clients[which < 0].tolist()
        canaries = [j for j in which[which >= 0].tolist() if bool(present[j])]
        rows = honest_updates(k_honest, len(honest), d, norm=population.update_norm, dtype=dtype)
        tag = state.round + 1
        replies = [
            Reply(client=c, round=tag, update=rows[i], num_examples=population.honest_examples)
            for i, c in enumerate(honest)
        ] + [
            Reply(
                client=int(ids[j]),
                round=tag,
                update=canary_rows[j],
                num_examples=population.canary_examples,
            )
            for j in canaries
        ]
        state, _ = strategy.round(state, replies, k_round, clients=clients)
    return (state.params - start.params).to(torch.float64)


def _local_prefix(strategy) -> tuple:
    """The chain's components up to its last LocalDP transform (all transforms)."""
    from privacy.mechanisms import LocalDP

    components = tuple(strategy.server.components)
    last = max((i for i, c in enumerate(components) if isinstance(c, LocalDP)), default=None)
    if last is None:
        names = ", ".join(type(c).__name__ for c in components)
        raise ValueError(
            f"the server chain has no LocalDP transform to audit per client: [{names}]"
        )
    prefix = components[: last + 1]
    bad = [type(c).__name__ for c in prefix if c.role is not Role.TRANSFORM]
    if bad:
        raise ValueError(f"only transforms may precede LocalDP in the chain, got {bad}")
    return prefix


def client_messages(strategy, rows: torch.Tensor, *, examples: int, key: Key) -> torch.Tensor:
    """``Tensor[n, d]``: the rows as they leave their clients, i.e. after the chain's
    transforms up to and including its last :class:`~privacy.mechanisms.LocalDP`."""
    prefix = _local_prefix(strategy)
    weights = torch.full((rows.shape[0],), float(examples), dtype=rows.dtype)
    out = rows
    for comp, k in zip(prefix, split(key, len(prefix)), strict=True):
        (out, weights), _, _ = comp(out, weights, comp.init(rows.shape[1]), k)
    return out
