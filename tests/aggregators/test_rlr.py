"""RLR: the per-coordinate sign vote against a NumPy reference, a backdoor coordinate pushed
by a minority is reversed, θ = 0 is FedAvg, absent rows, the component's report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import positive_weights, updates

import fedkit
from fedkit.aggregators import RLR, mean, rlr, rlr_round


def reference(x: np.ndarray, w: np.ndarray, threshold: int, lr: float) -> np.ndarray:
    """The paper's rule in NumPy: η_θ = ±η by |Σ sign|, times the weighted mean."""
    votes = np.abs(np.sign(x).sum(axis=0))
    rate = np.where(votes >= threshold, lr, -lr)
    return rate * (w[:, None] * x).sum(axis=0) / w.sum()


@given(
    u=updates(min_n=1, max_n=12, min_d=1, max_d=30),
    data=st.data(),
    threshold=st.integers(0, 14),
    lr=st.floats(0.01, 10.0),
)
def test_matches_the_rule(u, data, threshold, lr):
    u = torch.where(u.abs() < 2.0, torch.zeros_like(u), u)  # zeros: sign 0 abstains
    w = data.draw(positive_weights(len(u)))
    out, flipped = rlr_round(u, w, threshold=threshold, lr=lr)
    expected = reference(u.numpy(), w.numpy(), threshold, lr)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    votes = np.abs(np.sign(u.numpy()).sum(axis=0))
    assert flipped == int((votes < threshold).sum())


def test_a_coordinate_pushed_by_a_minority_moves_the_other_way():
    # 8 honest clients learn coordinates 0-3 together and are indifferent on coordinate 4
    # (half push it up, half down, a little); 2 attackers push coordinate 4 hard (a
    # backdoor). FedAvg follows the attackers there; RLR with θ = 3 > 2 attackers reverses
    # that coordinate and keeps the honest ones.
    rng = np.random.default_rng(0)
    honest = np.hstack(
        [1.0 + 0.1 * rng.normal(size=(8, 4)), 0.01 * np.tile([[1.0], [-1.0]], (4, 1))]
    )
    bad = np.hstack([np.ones((2, 4)), 5.0 * np.ones((2, 1))])
    x = torch.tensor(np.vstack([honest, bad]))
    plain = mean(x)
    out = rlr(x, threshold=3)
    assert plain[4] > 0 and out[4] < 0  # the backdoor direction is reversed
    torch.testing.assert_close(out[:4], plain[:4])  # agreed coordinates: FedAvg


@given(u=updates(min_n=1, max_n=10, min_d=1, max_d=20), data=st.data())
def test_threshold_zero_is_fedavg_and_above_n_reverses_everything(u, data):
    w = data.draw(positive_weights(len(u)))
    torch.testing.assert_close(rlr(u, w, threshold=0), mean(u, w), rtol=1e-12, atol=1e-12)
    flipped = rlr(u, w, threshold=len(u) + 1, lr=2.0)
    torch.testing.assert_close(flipped, -2.0 * mean(u, w), rtol=1e-12, atol=1e-12)


def test_absent_rows_do_not_vote():
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0], [float("nan"), 5.0], [1.0, -1.0]])
    w = torch.tensor([1.0, 1.0, 0.0, 2.0])
    out, flipped = rlr_round(x, w, threshold=2)
    # votes: coordinate 0 -> 3 (kept), coordinate 1 -> |-1| = 1 (< 2: reversed)
    assert flipped == 1
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5]))


def test_component_reports_flipped_coordinates_and_rejects_nobody():
    x = fedkit.core.keys.normal(fedkit.key(0), (6, 50), dtype=torch.float64)
    chain = fedkit.chain(RLR(threshold=4))
    out, _, info = chain(x, None, chain.init(50), fedkit.key(1))
    expected, flipped = rlr_round(x, threshold=4)
    assert torch.equal(out, expected)
    assert info["0.RLR.flipped"] == flipped > 0
    assert info["0.RLR.flipped_fraction"] == pytest.approx(flipped / 50)
    assert info["accepted"].all() and "rejected" not in info


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        RLR(threshold=-1)
    with pytest.raises(ValueError, match="threshold"):
        RLR(threshold=2.5)
    with pytest.raises(ValueError, match="lr"):
        RLR(threshold=2, lr=0.0)
    with pytest.raises(ValueError, match="NaN"):
        rlr(torch.tensor([[1.0, float("inf")]]), threshold=1)
