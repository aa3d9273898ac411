"""DnC: keys, the intersection of kept sets, hand examples, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from strategies import keys, updates

import fedkit
from fedkit.aggregators import dnc


@given(u=updates(min_n=3, max_n=10, min_d=4), k=keys)
def test_same_key_same_output(u, k):
    f = (u.shape[0] - 1) // 2
    assert torch.equal(dnc(u, f=f, sub_dim=2, key=k), dnc(u, f=f, sub_dim=2, key=k))


def test_different_keys_can_differ():
    # Row 0 is an outlier on coordinate 0 only, row 1 on coordinate 1 only: a round that
    # samples one coordinate removes one of them, so the result depends on the draws.
    x = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.1, 0.2], [0.3, -0.1], [-0.2, 0.1]])
    outs = {tuple(dnc(x, f=1, iters=1, sub_dim=1, key=fedkit.key(s)).tolist()) for s in range(12)}
    assert len(outs) == 2


def test_kept_sets_are_intersected():
    # Enough rounds to sample both coordinates: rows 4 and 5 are each removed in some round,
    # so neither is averaged (Blades' union would keep both).
    x = torch.tensor(
        [[0.0, 0.0], [1.0, 1.0], [-1.0, -1.0], [0.5, -0.5], [100.0, 0.0], [0.0, 100.0]],
        dtype=torch.float64,
    )
    out = dnc(x, f=1, iters=20, sub_dim=1, key=fedkit.key(0))
    torch.testing.assert_close(out, torch.tensor([0.125, -0.125], dtype=torch.float64))


def test_hand_example_without_sampling():
    # sub_dim >= d: every coordinate, no key needed. Scores (x - 3.25)^2: row 3 is dropped.
    x = torch.tensor([[0.0], [1.0], [2.0], [10.0]], dtype=torch.float64)
    assert dnc(x, f=1, sub_dim=5).item() == pytest.approx(1.0)
    w = torch.tensor([1.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    assert dnc(x, w, f=1, sub_dim=5).item() == pytest.approx(5.0 / 4.0)
    assert dnc(x, f=1, sub_dim=5, filter_multiplier=0.0).item() == pytest.approx(13.0 / 4.0)


def test_filter_frac_scales_how_many_rows_go():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(9, 3)))
    x[:2] += 50.0
    x[2] -= 30.0
    # f = 2, filter_multiplier 1.5: three rows go each round
    out = dnc(x, f=2, sub_dim=3, filter_multiplier=1.5)
    torch.testing.assert_close(out, x[3:].mean(0))


def test_errors():
    x = torch.zeros(5, 10)
    with pytest.raises(ValueError, match="needs a key"):
        dnc(x, f=1, sub_dim=3)
    with pytest.raises(ValueError, match="iters"):
        dnc(x, f=1, iters=0, key=fedkit.key(0))
    with pytest.raises(ValueError, match="sub_dim"):
        dnc(x, f=1, sub_dim=0, key=fedkit.key(0))
    with pytest.raises(ValueError, match="filter_multiplier"):
        dnc(x, f=1, filter_multiplier=-0.5, key=fedkit.key(0))
    with pytest.raises(ValueError, match="remove all"):
        dnc(x, f=2, filter_multiplier=3.0, key=fedkit.key(0))
