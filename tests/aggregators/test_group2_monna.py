"""MoNNA: nearest neighbours of the pivot, boundary ties, errors (ByzFL: test_group2_byzfl.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import permutations, positive_weights, updates

from fedkit.aggregators import monna


@given(data=st.data(), u=updates(min_n=3, max_n=10))
def test_permuting_rows_with_the_pivot_changes_nothing(data, u):
    n = u.shape[0]
    w = data.draw(positive_weights(n))
    perm = data.draw(permutations(n))
    pivot = data.draw(st.integers(0, n - 1))
    f = (n - 1) // 2
    moved = int(torch.nonzero(perm == pivot)[0, 0])
    torch.testing.assert_close(
        monna(u[perm], w[perm], f=f, pivot=moved), monna(u, w, f=f, pivot=pivot)
    )


def test_hand_example():
    x = torch.tensor([[0.0], [1.0], [-2.0], [50.0], [3.0]])
    # 3 nearest of row 0: rows 0, 1, -2
    assert monna(x, f=2, pivot=0).item() == pytest.approx(-1 / 3)
    # weighted: (1*0 + 2*1 + 1*-2) / 4
    assert monna(x, torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0]), f=2).item() == pytest.approx(0.0)
    # around row 4 = 3: rows 4 (0), 1 (2), 0 (3)
    assert monna(x, f=2, pivot=4).item() == pytest.approx(4 / 3)
    assert monna(x, f=2, pivot=-1).item() == pytest.approx(4 / 3)


def test_boundary_ties_share_the_last_place():
    # Rows 1 and 2 are both at distance 1 from the pivot; two places: the pivot and half of
    # each.
    assert monna(torch.tensor([[0.0], [1.0], [-1.0]]), f=1).item() == pytest.approx(0.0)


def test_pivot_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="pivot"):
        monna(x, f=1, pivot=4)
    with pytest.raises(ValueError, match="pivot"):
        monna(x, f=1, pivot=1.0)
    with pytest.raises(ValueError, match="weight 0"):
        monna(x, torch.tensor([1.0, 0.0, 1.0, 1.0]), f=1, pivot=1)
