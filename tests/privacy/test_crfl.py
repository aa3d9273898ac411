"""CRFL: the server step clips the global model's norm and noises its parameters; the
parameter-smoothing certificate abstains at p_A <= 1/2, its radius follows the paper's
formula, grows with p_A and with the clip-and-noise rounds after the attack, and certified
accuracy falls with the radius."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import beta

import fedkit
from fedkit.core.components import RoundContext
from privacy.mechanisms.crfl import (
    CRFL,
    CRFLBound,
    certified_accuracy,
    clopper_pearson_lower,
    crfl_certify,
    crfl_step,
)

BOUND = CRFLBound(
    noise_std=0.5,
    clip_norm=3.0,
    rounds=10,
    attack_round=5,
    attacker_weight=0.1,
    local_steps=4,
    lr=0.1,
    lipschitz=2.0,
    poison_fraction=0.25,
    f=2,
    scale=5.0,
)


def context(params: torch.Tensor, round: int = 1) -> RoundContext:
    return RoundContext(
        round=round, clients=torch.arange(3), num_clients=3, params=params, reference=None
    )


@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 30),
    rho=st.floats(0.1, 50.0),
    size=st.floats(0.01, 100.0),
)
def test_step_clips_the_new_model_into_the_ball(seed, d, rho, size):
    rng = np.random.default_rng(seed)
    params = torch.tensor(rng.normal(size=d) * size)
    agg = torch.tensor(rng.normal(size=d) * size)
    step = crfl_step(agg, params=params, clip_norm=rho, noise_std=0.0)
    new, old = params + step, params + agg
    assert float(new.norm()) <= rho * (1 + 1e-9)
    if float(old.norm()) <= rho:
        torch.testing.assert_close(step, agg, rtol=1e-12, atol=1e-12)
    else:  # scaled onto the sphere, same direction
        torch.testing.assert_close(new, old * (rho / old.norm()), rtol=1e-9, atol=1e-9)


def test_step_noise_is_gaussian_on_every_parameter_and_keyed():
    d = 50_000
    params = torch.full((d,), 0.01, dtype=torch.float64)
    agg = torch.zeros(d, dtype=torch.float64)
    clean = crfl_step(agg, params=params, clip_norm=100.0, noise_std=0.0)
    noisy = crfl_step(agg, params=params, clip_norm=100.0, noise_std=0.05, key=fedkit.key(0))
    assert float((noisy - clean).std()) == pytest.approx(0.05, rel=0.02)
    assert abs(float((noisy - clean).mean())) < 0.002
    same = crfl_step(agg, params=params, clip_norm=100.0, noise_std=0.05, key=fedkit.key(0))
    assert torch.equal(same, noisy)
    with pytest.raises(ValueError, match="key"):
        crfl_step(agg, params=params, clip_norm=1.0, noise_std=0.05)


def test_component_reads_the_global_model_and_stops_noise_at_the_final_round():
    d = 20
    params = torch.full((d,), 2.0, dtype=torch.float64)  # norm ≈ 8.9 > ρ = 5
    u = fedkit.core.keys.normal(fedkit.key(1), (3, d), dtype=torch.float64)
    chain = fedkit.chain(fedkit.Mean(), CRFL(clip_norm=5.0, noise_std=0.1, final_round=4))
    early, _, info = chain(u, None, chain.init(d), fedkit.key(2), context=context(params, 3))
    last, _, last_info = chain(u, None, chain.init(d), fedkit.key(2), context=context(params, 4))
    assert info["1.CRFL.noise_std"] == 0.1 and last_info["1.CRFL.noise_std"] == 0.0
    assert float((params + last).norm()) == pytest.approx(5.0)  # clipped, no noise
    assert float((params + early).norm()) != pytest.approx(5.0)  # noised
    assert info["1.CRFL.model_norm"] == pytest.approx(float((params + u.mean(0)).norm()))
    with pytest.raises(ValueError, match="context"):
        CRFL(clip_norm=1.0, noise_std=0.1)(u[0], None, (), fedkit.key(0))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="clip_norm"):
        CRFL(clip_norm=0.0, noise_std=0.1)
    with pytest.raises(ValueError, match="noise_std"):
        CRFL(clip_norm=1.0, noise_std=-1.0)
    with pytest.raises(ValueError, match="final_round"):
        CRFL(clip_norm=1.0, noise_std=0.1, final_round=0)
    with pytest.raises(ValueError, match="attack_round"):
        CRFLBound(
            noise_std=0.1, clip_norm=1.0, rounds=5, attack_round=5, attacker_weight=0.1,
            local_steps=1, lr=0.1, lipschitz=1.0, poison_fraction=0.5,
        )  # fmt: skip
    with pytest.raises(ValueError, match="attacker_weight"):
        CRFLBound(
            noise_std=0.1, clip_norm=1.0, rounds=5, attack_round=2, attacker_weight=(0.1, 0.2),
            local_steps=1, lr=0.1, lipschitz=1.0, poison_fraction=0.5, f=3,
        )  # fmt: skip


def test_radius_is_the_papers_formula():
    p_a = torch.tensor([0.9, 0.99], dtype=torch.float64)
    p_b = torch.tensor([0.05, 0.01], dtype=torch.float64)
    got = BOUND.radius(p_a, p_b, smoothing_std=0.4)
    # by hand, term by term (R = 2 attackers of weight 0.1 each, T = 10, t_adv = 5)
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    product = (2 * phi(3.0 / 0.5) - 1) ** 4 * (2 * phi(3.0 / 0.4) - 1)  # rounds 6-9, 10
    strength = 2 * 2 * (0.1**2 + 0.1**2) * 4**2 * 2.0**2 * 5.0**2 * 0.1**2 * 0.25**2
    for i in range(2):
        gap = (math.sqrt(p_a[i]) - math.sqrt(p_b[i])) ** 2
        want = math.sqrt(-math.log(1 - gap) * 0.5**2 / (strength * product))
        assert float(got[i]) == pytest.approx(want, rel=1e-12)


@given(p=st.lists(st.floats(0.0, 1.0 - 1e-9), min_size=2, max_size=20))
def test_radius_is_zero_up_to_one_half_and_grows_with_pa(p):
    p_a = torch.sort(torch.tensor(p, dtype=torch.float64)).values
    r = BOUND.radius(p_a, smoothing_std=0.5)
    assert bool((r[p_a <= 0.5] == 0).all())
    assert bool((r[p_a > 0.5] > 0).all())
    assert bool((r[1:] >= r[:-1]).all())


def test_radius_grows_with_rounds_after_the_attack_and_shrinks_with_its_strength():
    import attrs

    p_a = torch.tensor([0.8], dtype=torch.float64)
    base = float(BOUND.radius(p_a, smoothing_std=0.5)[0])
    later = attrs.evolve(BOUND, rounds=30)  # more clip + noise rounds wash the poison out
    assert float(later.radius(p_a, smoothing_std=0.5)[0]) > base
    stronger = attrs.evolve(BOUND, scale=10.0)
    assert float(stronger.radius(p_a, smoothing_std=0.5)[0]) == pytest.approx(base / 2)
    more = attrs.evolve(BOUND, f=4, attacker_weight=0.1)  # R Σp² grows 4x
    assert float(more.radius(p_a, smoothing_std=0.5)[0]) == pytest.approx(base / 2)


def test_clopper_pearson_lower_bound():
    k = torch.tensor([0, 1, 37, 100])
    lower = clopper_pearson_lower(k, 100, alpha=0.01)
    assert float(lower[0]) == 0.0
    assert float(lower[2]) == pytest.approx(beta.ppf(0.01, 37, 64))
    assert float(lower[3]) == pytest.approx(0.01 ** (1 / 100))  # k = n: α^(1/n)
    assert bool((lower <= k / 100).all())


# A tiny task: three classes in the plane, a linear classifier (params: a 2 × 3 matrix).
TEST_X = torch.tensor(
    [[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0], [0.3, 0.28], [2.0, 0.1], [0.05, 0.0], [1.0, 1.0]],
    dtype=torch.float64,
)
TEST_Y = torch.tensor([0, 1, 2, 0, 0, 1, 2])
PARAMS = torch.tensor([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5]], dtype=torch.float64).reshape(-1)


def predict(w: torch.Tensor) -> torch.Tensor:
    return torch.argmax(TEST_X @ w.reshape(2, 3), dim=1)


def certify(sigma=0.3, samples=400, **kw):
    return crfl_certify(
        predict,
        PARAMS,
        num_classes=3,
        smoothing_std=sigma,
        num_samples=samples,
        bound=BOUND,
        alpha=0.001,
        key=fedkit.key(5),
        **kw,
    )


def test_certificate_on_a_tiny_task():
    cert = certify()
    again = certify()
    assert torch.equal(cert.predictions, again.predictions) and torch.equal(cert.p_a, again.p_a)
    abstain = cert.p_a <= 0.5
    assert bool(abstain.any()) and bool((~abstain).any())  # both kinds among the examples
    assert bool((cert.predictions[abstain] == -1).all()) and bool((cert.radius[abstain] == 0).all())
    assert bool((cert.radius[~abstain] > 0).all())
    # far from every boundary the smoothed model keeps the plain model's answer
    far = torch.tensor([0, 1, 2])
    assert torch.equal(cert.predictions[far], predict(PARAMS)[far])
    # p_A is a lower bound: below the observed frequency of the predicted class
    top = cert.counts.max(dim=1).values.to(torch.float64) / 400
    assert bool((cert.p_a <= top).all())
    # the radius is the bound's at p_A, and grows with it
    torch.testing.assert_close(
        cert.radius[~abstain], BOUND.radius(cert.p_a[~abstain], smoothing_std=0.3)
    )
    order = torch.argsort(cert.p_a)
    assert bool((cert.radius[order][1:] >= cert.radius[order][:-1]).all())


def test_certified_accuracy_falls_with_the_radius():
    cert = certify()
    grid = torch.linspace(0.0, float(cert.radius.max()) * 1.1, 50)
    acc = cert.certified_accuracy(TEST_Y, grid)
    assert bool((acc[1:] <= acc[:-1]).all())
    correct = (cert.predictions == TEST_Y).to(torch.float64).mean()
    assert float(acc[0]) == pytest.approx(float(correct))  # radius 0: certified and correct
    assert float(acc[-1]) == 0.0
    hand = certified_accuracy(
        torch.tensor([0, 1, -1, 2]),
        torch.tensor([2.0, 1.0, 0.0, 3.0]),
        torch.tensor([0, 0, 2, 2]),
        [0.0, 1.5, 2.5, 4.0],
    )
    assert hand.tolist() == [0.5, 0.5, 0.25, 0.0]


def test_selection_samples_choose_the_class_separately():
    cert = certify(selection_samples=50)
    assert int(cert.counts.sum(dim=1)[0]) == 400  # counts come from the other samples only
    assert torch.equal(cert.predictions[:3], predict(PARAMS)[:3])
    with pytest.raises(ValueError, match="labels"):
        crfl_certify(
            lambda w: torch.tensor([0, 5]),
            PARAMS,
            num_classes=3,
            smoothing_std=0.1,
            num_samples=2,
            bound=BOUND,
            key=fedkit.key(0),
        )
