"""Attacks adapted to a defense: AdaptiveFlame's rows are admitted by FLAME where the plain
attack's are rejected, AdaptiveFoolsGold's sybils keep FoolsGold weight where identical
sybils lose it, and both measure their strength in units of the benign spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import updates

from attacks import (
    AdaptiveFlame,
    AdaptiveFoolsGold,
    CombinedPoisoning,
    ModelPoisoning,
    adaptive_flame,
    adaptive_foolsgold,
    attack_directions,
    benign_spread,
    ipm,
    poison_rows,
    sybil_directions,
)
from attacks.poisoning.adaptive import GRID
from fedkit.aggregators import FLAME
from fedkit.core.components import RoundContext
from fedkit.filters.foolsgold import FoolsGold

seeds = st.integers(0, 2**31 - 1)
directions = st.sampled_from(["ipm", "alie", "own"])


def _own(honest: torch.Tensor, b: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return honest.mean(0) + torch.as_tensor(
        rng.normal(size=(b, honest.shape[1])), dtype=honest.dtype
    )


# ---------------------------------------------------------------- the benign spread


@given(u=updates(min_n=1, max_n=10), k=st.floats(0.0, 50.0), shift=st.floats(-5.0, 5.0))
def test_spread_is_the_median_distance_to_the_mean_and_scales_with_the_rows(u, k, shift):
    mu = u.mean(0)
    expected = float((u - mu).norm(dim=1).median())
    assert benign_spread(u) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    moved = mu + shift + k * (u - mu)  # translate, and widen the crowd by k
    assert benign_spread(moved) == pytest.approx(k * expected, rel=1e-7, abs=1e-7)


@settings(max_examples=25)
@given(
    u=updates(min_n=2, max_n=10, min_d=3),
    direction=directions,
    k=st.floats(0.05, 20.0),
    strength=st.floats(0.0, 4.0),
    beta=st.floats(0.0, 1.0),
    seed=seeds,
)
def test_the_same_strength_means_the_same_thing_at_any_heterogeneity(
    u, direction, k, strength, beta, seed
):
    """Widening the benign crowd by ``k`` around its mean (IID vs label skew) widens the
    attack's displacement by exactly ``k``: strength is in units of the spread."""
    b = 3
    mu = u.mean(0)
    own = _own(u, b, seed)
    wide, wide_own = mu + k * (u - mu), mu + k * (own - mu)
    kw = {"num_byzantine": b, "direction": direction, "strength": strength, "diversity": beta}
    narrow_rows = adaptive_foolsgold(u, own=own, **kw)
    wide_rows = adaptive_foolsgold(wide, own=wide_own, **kw)
    torch.testing.assert_close(wide_rows - mu, k * (narrow_rows - mu), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- FLAME


def flame_setting(seed: int, h: int = 16, b: int = 4, d: int = 64):
    """Honest rows around a common update; the adversary's own (e.g. backdoored) updates lie
    3 spreads away in a direction of their own, and FLAME's global model is ``params``."""
    rng = np.random.default_rng(seed)
    honest = torch.as_tensor(rng.normal(size=d) + 0.6 * rng.normal(size=(h, d)))
    w = torch.as_tensor(rng.normal(size=d))
    w = w / w.norm()
    rho = benign_spread(honest)
    jitter = torch.as_tensor(rng.normal(size=(b, d))) * (0.1 * rho / math.sqrt(d))
    own = honest.mean(0) + 3.0 * rho * w + jitter
    return honest, own, torch.as_tensor(3.0 * rng.normal(size=d)), w


def flame_decides(honest, rows, params, space):
    """FLAME's (the component's) aggregate and which Byzantine rows it rejected."""
    x = torch.cat([honest, rows])
    n = x.shape[0]
    context = RoundContext(round=1, clients=torch.arange(n), num_clients=n, params=params)
    comp = FLAME(noise_multiplier=0.0, space=space)
    agg, _, info = comp(x, torch.ones(n, dtype=x.dtype), (), None, context=context)
    return agg, info["rejected"]["flame"][honest.shape[0] :]


@pytest.mark.parametrize("space", ["models", "updates"])
@pytest.mark.parametrize("seed", range(6))
def test_flame_admits_the_adaptive_backdoor_and_rejects_the_plain_one(space, seed):
    honest, own, params, w = flame_setting(seed)
    b = own.shape[0]
    _, plain_rejected = flame_decides(honest, own, params, space)
    assert plain_rejected.all()  # the plain backdoor updates are outliers
    rows = AdaptiveFlame(direction="own")(honest, num_byzantine=b, own=own)
    agg, rejected = flame_decides(honest, rows, params, space)
    assert not rejected.any()  # the adaptive rows sit inside the benign cluster
    alone, _ = flame_decides(honest, honest[:0], params, space)
    # ...and, admitted, they move FLAME's aggregate towards the backdoor
    assert float((agg - alone) @ w) > 0.05 * benign_spread(honest)


@pytest.mark.parametrize("space", ["models", "updates"])
@pytest.mark.parametrize("seed", range(6))
def test_flame_admits_adaptive_ipm_and_rejects_plain_ipm(space, seed):
    honest, _, params, _ = flame_setting(seed)
    _, plain_rejected = flame_decides(
        honest, ipm(honest, num_byzantine=4, epsilon=0.5), params, space
    )
    assert plain_rejected.all()
    rows = adaptive_flame(honest, num_byzantine=4, direction="ipm", strength=3.0)
    _, rejected = flame_decides(honest, rows, params, space)
    assert not rejected.any()
    mu = honest.mean(0)
    assert float(rows[0] @ mu) < float(mu @ mu)  # a row shorter along μ than the mean itself


@settings(max_examples=40)
@given(
    u=updates(min_n=2, max_n=12, min_d=2, max_d=20),
    direction=directions,
    strength=st.floats(0.0, 10.0),
    q=st.floats(0.0, 1.0),
    seed=seeds,
)
def test_flame_rows_stay_within_the_budget_clipped_and_on_the_attack_segment(
    u, direction, strength, q, seed
):
    """The defining constraints: no longer than the median honest row, no farther from μ
    (by distance and angle) than the q-quantile honest row, unless it is the clipped mean;
    and on the segment from μ towards the malicious row, before clipping."""
    b = 3
    own = _own(u, b, seed)
    rows = adaptive_flame(
        u, num_byzantine=b, direction=direction, strength=strength, quantile=q, own=own
    )
    mu = u.mean(0)
    norms = u.norm(dim=1)
    clip = float(norms.median())
    assert bool((rows.norm(dim=1) <= clip * (1 + 1e-9) + 1e-12).all())
    dist_budget = float(torch.quantile((u - mu).norm(dim=1), q))
    cos = torch.nn.functional.cosine_similarity
    angle_budget = float(torch.quantile(1 - cos(u, mu.expand_as(u), eps=1e-300), q))
    mean_row = mu * min(1.0, clip / float(mu.norm())) if float(mu.norm()) > 0 else mu
    shift = attack_directions(u, num_byzantine=b, direction=direction, own=own)
    shift = shift * strength * benign_spread(u)
    for j in range(b):
        if torch.allclose(rows[j], mean_row, rtol=1e-9, atol=1e-12):
            continue  # the fallback
        assert float((rows[j] - mu).norm()) <= dist_budget * (1 + 1e-6) + 1e-9
        if float(mu.norm()) > 0 and float(rows[j].norm()) > 0:
            angle = 1 - float(cos(rows[j], mu, dim=0))
            assert angle <= angle_budget + 1e-6
        # rows[j] = c · (μ + λ·shift_j) with c in (0, 1], λ on the grid
        lam = torch.linspace(0, 1, GRID, dtype=u.dtype)
        cands = mu + lam[:, None] * shift[j]
        cands = cands * torch.clamp(clip / cands.norm(dim=1), max=1.0)[:, None]
        assert float((cands - rows[j]).norm(dim=1).min()) <= 1e-7 * (1 + float(mu.norm()))


def test_flame_rows_are_the_full_attack_when_the_budget_allows_it():
    honest, own, _, _ = flame_setting(0)
    mu, rho = honest.mean(0), benign_spread(honest)
    small = adaptive_flame(honest, num_byzantine=4, direction="own", own=own, strength=0.1)
    u = attack_directions(honest, num_byzantine=4, direction="own", own=own)
    torch.testing.assert_close(small, mu + 0.1 * rho * u)  # far inside: nothing pulled back
    loose = adaptive_flame(honest, num_byzantine=4, direction="own", own=own, quantile=0.25)
    tight = adaptive_flame(honest, num_byzantine=4, direction="own", own=own, quantile=0.0)
    assert ((tight - mu).norm(dim=1) <= (loose - mu).norm(dim=1) + 1e-12).all()
    assert ((loose - mu).norm(dim=1) < 2.0 * rho).all()  # strength 2 was pulled back


# ---------------------------------------------------------------- FoolsGold


def foolsgold_weights(attack, seed: int, rounds: int = 8, h: int = 12, b: int = 4, d: int = 200):
    """FoolsGold's weights after ``rounds`` rounds: honest clients with a persistent bias of
    their own plus per-round noise around a common update, then ``b`` Byzantine rows."""
    rng = np.random.default_rng(seed)
    bias = 0.5 * rng.normal(size=(h, d))
    comp = FoolsGold()
    state = comp.init(d)
    n = h + b
    for t in range(rounds):
        common = 1.0 + 0.3 * rng.normal(size=d)
        honest = torch.as_tensor(common + bias + rng.normal(size=(h, d)))
        x = torch.cat([honest, attack(honest, b)])
        ctx = RoundContext(
            round=t + 1, clients=torch.arange(n), num_clients=n, params=torch.zeros(d)
        )
        (_, w), state, _ = comp(x, torch.ones(n, dtype=x.dtype), state, None, context=ctx)
    return w[:h], w[h:]


@pytest.mark.parametrize("seed", range(4))
def test_foolsgold_keeps_weight_for_adaptive_sybils_and_zeroes_identical_ones(seed):
    def plain(honest, b):
        return ipm(honest, num_byzantine=b, epsilon=0.5)

    def identical(honest, b):  # diversity 0: the same attack with no sybil direction
        return adaptive_foolsgold(honest, num_byzantine=b, diversity=0.0)

    def adaptive(honest, b):
        return AdaptiveFoolsGold(diversity=0.5, seed=seed)(honest, num_byzantine=b)

    for attack in (plain, identical):
        honest_w, sybil_w = foolsgold_weights(attack, seed)
        assert (sybil_w == 0).all() and (honest_w > 0).all()
    honest_w, sybil_w = foolsgold_weights(adaptive, seed)
    assert (sybil_w > 0.5).all()
    assert float(sybil_w.sum()) > float(honest_w.sum()) * 4 / 12  # more than their head count


@settings(max_examples=25)
@given(
    d=st.integers(3, 30),
    rounds=st.lists(st.tuples(st.integers(2, 8), seeds), min_size=2, max_size=3),
    seed=seeds,
    beta=st.floats(0.05, 1.0),
)
def test_each_sybil_adds_the_same_direction_of_its_own_in_every_round(d, rounds, seed, beta):
    """What a sybil adds beyond the shared attack is ``β·strength·ρ·p_j`` with ``p_j`` fixed
    by the seed and its rank, whatever the round's honest rows."""
    b = 3
    p = sybil_directions(seed, b, d, dtype=torch.float64)
    for h, round_seed in rounds:
        rng = np.random.default_rng(round_seed)
        honest = torch.as_tensor(rng.normal(1.0, 2.0, size=(h, d)))
        rho = benign_spread(honest)
        rows = adaptive_foolsgold(honest, num_byzantine=b, diversity=beta, seed=seed, strength=2.0)
        shared = attack_directions(honest, num_byzantine=b, direction="ipm")
        own_part = rows - honest.mean(0) - 2.0 * rho * math.sqrt(1 - beta**2) * shared
        torch.testing.assert_close(own_part / (2.0 * rho * beta), p, rtol=1e-6, atol=1e-6)


@given(seed=seeds, b=st.integers(1, 6), extra=st.integers(1, 20))
def test_sybil_directions_are_orthonormal_and_depend_on_seed_and_rank_only(seed, b, extra):
    d = b + extra
    p = sybil_directions(seed, b, d, dtype=torch.float64)
    torch.testing.assert_close(p @ p.T, torch.eye(b, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(
        sybil_directions(seed, b + 1 if b < d else b, d, dtype=torch.float64)[:b], p
    )
    other = sybil_directions(seed + 1, b, d, dtype=torch.float64)
    assert not torch.allclose(other, p)


def test_sybil_rows_grow_apart_with_diversity():
    honest, _, _, _ = flame_setting(1)
    sims = []
    for beta in (0.0, 0.3, 0.6, 0.9):
        rows = adaptive_foolsgold(honest, num_byzantine=4, diversity=beta, strength=3.0)
        unit = rows / rows.norm(dim=1, keepdim=True)
        sims.append(float((unit @ unit.T)[0, 1:].max()))
    assert sims[0] == pytest.approx(1.0)
    assert sims == sorted(sims, reverse=True) and sims[-1] < sims[0] - 0.05


# ---------------------------------------------------------------- values, adversaries, checks


def test_adaptive_attacks_read_their_own_updates_only_for_direction_own():
    assert AdaptiveFlame(direction="own").reads_own and not AdaptiveFlame().reads_own
    assert AdaptiveFoolsGold(direction="own").reads_own and not AdaptiveFoolsGold().reads_own
    assert ModelPoisoning(AdaptiveFoolsGold(), fraction=0.2).needs_training is False
    assert ModelPoisoning(AdaptiveFlame(direction="own"), fraction=0.2).needs_training


def test_adaptive_flame_needs_omniscient_knowledge():
    with pytest.raises(ValueError, match="omniscient"):
        ModelPoisoning(AdaptiveFlame(), fraction=0.2, knowledge="partial")
    ModelPoisoning(AdaptiveFoolsGold(), fraction=0.2, knowledge="partial")


def test_adversary_passes_own_updates_to_direction_own():
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.normal(size=(10, 30)))
    byz = torch.zeros(10, dtype=torch.bool)
    byz[[2, 7]] = True
    attack = AdaptiveFlame(direction="own", strength=0.05)
    out = poison_rows(attack, x, byz, None, knowledge="omniscient", key=None)
    honest = x[~byz]
    expected = adaptive_flame(honest, num_byzantine=2, direction="own", own=x[byz], strength=0.05)
    torch.testing.assert_close(out[byz], expected)
    torch.testing.assert_close(out[~byz], honest)
    adversary = CombinedPoisoning(poison=None, attack=attack, fraction=0.2, knowledge="omniscient")
    assert adversary.needs_training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "up"}, "direction"),
        ({"strength": -1.0}, "strength"),
        ({"strength": float("inf")}, "strength"),
        ({"quantile": 1.5}, "quantile"),
    ],
)
def test_adaptive_flame_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveFlame(**kwargs)
    with pytest.raises(ValueError, match=match):
        adaptive_flame(torch.zeros(3, 4), num_byzantine=1, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"diversity": -0.1}, "diversity"),
        ({"diversity": True}, "diversity"),
        ({"seed": 1.5}, "seed"),
        ({"strength": "big"}, "strength"),
    ],
)
def test_adaptive_foolsgold_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveFoolsGold(**kwargs)
    with pytest.raises(ValueError, match=match):
        adaptive_foolsgold(torch.zeros(3, 4), num_byzantine=1, **kwargs)


def test_missing_or_misshapen_own_updates_and_too_many_sybils_are_errors():
    with pytest.raises(ValueError, match="own"):
        adaptive_flame(torch.ones(3, 4), num_byzantine=2, direction="own")
    with pytest.raises(ValueError, match="own"):
        adaptive_foolsgold(torch.ones(3, 4), num_byzantine=2, direction="own", own=torch.ones(3, 4))
    with pytest.raises(ValueError, match="num_byzantine=5, d=4"):
        adaptive_foolsgold(
            torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), num_byzantine=5
        )
    with pytest.raises(ValueError, match="at least 2"):
        adaptive_flame(torch.ones(1, 4), num_byzantine=1)


@given(u=updates(min_n=2, max_n=6, min_d=3, max_d=8), b=st.integers(0, 3))
def test_kernels_return_b_rows_in_the_honest_dtype_and_leave_the_input_alone(u, b):
    before = u.clone()
    for rows in (
        adaptive_flame(u, num_byzantine=b),
        adaptive_foolsgold(u, num_byzantine=b),
        adaptive_flame(u.float(), num_byzantine=b, direction="alie"),
    ):
        assert rows.shape == (b, u.shape[1]) and torch.isfinite(rows).all()
    assert adaptive_flame(u.float(), num_byzantine=b).dtype == torch.float32
    assert torch.equal(u, before)
