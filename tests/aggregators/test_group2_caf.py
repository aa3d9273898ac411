"""CAF: the Gram-matrix filter against a dense reference, termination, weights, hand
examples (agreement with ByzFL: test_group2_byzfl.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from group2_references import caf_reference

from fedkit.aggregators import caf


@pytest.mark.parametrize("seed", range(15))
def test_matches_the_dense_caf_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    x = rng.normal(size=(n, int(rng.integers(1, 8))))
    x[:f] += 10 * rng.normal(size=(f, x.shape[1]))
    w = rng.uniform(0.5, 3.0, size=n)
    ours = caf(torch.tensor(x), torch.tensor(w), f=f).numpy()
    np.testing.assert_allclose(ours, caf_reference(x, w, f, "live"), atol=1e-9)


def test_a_removed_outlier_does_not_stall_the_filter():
    # With max tau over all rows, the removed 1e6 keeps dominating and the remaining masses
    # shrink by ~1e-12 per iteration (ByzFL would loop ~1e11 times); here row 4 goes first,
    # then the loop ends after one more iteration on the others.
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [1e6]], dtype=torch.float64)
    out = caf(x, f=1).item()
    assert 0.0 <= out <= 3.0
    assert out == pytest.approx(caf_reference(x.numpy(), np.ones(5), 1, "live").item())


def test_vanishing_covariance_returns_the_clean_mean():
    # Iteration 1: mean 2.5, masses (8/9, 8/9, 8/9, 0); iteration 2: mean 0 with zero
    # covariance, the smallest eigenvalue seen.
    x = torch.tensor([[0.0], [0.0], [0.0], [10.0]], dtype=torch.float64)
    assert caf(x, f=1).item() == pytest.approx(0.0, abs=1e-12)


def test_a_heavy_outlier_cannot_buy_its_way_in():
    # The filter treats rows alike: a Byzantine row claiming most of the weight is still
    # removed first (weighting the covariance would make the honest rows look like outliers).
    x = torch.tensor([[3.5e5], [-1.3], [6.4]], dtype=torch.float64)
    w = torch.tensor([6.5, 3.1, 0.9], dtype=torch.float64)
    out = caf(x, w, f=1).item()
    assert out == pytest.approx(caf_reference(x.numpy(), w.numpy(), 1, "live").item())
    assert out == pytest.approx((3.1 * -1.3 + 0.9 * 6.4) / 4.0, rel=1e-3)  # row 0 gone


def test_f_zero_is_the_weighted_mean():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(caf(x, w, f=0), (w @ x) / 4)


def test_symmetric_hand_example():
    # Iteration 1: mean 0, tau = (1, 0, 1): rows 0 and 2 lose all mass, 1 <= n - 2f stops.
    x = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(caf(x, f=1), torch.zeros(2, dtype=torch.float64))
