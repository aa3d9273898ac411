"""Noise calibration of the central and local mechanisms (fixed keys: deterministic)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from strategies import keys

import fedkit
from privacy.mechanisms import (
    GaussianNoise,
    LocalDP,
    gaussian_noise,
    gaussian_noise_std,
    laplace,
    local_dp,
    local_dp_epsilon,
)

DRAWS = 200  # keys
DIM = 500  # coordinates per draw: 100k samples in all


def _draws(fn) -> np.ndarray:
    root = fedkit.key(20240601)
    return torch.cat([fn(fedkit.fold_in(root, i)).reshape(-1) for i in range(DRAWS)]).numpy()


@pytest.mark.parametrize(("z", "c", "m"), [(1.0, 1.0, 10.0), (0.7, 3.0, 25.0), (2.5, 0.1, 4.0)])
def test_gaussian_noise_has_std_z_c_over_m(z, c, m):
    comp = GaussianNoise(noise_multiplier=z, clip_norm=c, expected_clients=m)
    base = torch.zeros(DIM, dtype=torch.float64)
    noise = _draws(lambda k: comp(base, torch.ones(3), (), k)[0])
    std = z * c / m
    assert abs(noise.std() / std - 1) < 0.02  # 100k samples: rel. s.e. ≈ 0.22 %
    assert abs(noise.mean()) < 4 * std / math.sqrt(noise.size)
    assert stats.kstest(noise / std, "norm").pvalue > 1e-3


def test_gaussian_noise_is_keyed_and_centred_on_the_aggregate():
    agg = torch.arange(6, dtype=torch.float32)
    kw = {"noise_multiplier": 1.0, "clip_norm": 1.0, "expected_clients": 2.0}
    a = gaussian_noise(agg, key=fedkit.key(1), **kw)
    assert torch.equal(a, gaussian_noise(agg, key=fedkit.key(1), **kw))
    assert not torch.equal(a, gaussian_noise(agg, key=fedkit.key(2), **kw))
    assert a.dtype == agg.dtype
    off = gaussian_noise(agg, key=fedkit.key(1), **{**kw, "noise_multiplier": 0.0})
    assert torch.equal(off, agg)
    _, _, info = GaussianNoise(**kw)(agg, torch.ones(2), (), fedkit.key(1))
    assert info["noise_std"] == 0.5 == gaussian_noise_std(**kw)
    with pytest.raises(ValueError, match="needs a key"):
        gaussian_noise(agg, key=None, **kw)


def test_local_gaussian_noise_per_coordinate_std_is_z_c():
    comp = LocalDP(clip_norm=2.0, noise_multiplier=0.5, mechanism="gaussian")
    rows = torch.zeros(4, DIM // 4, dtype=torch.float64)
    noise = _draws(lambda k: comp(rows, torch.ones(4), (), k)[0][0])
    assert abs(noise.std() / 1.0 - 1) < 0.02
    assert stats.kstest(noise, "norm").pvalue > 1e-3


def test_laplace_sampler_and_local_laplace_scale():
    b = 0.3
    draws = _draws(lambda k: laplace(k, (DIM,), scale=b))
    assert abs(draws.std() / (b * math.sqrt(2)) - 1) < 0.02
    assert abs(np.abs(draws).mean() / b - 1) < 0.02  # E|X| = b
    assert stats.kstest(draws / b, "laplace").pvalue > 1e-3
    comp = LocalDP(clip_norm=1.5, noise_multiplier=0.2, mechanism="laplace")
    rows = torch.zeros(2, DIM // 2, dtype=torch.float64)
    noise = _draws(lambda k: comp(rows, torch.ones(2), (), k)[0][0])
    assert stats.kstest(noise / 0.3, "laplace").pvalue > 1e-3


@given(keys, st.sampled_from(["gaussian", "laplace"]))
def test_local_dp_clips_before_noising(k, mechanism):
    rng = np.random.default_rng(0)
    u = torch.as_tensor(rng.normal(0, 10, size=(5, 8)))
    clipped_only, scale = local_dp(
        u, clip_norm=1.0, noise_multiplier=0.0, mechanism=mechanism, key=k
    )
    p = 2 if mechanism == "gaussian" else 1
    assert torch.all(torch.linalg.vector_norm(clipped_only, ord=p, dim=1) <= 1.0 + 1e-12)
    assert torch.all(scale < 1)
    noised, _ = local_dp(u, clip_norm=1.0, noise_multiplier=1.0, mechanism=mechanism, key=k)
    assert not torch.equal(noised, clipped_only)


def test_local_dp_epsilon():
    assert local_dp_epsilon(4.0, "laplace") == 0.5  # 2C / (zC)
    assert local_dp_epsilon(0.0, "gaussian", 1e-5) == math.inf
    for z, delta in [(1.0, 1e-5), (3.0, 1e-6), (10.0, 1e-3)]:
        eps = local_dp_epsilon(z, "gaussian", delta)
        mu = 2.0 / z  # Δ/σ with Δ = 2C, σ = zC
        got = stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu)
        assert got == pytest.approx(delta, rel=1e-6)
    # more noise, less ε; smaller δ, more ε
    assert local_dp_epsilon(2.0, "gaussian", 1e-5) < local_dp_epsilon(1.0, "gaussian", 1e-5)
    assert local_dp_epsilon(1.0, "gaussian", 1e-7) > local_dp_epsilon(1.0, "gaussian", 1e-5)
    with pytest.raises(ValueError, match="delta"):
        local_dp_epsilon(1.0, "gaussian", 0.0)
    with pytest.raises(ValueError, match="mechanism"):
        LocalDP(clip_norm=1.0, noise_multiplier=1.0, mechanism="cauchy")
