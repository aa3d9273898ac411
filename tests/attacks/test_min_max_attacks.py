"""Min-max / min-sum: the constraint holds at the γ found and fails just above it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import updates

from attacks.poisoning import (
    largest_feasible,
    min_max,
    min_max_gamma,
    min_sum,
    min_sum_gamma,
    perturbation_vector,
)

TOL = 1e-6
perturbations = st.sampled_from(["unit", "std", "sign"])


def _max_distance(point, honest):
    return float(torch.cdist(point[None], honest).max())


def _sum_sq_distance(point, honest):
    return float((point - honest).pow(2).sum())


@given(honest=updates(min_n=2, max_n=9, max_d=10), kind=perturbations)
def test_min_max_constraint_holds_at_gamma_and_gamma_is_maximal(honest, kind):
    p = perturbation_vector(honest, kind)
    mu = honest.mean(0)
    gamma = min_max_gamma(honest, p, tol=TOL)
    bound = float(torch.cdist(honest, honest).max())
    assert gamma > 0
    assert _max_distance(mu + gamma * p, honest) <= bound * (1 + 1e-9)
    assert _max_distance(mu + gamma * (1 + 2 * TOL) * p, honest) > bound
    out = min_max(honest, num_byzantine=3, perturbation=kind, tol=TOL)
    torch.testing.assert_close(out, (mu + gamma * p).expand(3, -1))


@given(honest=updates(min_n=2, max_n=9, max_d=10), kind=perturbations)
def test_min_sum_constraint_holds_at_gamma_and_gamma_is_maximal(honest, kind):
    p = perturbation_vector(honest, kind)
    mu = honest.mean(0)
    gamma = min_sum_gamma(honest, p, tol=TOL)
    bound = max(_sum_sq_distance(g, honest) for g in honest)
    assert gamma > 0
    assert _sum_sq_distance(mu + gamma * p, honest) <= bound * (1 + 1e-9)
    assert _sum_sq_distance(mu + gamma * (1 + 2 * TOL) * p, honest) > bound
    out = min_sum(honest, num_byzantine=2, perturbation=kind, tol=TOL)
    torch.testing.assert_close(out, (mu + gamma * p).expand(2, -1))


@given(honest=updates(min_n=2, max_n=9, max_d=10), kind=perturbations)
def test_gamma_matches_the_closed_form(honest, kind):
    """Each squared distance is quadratic in γ, so γ* has a closed form to compare with."""
    g = honest.numpy()
    p = perturbation_vector(honest, kind).numpy()
    mu = g.mean(axis=0)
    a = ((mu - g) ** 2).sum(axis=1)
    c = (mu - g) @ p
    q = p @ p
    pair = ((g[:, None] - g[None]) ** 2).sum(axis=2)
    roots = (-c + np.sqrt(c**2 - q * (a - pair.max()))) / q
    assert min_max_gamma(honest, torch.as_tensor(p), tol=1e-9) == pytest.approx(
        roots.min(), rel=1e-7
    )
    closed_sum = np.sqrt((pair.sum(axis=1).max() - a.sum()) / (len(g) * q))
    assert min_sum_gamma(honest, torch.as_tensor(p), tol=1e-9) == pytest.approx(
        closed_sum, rel=1e-7
    )


def test_perturbations_hand_computed():
    honest = torch.tensor([[3.0, -4.0], [3.0, -2.0], [3.0, -6.0]], dtype=torch.float64)
    torch.testing.assert_close(
        perturbation_vector(honest, "unit"), torch.tensor([-0.6, 0.8], dtype=torch.float64)
    )
    torch.testing.assert_close(
        perturbation_vector(honest, "std"), torch.tensor([0.0, -2.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        perturbation_vector(honest, "sign"), torch.tensor([-1.0, 1.0], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="perturbation"):
        perturbation_vector(honest, "random")


def test_gamma_search_grows_past_the_initial_value():
    honest = torch.as_tensor(np.random.default_rng(0).normal(scale=100.0, size=(6, 4)))
    p = perturbation_vector(honest, "unit")
    gamma = min_max_gamma(honest, p, gamma_init=0.01)
    assert gamma > 4 * 0.01
    assert gamma == pytest.approx(min_max_gamma(honest, p, gamma_init=1000.0), rel=2e-6)


def test_largest_feasible_on_a_known_interval():
    assert largest_feasible(lambda g: g <= 3.7, gamma_init=1.0, tol=1e-9) == pytest.approx(3.7)
    assert largest_feasible(lambda g: g <= 0.0, gamma_init=1.0) == 0.0


def test_identical_rows_give_no_perturbation_room():
    honest = torch.ones(4, 3, dtype=torch.float64)
    for kind in ("unit", "sign"):
        out = min_max(honest, num_byzantine=2, perturbation=kind)
        torch.testing.assert_close(out, honest[:2])
    torch.testing.assert_close(min_sum(honest, num_byzantine=1, perturbation="std"), honest[:1])
