"""Optimal ALIE / IPM: the line search finds a factor at least as damaging as every point of
its first grid; batched and one-by-one evaluation agree; components work as aggregators."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

import fedkit
from attacks.poisoning import (
    OptimalALIE,
    OptimalIPM,
    best_factor,
    damage,
    optimal_alie,
    optimal_ipm,
)
from fedkit.core.components import KernelReducer, Transform


def _mean(u, w):
    return (w[:, None] * u).sum(0) / w.sum()


def _median(u, w):
    return u.median(dim=0).values


def _median_not_batchable(u, w):
    if bool(torch.isnan(u).any()):  # a Python decision on values: vmap cannot batch it
        raise ValueError("NaN")
    return u.median(dim=0).values


def _trimmed_mean(u, w, f=2):
    s = torch.sort(u, dim=0).values
    return s[f : u.shape[0] - f].mean(0)


@attrs.frozen
class Mean(KernelReducer):
    kernel = staticmethod(lambda u, w, key=None: _mean(u, w))


@attrs.frozen
class Identity(Transform):
    def __call__(self, updates, weights, state, key):
        return (updates, weights), state, {}


def _honest(seed, h=8, d=6):
    return torch.as_tensor(np.random.default_rng(seed).normal(1.0, 1.0, size=(h, d)))


def test_optimal_ipm_against_the_mean_goes_to_the_upper_end():
    honest = _honest(0)
    out = optimal_ipm(honest, num_byzantine=2, aggregator=_mean, high=7.0)
    torch.testing.assert_close(out, (-7.0 * honest.mean(0)).expand(2, -1))


@pytest.mark.parametrize("aggregator", [_median, _trimmed_mean])
@pytest.mark.parametrize("kind", ["alie", "ipm"])
def test_optimal_factor_beats_every_point_of_the_first_grid(aggregator, kind):
    honest = _honest(1, h=9)
    b, grid = 3, 7
    mu, sigma = honest.mean(0), honest.std(0)

    def rows_for(tau):
        row = mu - tau * sigma if kind == "alie" else -tau * mu
        return row.expand(b, -1)

    tau = best_factor(honest, rows_for, aggregator, low=0.0, high=10.0, grid=grid, rounds=3)
    best = damage(honest, rows_for(tau), aggregator)
    first_grid = [damage(honest, rows_for(t), aggregator) for t in np.linspace(0, 10, grid)]
    assert best >= max(first_grid) - 1e-12
    fn = optimal_alie if kind == "alie" else optimal_ipm
    out = fn(honest, num_byzantine=b, aggregator=aggregator, grid=grid, rounds=3)
    torch.testing.assert_close(out, rows_for(tau))


def test_batched_and_unbatched_evaluation_agree():
    honest = _honest(2)
    a = optimal_alie(honest, num_byzantine=2, aggregator=_median)
    b = optimal_alie(honest, num_byzantine=2, aggregator=_median_not_batchable)
    torch.testing.assert_close(a, b)


def test_a_reducer_component_is_an_aggregator():
    honest = _honest(3)
    via_component = OptimalIPM(aggregator=Mean(), high=3.0)
    out = via_component(honest, num_byzantine=2, key=fedkit.key(0))
    torch.testing.assert_close(
        out, optimal_ipm(honest, num_byzantine=2, aggregator=_mean, high=3.0)
    )
    chained = OptimalALIE(aggregator=fedkit.chain(Identity(), Mean()))
    assert chained(honest, num_byzantine=1).shape == (1, 6)
    with pytest.raises(TypeError, match="reducer"):
        optimal_ipm(honest, num_byzantine=1, aggregator=Identity())


def test_line_search_rejects_bad_ranges():
    honest = _honest(4)
    with pytest.raises(ValueError, match="low < high"):
        optimal_ipm(honest, num_byzantine=1, aggregator=_mean, low=2.0, high=1.0)
    with pytest.raises(ValueError, match="grid"):
        optimal_ipm(honest, num_byzantine=1, aggregator=_mean, grid=2)
