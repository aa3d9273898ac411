"""Adaptive clipping (Andrew et al. 2021): formulas, state handling, convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fedkit
from privacy.mechanisms import (
    AdaptiveClip,
    AdaptiveClipMean,
    FixedMean,
    UniformWeights,
    adaptive_clip_mean,
    clip_rows,
    next_clip_norm,
    split_noise_multiplier,
    unclipped_fraction,
)


def _rows_with_norms(norms: np.ndarray, d: int = 4, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(len(norms), d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return torch.as_tensor(dirs * norms[:, None])


def test_noise_split_hand_example():
    # z = 1, σ_b = 100/20 = 5: z_Δ = (1 − 1/100)^(-1/2)
    assert split_noise_multiplier(1.0, 5.0) == pytest.approx((1 - 0.01) ** -0.5)
    # the two releases together cost one Gaussian mechanism with multiplier z
    z, sb = 0.8, 2.0
    zd = split_noise_multiplier(z, sb)
    assert zd**-2 + (2 * sb) ** -2 == pytest.approx(z**-2)
    assert split_noise_multiplier(0.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="count_noise_std must exceed"):
        split_noise_multiplier(2.0, 1.0)


def test_fraction_and_update_hand_example():
    unclipped = torch.tensor([True, True, True, False, True])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])  # the last client is excluded
    b = unclipped_fraction(unclipped, w, count_noise_std=0.0, expected_clients=4.0, key=None)
    assert float(b) == pytest.approx(0.75)  # (3·½ − ½)/4 + ½
    c = next_clip_norm(torch.tensor(1.0, dtype=torch.float64), b, target_quantile=0.5, clip_lr=0.2)
    assert float(c) == pytest.approx(math.exp(-0.2 * 0.25))


@pytest.mark.parametrize("quantile", [0.5, 0.9])
def test_clip_norm_moves_to_the_target_quantile(quantile):
    norms = np.linspace(1.0, 10.0, 100)
    u = _rows_with_norms(norms)
    comp = AdaptiveClip(
        target_quantile=quantile,
        clip_lr=0.2,
        initial_clip=0.1,
        count_noise_std=1.0,
        expected_clients=100.0,
    )
    state = comp.init(u.shape[1])
    root = fedkit.key(7)
    fractions = []
    for r in range(200):
        (_, _), state, _info = comp(
            u, torch.ones(100, dtype=u.dtype), state, fedkit.fold_in(root, r)
        )
        if r >= 150:
            fractions.append(float((norms <= float(state)).mean()))
    assert abs(np.mean(fractions) - quantile) < 0.05
    assert float(state) == pytest.approx(np.quantile(norms, quantile), rel=0.1)


def test_adaptive_clip_keeps_the_clip_norm_in_state_only():
    comp = AdaptiveClip(initial_clip=1.0)
    u = _rows_with_norms(np.array([0.5, 2.0, 3.0]))
    s0 = comp.init(4)
    (out, _w), s1, info = comp(u, None, s0, None)
    assert float(s0) == 1.0 and comp.initial_clip == 1.0  # nothing mutated
    assert torch.equal(info["clipped"], torch.tensor([False, True, True]))
    assert float(info["clip_norm"]) == 1.0
    torch.testing.assert_close(out, clip_rows(u, clip_norm=1.0)[0])
    # b = 1/3 unclipped, target ½: the norm grows
    assert float(s1) == pytest.approx(math.exp(-0.2 * (1 / 3 - 0.5)))
    with pytest.raises(ValueError, match="positive 0-d clip norm"):
        comp(u, None, torch.tensor(-1.0), None)


def test_adaptive_clip_mean_without_noise_is_the_clipped_fixed_mean():
    u = _rows_with_norms(np.array([0.5, 2.0, 3.0, 1.0]))
    comp = AdaptiveClipMean(noise_multiplier=0.0, expected_clients=5.0, initial_clip=1.5)
    chain = fedkit.chain(UniformWeights(), comp)
    out, (_, c1), _info = chain(u, torch.tensor([3.0, 1.0, 2.0, 0.0]), None, fedkit.key(0))
    w = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=u.dtype)
    expected = FixedMean(expected_weight=5.0)(clip_rows(u, w, clip_norm=1.5)[0], w, (), None)[0]
    torch.testing.assert_close(out, expected)
    # exact count: 1 of 3 active unclipped, m = 5: b = (1/2 − 2/2)/5 + 1/2 = 0.4
    assert float(c1) == pytest.approx(1.5 * math.exp(-0.2 * (0.4 - 0.5)))


def test_adaptive_clip_mean_noise_std_uses_the_split_multiplier():
    m, z = 20.0, 1.0
    comp = AdaptiveClipMean(noise_multiplier=z, expected_clients=m, initial_clip=2.0)
    u = torch.zeros(10, 2000, dtype=torch.float64)
    out, _, info = comp(u, torch.ones(10, dtype=u.dtype), comp.init(2000), fedkit.key(3))
    zd = split_noise_multiplier(z, m / 20)
    assert info["noise_std"] == pytest.approx(zd * 2.0 / m)
    assert float(out.std()) == pytest.approx(zd * 2.0 / m, rel=0.05)
    with pytest.raises(ValueError, match="needs a key"):
        adaptive_clip_mean(
            u, None, torch.tensor(1.0), noise_multiplier=1.0, expected_clients=m, key=None
        )
    with pytest.raises(ValueError, match="count_noise_std must exceed"):
        AdaptiveClipMean(noise_multiplier=4.0, expected_clients=20.0, count_noise_std=1.0)
