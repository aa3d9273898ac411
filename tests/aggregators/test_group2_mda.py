"""MDA: exact subset search, tie averaging, subset budget (ByzFL: test_group2_byzfl.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from group2_references import mda_reference

from fedkit.aggregators import mda


@pytest.mark.parametrize("seed", range(12))
def test_matches_mda_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 11))
    f = int(rng.integers(0, (n - 1) // 2 + 1))
    x = rng.normal(size=(n, int(rng.integers(1, 6))))
    w = rng.uniform(0.5, 3.0, size=n)
    expected, _ = mda_reference(x, w, f)
    np.testing.assert_allclose(
        mda(torch.tensor(x), torch.tensor(w), f=f).numpy(), expected, atol=1e-12
    )


def test_ties_are_averaged():
    # {0, 1} and {1, 2} both have diameter 1: their means 0.5 and 1.5 are averaged.
    assert mda(torch.tensor([[0.0], [1.0], [2.0]]), f=1).item() == pytest.approx(1.0)


def test_hand_example_drops_the_far_row():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0], [1.0, 1.0]])
    # Without row 3 the diameter is sqrt(2); every subset holding it is wider.
    torch.testing.assert_close(mda(x, f=1), torch.tensor([0.5, 0.5]))
    w = torch.tensor([1.0, 1.0, 1.0, 5.0, 3.0])
    torch.testing.assert_close(mda(x, w, f=1), torch.tensor([4.0, 4.0]) / 6)


def test_subset_budget_is_a_clear_error():
    x = torch.zeros(20, 2)
    with pytest.raises(ValueError, match=r"C\(20, 5\) = 15504 .* max_subsets=1000"):
        mda(x, f=5, max_subsets=1000)
    mda(x, f=5, max_subsets=15504)
    with pytest.raises(ValueError, match="max_subsets"):
        mda(x, f=1, max_subsets=0)


def test_non_finite_active_rows_are_a_clear_error():
    x = torch.zeros(5, 2)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        mda(x, f=1)
