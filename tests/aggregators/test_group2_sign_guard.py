"""SignGuard: norm filter, sign clustering, clipping, keys, hand examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from strategies import keys, updates

import fedkit
from fedkit.aggregators import sign_guard


@given(u=updates(min_n=2, max_n=10, min_d=4), k=keys)
def test_same_key_same_output(u, k):
    assert torch.equal(sign_guard(u, key=k, coord_frac=0.5), sign_guard(u, key=k, coord_frac=0.5))


def test_sign_features_exclude_a_flipped_minority():
    # Honest rows are mostly positive; two attackers are mostly negative with a similar
    # norm (so the norm filter alone keeps them).
    rng = np.random.default_rng(0)
    honest = np.abs(rng.normal(size=(7, 400))) * np.where(rng.random((7, 400)) < 0.9, 1, -1)
    attack = -np.abs(rng.normal(size=(2, 400)))
    x = torch.tensor(np.vstack([attack, honest]))
    out = sign_guard(x, coord_frac=1.0)
    norms = x.norm(dim=1)
    median = norms.median()  # odd count: the middle norm
    scale = torch.clamp(median / norms, max=1.0)
    torch.testing.assert_close(out, (x[2:] * scale[2:, None]).mean(0))


def test_norm_filter_and_clipping_hand_example():
    # All rows positive (one sign cluster). Norms 1, 2, 3, 4, 100: median 3; row 4 fails
    # the upper bound 3 * 3; rows 2, 3 are clipped to norm 3.
    x = torch.tensor(
        [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [100.0, 0.0]], dtype=torch.float64
    )
    assert sign_guard(x, coord_frac=1.0)[0].item() == pytest.approx((1 + 2 + 3 + 3) / 4)
    # lower = 0.5: row 0 (1 < 1.5) also goes
    assert sign_guard(x, lower=0.5, coord_frac=1.0)[0].item() == pytest.approx((2 + 3 + 3) / 3)


def test_nothing_kept_gives_the_zero_vector():
    # The largest sign cluster {0, 1} (all positive) has tiny norms, below 0.1 * median.
    x = torch.tensor(
        [[1e-3, 1e-3], [1e-3, 1e-3], [1.0, -1.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64
    )
    out = sign_guard(x, coord_frac=1.0, bandwidth=0.01)
    assert torch.equal(out, torch.zeros(2, dtype=torch.float64))


def test_needs_a_key_only_when_sampling():
    x = torch.ones(4, 20)
    with pytest.raises(ValueError, match="needs a key"):
        sign_guard(x)
    sign_guard(x, coord_frac=1.0)
    sign_guard(x, key=fedkit.key(0))


def test_bad_hyperparameters():
    x = torch.ones(4, 20)
    k = fedkit.key(0)
    with pytest.raises(ValueError, match="lower"):
        sign_guard(x, lower=2.0, upper=1.0, key=k)
    with pytest.raises(ValueError, match="coord_frac"):
        sign_guard(x, coord_frac=0.0, key=k)
    with pytest.raises(ValueError, match="bandwidth"):
        sign_guard(x, bandwidth=-1.0, key=k)
