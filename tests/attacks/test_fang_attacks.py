"""Fang et al. 2020: the Krum-tailored attack makes Krum pick a Byzantine row; the trimmed
mean / median attack puts values beyond the honest extremes, against the honest direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys, updates

import fedkit
from attacks.poisoning import fang_krum, fang_krum_bound, fang_trimmed_mean
from fedkit.aggregators.krum import krum_scores


def _honest(seed, h=10, d=20, loc=1.0, scale=0.5):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.normal(loc, scale, size=(h, d)))


@pytest.mark.parametrize("center", ["global", "mean"])
def test_fang_krum_bound_hand_computation(center):
    honest = _honest(0, h=7, d=5)
    g = honest.numpy()
    c = 2
    m, d = len(g) + c, g.shape[1]
    origin = np.zeros(d) if center == "global" else g.mean(axis=0)
    dist = np.sqrt(((g[:, None] - g[None]) ** 2).sum(axis=2))
    sums = [np.sort(np.delete(dist[i], i))[: m - c - 2].sum() for i in range(len(g))]
    expected = min(sums) / ((m - 2 * c - 1) * math.sqrt(d))
    expected += np.linalg.norm(g - origin, axis=1).max() / math.sqrt(d)
    assert fang_krum_bound(honest, c, center) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("seed", "b"), [(0, 2), (1, 3), (2, 1), (3, 4)])
@pytest.mark.parametrize("center", ["global", "mean"])
def test_fang_krum_makes_krum_select_a_byzantine_row(seed, b, center):
    # stochastic-gradient-like rows (spread >> mean) for the paper's start at the global
    # model; a mean-dominated cluster for the start at the honest mean
    loc, scale = (0.2, 1.0) if center == "global" else (1.0, 0.5)
    honest = _honest(seed, d=50, loc=loc, scale=scale)
    rows = fang_krum(honest, num_byzantine=b, center=center)
    scores = krum_scores(torch.cat([honest, rows]), None, f=b)
    assert int(torch.argmin(scores)) >= honest.shape[0]
    # the rows move from the origin against the honest direction: o - λ·sign(μ), λ > 0
    origin = torch.zeros(50, dtype=torch.float64) if center == "global" else honest.mean(0)
    s = torch.sign(honest.mean(0))
    lam = float(-((rows[0] - origin) @ s) / (s @ s))
    assert lam > 0
    torch.testing.assert_close(rows, (origin - lam * s).expand(b, -1))


def test_fang_krum_radius_spreads_the_other_rows():
    honest = _honest(4)
    rows = fang_krum(honest, num_byzantine=3, radius=0.01, key=fedkit.key(0))
    offsets = torch.linalg.vector_norm(rows[1:] - rows[0], dim=1)
    torch.testing.assert_close(offsets, torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.equal(rows, fang_krum(honest, num_byzantine=3, radius=0.01, key=fedkit.key(0)))
    with pytest.raises(ValueError, match="key"):
        fang_krum(honest, num_byzantine=3, radius=0.01)


def test_fang_krum_is_pure_and_deterministic():
    honest = _honest(5)
    before = honest.clone()
    assert torch.equal(fang_krum(honest, num_byzantine=2), fang_krum(honest, num_byzantine=2))
    assert torch.equal(honest, before)


@given(honest=updates(min_n=1, max_n=8, max_d=10), b=st.integers(1, 4), k=keys)
def test_fang_trimmed_mean_values_lie_beyond_the_honest_extremes(honest, b, k):
    rows = fang_trimmed_mean(honest, num_byzantine=b, scale=2.0, key=k)
    mu, top, bottom = honest.mean(0), honest.amax(0), honest.amin(0)
    up = mu < 0
    hi_up = torch.where(top > 0, 2 * top, top / 2)
    lo_down = torch.where(bottom > 0, bottom / 2, 2 * bottom)
    for row in rows:
        assert torch.all(~up | ((row >= top) & (row <= hi_up)))
        assert torch.all(up | ((row <= bottom) & (row >= lo_down)))


@given(honest=updates(min_n=2, max_n=8, max_d=10), k=keys)
def test_fang_trimmed_mean_moment_bounds(honest, k):
    rows = fang_trimmed_mean(honest, num_byzantine=3, bounds="moments", key=k)
    mu, sigma = honest.mean(0), honest.std(0)
    eps = 1e-9 * (1 + mu.abs() + sigma)
    up = mu < 0
    dev = (rows - mu) / torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    pos = sigma > 0
    assert torch.all(~(up & pos) | ((dev >= 3 - 1e-9) & (dev <= 4 + 1e-9)))
    assert torch.all(~(~up & pos) | ((dev <= -3 + 1e-9) & (dev >= -4 - 1e-9)))
    assert torch.all(pos | ((rows - mu).abs() <= eps))


def test_fang_trimmed_mean_pushes_the_median_against_the_honest_direction():
    honest = _honest(6, h=9, d=30, loc=0.5, scale=1.0)
    rows = fang_trimmed_mean(honest, num_byzantine=4, key=fedkit.key(1))
    before = torch.median(honest, dim=0).values
    after = torch.median(torch.cat([honest, rows]), dim=0).values
    s = torch.sign(honest.mean(0))
    assert float(((after - before) * s).sum()) < 0


def test_fang_trimmed_mean_rejects_bad_parameters():
    honest = _honest(7)
    with pytest.raises(ValueError, match="scale"):
        fang_trimmed_mean(honest, num_byzantine=1, scale=0.5, key=fedkit.key(0))
    with pytest.raises(ValueError, match="bounds"):
        fang_trimmed_mean(honest, num_byzantine=1, bounds="quantiles", key=fedkit.key(0))
    with pytest.raises(ValueError, match="key"):
        fang_trimmed_mean(honest, num_byzantine=1)


def test_fang_krum_adversary_wins_a_krum_round():
    from attacks import FangKrum, ModelPoisoning
    from fedkit.aggregators.krum import krum

    updates = _honest(8, h=13, d=50, loc=0.2, scale=1.0)
    byz = torch.zeros(13, dtype=torch.bool)
    byz[[0, 6, 11]] = True
    adv = ModelPoisoning(FangKrum(), num_byzantine=3)
    out = adv.poison_updates(updates, byz, None, 0, fedkit.key(0))
    chosen = krum(out, None, f=3)
    assert any(torch.equal(chosen, out[i]) for i in (0, 6, 11))
