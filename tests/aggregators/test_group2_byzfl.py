"""Agreement with ByzFL (the reference library for MDA, MoNNA, CAF, SMEA) and the pinned
conventions where fedkit differs on purpose. ByzFL is an optional (bench) dependency and
takes tens of seconds to import, hence one slow file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from group2_references import caf_reference, mda_reference

from fedkit.aggregators import caf, mda, monna, smea

byzfl = pytest.importorskip("byzfl")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", range(12))
def test_mda_agrees_with_byzfl_when_the_best_subset_is_unique(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 11))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    x = rng.normal(size=(n, 4))
    _, ties = mda_reference(x, np.ones(n), f)
    ours = mda(torch.tensor(x), f=f).numpy()
    if ties == 1:
        np.testing.assert_allclose(ours, byzfl.MDA(f)(x), atol=1e-12)


def test_mda_ties_are_averaged_where_byzfl_takes_the_first_subset():
    # {0, 1} and {1, 2} both have diameter 1: we average their means, ByzFL keeps {0, 1}.
    x = np.array([[0.0], [1.0], [2.0]])
    assert mda(torch.tensor(x), f=1).item() == pytest.approx(1.0)
    assert byzfl.MDA(1)(x).item() == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(10))
def test_monna_agrees_with_byzfl(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 15))
    f = int(rng.integers(0, (n - 1) // 2 + 1))
    pivot = int(rng.integers(0, n))
    x = rng.normal(size=(n, 6))
    ours = monna(torch.tensor(x), f=f, pivot=pivot).numpy()
    np.testing.assert_allclose(ours, byzfl.MoNNA(f, pivot)(x), atol=1e-12)


def test_monna_boundary_ties_share_the_last_place():
    # Rows 1 and 2 are both at distance 1 from the pivot; two places: the pivot and half of
    # each. ByzFL's argpartition takes one of them.
    x = np.array([[0.0], [1.0], [-1.0]])
    assert monna(torch.tensor(x), f=1).item() == pytest.approx(0.0)
    assert abs(byzfl.MoNNA(1, 0)(x).item()) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(8))
def test_caf_byzfl_is_the_reference_with_tau_max_over_all_rows(seed):
    # In one dimension ByzFL's single power-method step is exact, so the only difference
    # left is which rows enter max tau: ByzFL's result is the "all" variant.
    rng = np.random.default_rng(50 + seed)
    n = int(rng.integers(3, 10))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    x = rng.normal(size=(n, 1))
    np.testing.assert_allclose(byzfl.CAF(f)(x), caf_reference(x, np.ones(n), f, "all"), atol=1e-9)


def test_caf_vanishing_covariance_returns_the_clean_mean():
    # Iteration 1: mean 2.5, masses (8/9, 8/9, 8/9, 0); iteration 2: mean 0 with zero
    # covariance, the smallest eigenvalue seen. ByzFL divides by the zero power-method
    # vector there (NaN eigenvalue) and returns the first mean, 2.5.
    x = np.array([[0.0], [0.0], [0.0], [10.0]])
    assert caf(torch.tensor(x), f=1).item() == pytest.approx(0.0, abs=1e-12)
    with np.errstate(invalid="ignore"):
        assert byzfl.CAF(1)(x).item() == pytest.approx(2.5)


@pytest.mark.parametrize("seed", range(10))
def test_smea_agrees_with_byzfl_in_one_dimension(seed):
    # ByzFL estimates each subset's top eigenvalue with one power-method step from a fresh
    # random vector: exact for d = 1 (random for d > 1, where it is not comparable).
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(3, 10))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    x = rng.normal(size=(n, 1))
    np.testing.assert_allclose(smea(torch.tensor(x), f=f).numpy(), byzfl.SMEA(f)(x), atol=1e-12)


def test_smea_ties_are_averaged_where_byzfl_takes_the_first_subset():
    x = np.array([[0.0], [1.0], [2.0]])  # {0, 1} and {1, 2}: variance 1/4 each
    assert smea(torch.tensor(x), f=1).item() == pytest.approx(1.0)
    assert byzfl.SMEA(1)(x).item() == pytest.approx(0.5)
