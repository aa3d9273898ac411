"""Optimal ALIE and optimal IPM: the attack factor chosen by a line search that maximises the
damage to a given aggregator.

The damage of a factor ``τ`` is ``‖agg(honest ∪ byzantine(τ)) − μ‖``: the distance between
what the server would aggregate (the honest rows the adversary sees, with unit weights, and
``b`` copies of the Byzantine row) and the honest mean ``μ``.

Search: ``grid`` evenly spaced factors over ``[low, high]``; then ``rounds`` times, a new grid
of ``grid`` factors over ``[τ̂ − step, τ̂ + step] ∩ [low, high]`` around the best factor so far
``τ̂`` (``step`` the previous grid's spacing), so the last spacing is
``(high − low) / (grid − 1) · (2 / (grid − 1))^rounds``. That is ``grid · (rounds + 1)``
aggregator calls, all with the same key (common random numbers). The candidates of one grid
are aggregated in one batched call (``torch.func.vmap``) when their stacked matrices hold at
most ``BATCH_ELEMENTS`` entries and the aggregator can be batched; aggregators with
data-dependent shapes or Python-level decisions on values cannot, and are then called once
per candidate. An aggregate that is NaN counts as no damage; ties go to the smaller factor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch

from attacks.poisoning._common import (
    Attack,
    aggregate_fn,
    check_honest,
    honest_mean,
    honest_std,
    repeat_row,
)
from fedkit.core.keys import Key

BATCH_ELEMENTS = 1 << 24  # 16 Mi entries: 64 MiB of float32 candidate matrices per grid


def _damage(agg, honest, mu, byzantine, key) -> float:
    rows = torch.cat([honest, byzantine.to(honest.dtype)])
    weights = torch.ones(rows.shape[0], dtype=honest.dtype, device=honest.device)
    return float(torch.linalg.vector_norm(agg(rows, weights, key).double() - mu))


def _grid_damage(agg, honest, mu, byzantine: list[torch.Tensor], key) -> list[float]:
    """:func:`_damage` of every candidate, batched with ``vmap`` where possible."""
    n = honest.shape[0] + byzantine[0].shape[0]
    if len(byzantine) * n * honest.shape[1] <= BATCH_ELEMENTS:
        stacked = torch.stack([torch.cat([honest, byz.to(honest.dtype)]) for byz in byzantine])
        weights = torch.ones(n, dtype=honest.dtype, device=honest.device)
        try:
            out = torch.func.vmap(lambda u: agg(u, weights, key), randomness="same")(stacked)
        except Exception:  # not batchable: fall back to one call per candidate
            out = None
        if out is not None:
            return torch.linalg.vector_norm(out.double() - mu, dim=1).tolist()
    return [_damage(agg, honest, mu, byz, key) for byz in byzantine]


def damage(
    honest: torch.Tensor, byzantine: torch.Tensor, aggregator: Any, key: Key | None = None
) -> float:
    """``‖agg(honest ∪ byzantine) − μ‖`` with unit weights (NaN when the aggregate is NaN)."""
    return _damage(aggregate_fn(aggregator), honest, honest_mean(honest).double(), byzantine, key)


def best_factor(
    honest: torch.Tensor,
    rows_for: Callable[[float], torch.Tensor],
    aggregator: Any,
    *,
    low: float,
    high: float,
    grid: int = 11,
    rounds: int = 3,
    key: Key | None = None,
) -> float:
    """The factor in ``[low, high]`` maximising :func:`damage` of ``rows_for(τ)`` (module doc
    for the search); ties go to the smaller factor."""
    if not low < high:
        raise ValueError(f"line search needs low < high, got low={low}, high={high}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 3:
        raise ValueError(f"line search needs an int grid >= 3, got {grid!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"line search needs an int rounds >= 0, got {rounds!r}")
    agg = aggregate_fn(aggregator)
    mu = honest_mean(honest).double()

    best_tau, best_value = low, -float("inf")
    lo, hi = float(low), float(high)
    for _ in range(rounds + 1):
        candidates = torch.linspace(lo, hi, grid, dtype=torch.float64).tolist()
        values = _grid_damage(agg, honest, mu, [rows_for(t) for t in candidates], key)
        values = [-float("inf") if v != v else v for v in values]
        top = max(range(grid), key=lambda i: (values[i], -i))
        if values[top] > best_value:
            best_tau, best_value = candidates[top], values[top]
        step = (hi - lo) / (grid - 1)
        lo, hi = max(float(low), best_tau - step), min(float(high), best_tau + step)
    return best_tau


def optimal_alie(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    aggregator: Any,
    low: float = 0.0,
    high: float = 10.0,
    grid: int = 11,
    rounds: int = 3,
    key: Key | None = None,
) -> torch.Tensor:
    """Every Byzantine row is ``μ − τσ`` (as in ALIE) with ``τ`` chosen by the line search of
    the module doc against ``aggregator`` (a fedkit reducer component or a callable
    ``(updates, weights) -> Tensor[d]``).

    Baruch et al. 2019, A Little Is Enough: Circumventing Defenses For Distributed Learning
    (NeurIPS); factor search as in Allouah et al. 2023, Fixing by Mixing: A Recipe for
    Optimal Byzantine ML under Heterogeneity (AISTATS).
    """
    b = check_honest(honest, num_byzantine, "optimal_alie", min_rows=2)
    mu, sigma = honest_mean(honest), honest_std(honest, "optimal_alie")
    if b == 0:
        return honest.new_zeros(0, honest.shape[1])

    def rows_for(tau: float) -> torch.Tensor:
        return repeat_row(mu - tau * sigma, b)

    tau = best_factor(
        honest, rows_for, aggregator, low=low, high=high, grid=grid, rounds=rounds, key=key
    )
    return rows_for(tau)


def optimal_ipm(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    aggregator: Any,
    low: float = 0.0,
    high: float = 10.0,
    grid: int = 11,
    rounds: int = 3,
    key: Key | None = None,
) -> torch.Tensor:
    """Every Byzantine row is ``−τμ`` (as in IPM) with ``τ`` chosen by the line search of the
    module doc against ``aggregator``.

    Xie et al. 2019, Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
    Manipulation (UAI); factor search as in Allouah et al. 2023, Fixing by Mixing: A Recipe
    for Optimal Byzantine ML under Heterogeneity (AISTATS).
    """
    b = check_honest(honest, num_byzantine, "optimal_ipm")
    mu = honest_mean(honest)
    if b == 0:
        return honest.new_zeros(0, honest.shape[1])

    def rows_for(tau: float) -> torch.Tensor:
        return repeat_row(mu * -tau, b)

    tau = best_factor(
        honest, rows_for, aggregator, low=low, high=high, grid=grid, rounds=rounds, key=key
    )
    return rows_for(tau)


@attrs.frozen
class OptimalALIE(Attack):
    """Attack value for :func:`optimal_alie`."""

    kernel = staticmethod(optimal_alie)
    aggregator: Any
    low: float = 0.0
    high: float = 10.0
    grid: int = 11
    rounds: int = 3


@attrs.frozen
class OptimalIPM(Attack):
    """Attack value for :func:`optimal_ipm`."""

    kernel = staticmethod(optimal_ipm)
    aggregator: Any
    low: float = 0.0
    high: float = 10.0
    grid: int = 11
    rounds: int = 3
