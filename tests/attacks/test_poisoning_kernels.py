"""Model-poisoning kernels: shapes, determinism under keys, purity, hand computations."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import norm
from strategies import keys, updates

import fedkit
from attacks.poisoning import (
    alie,
    alie_z,
    fang_trimmed_mean,
    gaussian,
    ipm,
    mimic,
    mimic_target,
    min_max,
    min_sum,
    non_finite,
    optimal_alie,
    optimal_ipm,
    scaling,
    sign_flip,
)


def _median(u, w):
    return u.median(dim=0).values


KERNELS = {
    "sign_flip": sign_flip,
    "gaussian": functools.partial(gaussian, sigma=2.0),
    "gaussian_mean": functools.partial(gaussian, sigma=0.5, around_mean=True),
    "scaling": functools.partial(scaling, factor=-3.0),
    "alie": functools.partial(alie, num_clients=30),
    "alie_z": functools.partial(alie, z=1.5),
    "ipm": functools.partial(ipm, epsilon=0.5),
    "min_max_unit": min_max,
    "min_max_std": functools.partial(min_max, perturbation="std"),
    "min_sum_sign": functools.partial(min_sum, perturbation="sign"),
    "fang_trimmed_mean": fang_trimmed_mean,
    "fang_moments": functools.partial(fang_trimmed_mean, bounds="moments"),
    "mimic_pca": mimic,
    "mimic_random": functools.partial(mimic, index="random"),
    "non_finite": functools.partial(non_finite, kind="-inf", fraction=0.5),
    "optimal_alie": functools.partial(optimal_alie, aggregator=_median, grid=5, rounds=1),
    "optimal_ipm": functools.partial(optimal_ipm, aggregator=_median, grid=5, rounds=1),
}
KEYED = ("gaussian", "gaussian_mean", "fang_trimmed_mean", "fang_moments", "non_finite")


@pytest.mark.parametrize("name", sorted(KERNELS))
@given(honest=updates(min_n=2, max_n=8, max_d=12), b=st.integers(0, 4), k=keys)
def test_shape_dtype_determinism_and_purity(name, honest, b, k):
    before = honest.clone()
    out = KERNELS[name](honest, num_byzantine=b, key=k)
    again = KERNELS[name](honest, num_byzantine=b, key=k)
    assert out.shape == (b, honest.shape[1])
    assert out.dtype == honest.dtype
    torch.testing.assert_close(out, again, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(honest, before)


@pytest.mark.parametrize("name", KEYED)
def test_keyed_kernels_depend_on_the_key(name):
    honest = torch.as_tensor(np.random.default_rng(0).normal(size=(6, 40)))
    a = KERNELS[name](honest, num_byzantine=3, key=fedkit.key(1))
    b = KERNELS[name](honest, num_byzantine=3, key=fedkit.key(2))
    assert not torch.equal(a.nan_to_num(0.0, 1.0, -1.0), b.nan_to_num(0.0, 1.0, -1.0))


@given(honest=updates(min_n=1, max_n=8), b=st.integers(1, 4))
def test_sign_flip_scaling_and_ipm_are_multiples_of_the_mean(honest, b):
    mu = honest.mean(dim=0)
    for out, factor in (
        (sign_flip(honest, num_byzantine=b), -1.0),
        (scaling(honest, num_byzantine=b, factor=7.5), 7.5),
        (ipm(honest, num_byzantine=b, epsilon=0.3), -0.3),
    ):
        torch.testing.assert_close(out, (factor * mu).expand(b, -1))


def test_ipm_hand_computation():
    honest = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    out = ipm(honest, num_byzantine=2, epsilon=2.0)
    assert torch.equal(out, torch.tensor([[-8.0, -10.0, -12.0]] * 2))


@pytest.mark.parametrize(("n", "f"), [(10, 1), (10, 4), (50, 12), (25, 5), (7, 3)])
def test_alie_z_matches_the_paper_formula(n, f):
    s = np.floor(n / 2 + 1) - f
    assert alie_z(n, f) == pytest.approx(norm.ppf((n - s) / n), abs=1e-12)


def test_alie_z_rejects_a_byzantine_majority():
    with pytest.raises(ValueError, match="majority"):
        alie_z(10, 6)


@given(honest=updates(min_n=2, max_n=10, max_d=8), b=st.integers(1, 4), extra=st.integers(0, 5))
def test_alie_equals_hand_computation(honest, b, extra):
    n = honest.shape[0] + b + extra
    s = np.floor(n / 2 + 1) - b
    if s <= 0:
        with pytest.raises(ValueError):
            alie(honest, num_byzantine=b, num_clients=n)
        return
    z = norm.ppf((n - s) / n)
    g = honest.numpy()
    expected = g.mean(axis=0) - z * g.std(axis=0, ddof=1)
    out = alie(honest, num_byzantine=b, num_clients=n)
    np.testing.assert_allclose(out.numpy(), np.tile(expected, (b, 1)), rtol=1e-9, atol=1e-9)


def test_alie_default_counts_honest_rows_as_the_other_clients():
    honest = torch.as_tensor(np.random.default_rng(3).normal(size=(20, 5)))
    assert torch.equal(alie(honest, num_byzantine=5), alie(honest, num_byzantine=5, num_clients=25))
    given_z = alie(honest, num_byzantine=5, z=-2.0)
    torch.testing.assert_close(given_z[0], honest.mean(0) + 2.0 * honest.std(0))


def test_alie_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2"):
        alie(torch.ones(1, 3), num_byzantine=1)


def test_gaussian_statistics():
    honest = torch.full((4, 50), 3.0, dtype=torch.float64)
    zero = gaussian(honest, num_byzantine=200, sigma=2.0, key=fedkit.key(0))
    around = gaussian(honest, num_byzantine=200, sigma=2.0, around_mean=True, key=fedkit.key(0))
    assert abs(float(zero.mean())) < 0.05
    assert float(zero.std()) == pytest.approx(2.0, rel=0.03)
    torch.testing.assert_close(around, zero + 3.0)
    with pytest.raises(ValueError, match="key"):
        gaussian(honest, num_byzantine=1)


def test_non_finite_kinds():
    honest = torch.zeros(3, 10)
    assert torch.isnan(non_finite(honest, num_byzantine=2)).all()
    assert (non_finite(honest, num_byzantine=2, kind="inf") == float("inf")).all()
    part = non_finite(honest, num_byzantine=50, kind="inf", fraction=0.3, key=fedkit.key(4))
    hit = torch.isinf(part)
    assert (part[~hit] == 0).all() and (part[hit] > 0).all()
    assert float(hit.double().mean()) == pytest.approx(0.3, abs=0.05)
    with pytest.raises(ValueError, match="kind"):
        non_finite(honest, num_byzantine=1, kind="zero")


def test_mimic_pca_picks_the_row_furthest_along_the_top_direction():
    rng = np.random.default_rng(5)
    honest = torch.as_tensor(rng.normal(scale=0.1, size=(7, 6)))
    honest[4, 2] += 5.0  # row 4 dominates the variance
    assert mimic_target(honest) == 4
    out = mimic(honest, num_byzantine=3)
    assert torch.equal(out, honest[4].expand(3, -1))
    assert torch.equal(mimic(honest, num_byzantine=2, index=1), honest[1].expand(2, -1))
    with pytest.raises(ValueError, match="out of range"):
        mimic(honest, num_byzantine=1, index=7)


@given(honest=updates(min_n=1, max_n=8), k=keys)
def test_mimic_copies_an_honest_row(honest, k):
    out = mimic(honest, num_byzantine=2, index="random", key=k)
    assert any(torch.equal(out[0], row) for row in honest)
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(3), torch.zeros(0, 4), torch.zeros(3, 4, dtype=torch.int64), "rows"],
)
def test_bad_honest_input_is_rejected(bad):
    with pytest.raises((TypeError, ValueError)):
        sign_flip(bad, num_byzantine=1)


def test_bad_num_byzantine_is_rejected():
    with pytest.raises(ValueError, match="num_byzantine"):
        sign_flip(torch.zeros(3, 4), num_byzantine=-1)
    with pytest.raises(TypeError, match="num_byzantine"):
        sign_flip(torch.zeros(3, 4), num_byzantine=1.0)


def test_attack_values_mirror_their_kernels():
    """Config mirrors code: every field of an attack value is a parameter of its kernel."""
    import inspect

    import attrs

    import attacks.poisoning as poisoning

    values = [
        cls
        for cls in vars(poisoning).values()
        if isinstance(cls, type) and issubclass(cls, poisoning.Attack) and attrs.has(cls)
    ]
    assert len(values) == 16  # AdaptiveFlame and AdaptiveFoolsGold are the 15th and 16th
    for cls in values:
        params = inspect.signature(cls.kernel).parameters
        fields = {f.name for f in attrs.fields(cls)}
        assert fields <= set(params), cls.__name__
        assert fields | {"honest", "num_byzantine", "key", *cls.context} == set(params), cls


def test_attack_values_call_their_kernels():
    from attacks.poisoning import ALIE, IPM, Scaling

    honest = torch.as_tensor(np.random.default_rng(8).normal(size=(6, 3)))
    torch.testing.assert_close(
        ALIE()(honest, num_byzantine=2, num_clients=20),
        alie(honest, num_byzantine=2, num_clients=20),
    )
    torch.testing.assert_close(
        IPM(0.2)(honest, num_byzantine=1), ipm(honest, num_byzantine=1, epsilon=0.2)
    )
    torch.testing.assert_close(
        Scaling(3.0)(honest, num_byzantine=1), scaling(honest, num_byzantine=1, factor=3.0)
    )


def test_hydra_instantiates_an_adversary():
    from hydra.utils import instantiate

    from attacks import Backdoor, DataPoisoning, MinMax, ModelPoisoning, PixelTrigger

    adv = instantiate(
        {
            "_target_": "attacks.ModelPoisoning",
            "attack": {"_target_": "attacks.MinMax", "perturbation": "std"},
            "fraction": 0.2,
            "knowledge": "partial",
        }
    )
    assert adv == ModelPoisoning(MinMax(perturbation="std"), fraction=0.2, knowledge="partial")
    data = instantiate(
        {
            "_target_": "attacks.DataPoisoning",
            "poison": {
                "_target_": "attacks.Backdoor",
                "target": 7,
                "trigger": {"_target_": "attacks.PixelTrigger", "size": 2, "value": 0.5},
            },
            "num_byzantine": 3,
        }
    )
    assert data.poison == Backdoor(target=7, trigger=PixelTrigger(size=2, value=0.5))
    assert isinstance(data, DataPoisoning)
