"""SMEA: exact subset search on the Gram matrix, ties, weights (ByzFL: test_group2_byzfl.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from group2_references import smea_reference

from fedkit.aggregators import smea


@pytest.mark.parametrize("seed", range(12))
def test_matches_smea_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 10))
    f = int(rng.integers(0, (n - 1) // 2 + 1))
    x = rng.normal(size=(n, int(rng.integers(1, 7))))
    x[:f] *= 5
    w = rng.uniform(0.5, 3.0, size=n)
    ours = smea(torch.tensor(x), torch.tensor(w), f=f).numpy()
    np.testing.assert_allclose(ours, smea_reference(x, w, f), atol=1e-9)


def test_ties_are_averaged():
    # {0, 1} and {1, 2}: variance 1/4 each; their means 0.5 and 1.5 are averaged.
    assert smea(torch.tensor([[0.0], [1.0], [2.0]]), f=1).item() == pytest.approx(1.0)


def test_hand_example_prefers_the_flat_subset():
    # Rows 0-2 lie on a line of spread 1 in x; row 3 is 4 units off in y. Every subset
    # holding row 3 has top eigenvalue >= 3; {0, 1, 2} has 2/3.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [1.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(smea(x, f=1), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_a_heavy_outlier_cannot_buy_its_way_in():
    # With a weighted covariance, a subset dominated by one heavy far row would look tight.
    x = torch.tensor([[0.0], [1.0], [2.0], [100.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 1.0, 1.0, 1e6], dtype=torch.float64)
    assert smea(x, w, f=1).item() == pytest.approx(1.0)


def test_subset_budget_is_a_clear_error():
    with pytest.raises(ValueError, match=r"C\(30, 4\) = 27405"):
        smea(torch.zeros(30, 2), f=4, max_subsets=1000)
