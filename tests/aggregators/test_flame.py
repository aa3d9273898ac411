"""FLAME: HDBSCAN majority filter (against scikit-learn), median-norm clipping bound, noise
σ = λ·S_t, scale-blind cosine clustering, absent rows, the component's decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import permutations, positive_weights, updates

import fedkit
from fedkit.aggregators import FLAME, flame, flame_round
from fedkit.core.components import RoundContext

seeds = st.integers(0, 2**31 - 1)


def reference(x: np.ndarray, w: np.ndarray, g: np.ndarray | None):
    """FLAME (λ = 0) from the paper's Algorithm 1 in NumPy: labels, admitted, aggregate."""
    from sklearn.cluster import HDBSCAN

    pts = x if g is None else x + g  # the local models W_i = G + Δ_i
    norms = np.linalg.norm(pts, axis=1)
    dist = np.clip(1.0 - (pts @ pts.T) / np.outer(norms, norms), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    n = len(x)
    labels = (
        HDBSCAN(
            min_cluster_size=n // 2 + 1,
            min_samples=1,
            metric="precomputed",
            allow_single_cluster=True,
            copy=True,
        )
        .fit(dist)
        .labels_
    )
    big = np.argmax(np.bincount(labels[labels >= 0]))
    admitted = labels == big
    e = np.linalg.norm(x, axis=1)  # ‖W_i − G‖
    s_t = np.median(e)
    clipped = x * np.minimum(1.0, s_t / e)[:, None]
    agg = (w[admitted, None] * clipped[admitted]).sum(0) / w[admitted].sum()
    return labels, admitted, agg, s_t


def honest_and_attackers(seed: int, n_honest: int = 7, n_bad: int = 3, d: int = 30):
    """Honest rows around a common direction; attackers pointing the other way."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=d)
    honest = mu + 0.4 * rng.normal(size=(n_honest, d))
    bad = -2.0 * mu + 0.05 * rng.normal(size=(n_bad, d))
    x = np.vstack([honest, bad])
    perm = rng.permutation(len(x))
    return torch.tensor(x[perm]), torch.tensor(perm >= n_honest)


@pytest.mark.parametrize("space", ["models", "updates"])
@pytest.mark.parametrize("seed", range(8))
def test_matches_the_algorithm_with_scikit_learn(space, seed):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(3, 14)), int(rng.integers(3, 12))
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, size=(n, 1))
    x[: n // 3] *= -1.0
    w = rng.uniform(0.5, 3.0, size=n)
    g = 3.0 * rng.normal(size=d) if space == "models" else None
    labels, admitted, agg, s_t = reference(x, w, g)
    out = flame_round(
        torch.tensor(x),
        torch.tensor(w),
        noise_multiplier=0.0,
        space=space,
        params=None if g is None else torch.tensor(g),
    )
    assert out.labels.tolist() == labels.tolist()
    assert out.admitted.tolist() == admitted.tolist()
    assert out.clip_norm == pytest.approx(s_t, rel=1e-12)
    np.testing.assert_allclose(out.aggregate.numpy(), agg, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("space", ["models", "updates"])
@pytest.mark.parametrize("seed", range(6))
def test_attackers_outside_the_majority_cluster_are_rejected(space, seed):
    x, bad = honest_and_attackers(seed)
    params = fedkit.core.keys.normal(fedkit.key(seed), (x.shape[1],), dtype=torch.float64)
    context = RoundContext(round=1, clients=torch.arange(len(x)), num_clients=len(x), params=params)
    comp = FLAME(noise_multiplier=0.0, space=space)
    _, _, info = comp(x, torch.ones(len(x), dtype=torch.float64), (), None, context=context)
    rejected = info["rejected"]["flame"]
    assert rejected[bad].all()  # every attacker rejected...
    assert not bool((info["clusters"][bad] >= 0).any())  # ...as HDBSCAN noise
    assert int((~rejected[~bad]).sum()) >= 1  # and the aggregate comes from honest rows


@given(u=updates(min_n=1, max_n=10, min_d=2, max_d=12), seed=seeds, boost=st.floats(1.0, 1e6))
def test_aggregate_norm_is_at_most_the_median_norm(u, seed, boost):
    # The clipping bound: whatever is admitted, ‖aggregate‖ <= S_t (before noise) — a
    # boosted (model-replacement) row cannot move the model further than the median update.
    u = u.clone()
    u[0] *= boost
    w = torch.as_tensor(np.random.default_rng(seed).uniform(0.5, 5.0, size=len(u)))
    out = flame_round(u, w, noise_multiplier=0.0, space="updates")
    median = float(np.median(torch.linalg.vector_norm(u, dim=1).numpy()))
    assert out.clip_norm == pytest.approx(median, rel=1e-12)
    assert float(torch.linalg.vector_norm(out.aggregate)) <= median * (1 + 1e-9)
    assert bool(out.admitted.any())
    clipped_norms = out.norms[out.clipped]
    assert bool((clipped_norms > median).all())


@given(u=updates(min_n=3, max_n=10, min_d=3, max_d=12), data=st.data())
def test_update_clusters_do_not_see_scale(u, data):
    # Cosine distances between updates: multiplying any row by a positive factor changes no
    # cluster label (a boost is left to the clipping step).
    factors = torch.as_tensor(
        data.draw(st.lists(st.floats(1e-3, 1e3), min_size=len(u), max_size=len(u)))
    )
    a = flame_round(u, noise_multiplier=0.0, space="updates")
    b = flame_round(u * factors[:, None], noise_multiplier=0.0, space="updates")
    assert torch.equal(a.labels, b.labels)


@given(u=updates(min_n=3, max_n=10, min_d=3, max_d=12), data=st.data())
def test_decisions_follow_the_rows_not_their_order(u, data):
    n = len(u)
    w = data.draw(positive_weights(n))
    perm = data.draw(permutations(n))
    a = flame_round(u, w, noise_multiplier=0.0, space="updates")
    b = flame_round(u[perm], w[perm], noise_multiplier=0.0, space="updates")
    assert torch.equal(a.admitted[perm], b.admitted)
    torch.testing.assert_close(a.aggregate, b.aggregate, rtol=1e-9, atol=1e-9)


def test_noise_std_is_lambda_times_the_median_norm():
    d = 40_000
    u = fedkit.core.keys.normal(fedkit.key(1), (9, d), dtype=torch.float64) * 0.01
    u[:3] *= 4.0
    plain = flame_round(u, noise_multiplier=0.0, space="updates")
    noisy = flame_round(u, noise_multiplier=0.01, space="updates", key=fedkit.key(2))
    assert noisy.noise_std == pytest.approx(0.01 * plain.clip_norm)
    std = float((noisy.aggregate - plain.aggregate).std())
    assert std == pytest.approx(noisy.noise_std, rel=0.02)
    again = flame(u, noise_multiplier=0.01, space="updates", key=fedkit.key(2))
    assert torch.equal(again, noisy.aggregate)
    assert not torch.equal(
        flame(u, noise_multiplier=0.01, space="updates", key=fedkit.key(3)), again
    )
    with pytest.raises(ValueError, match="key"):
        flame(u, noise_multiplier=0.01, space="updates")


def test_absent_rows_are_ignored_and_not_rejected():
    x, _ = honest_and_attackers(3)
    g = torch.linspace(-1.0, 1.0, x.shape[1], dtype=torch.float64)
    padded = torch.cat([x[:4], torch.full((2, x.shape[1]), float("nan")), x[4:]])
    w = torch.ones(len(padded), dtype=torch.float64)
    w[4:6] = 0.0
    full = flame_round(padded, w, noise_multiplier=0.0, params=g)
    alone = flame_round(x, noise_multiplier=0.0, params=g)
    keep = w > 0
    assert full.labels[~keep].tolist() == [-2, -2]
    assert torch.equal(full.labels[keep], alone.labels)
    torch.testing.assert_close(full.aggregate, alone.aggregate, rtol=1e-12, atol=1e-12)
    _, _, info = FLAME(noise_multiplier=0.0)(
        padded,
        w,
        (),
        None,
        context=RoundContext(round=1, clients=torch.arange(len(w)), num_clients=len(w), params=g),
    )
    assert not bool(info["rejected"]["flame"][~keep].any())


def test_one_row_is_its_own_majority():
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    out = flame_round(x, noise_multiplier=0.0, space="updates")
    assert out.admitted.tolist() == [True]
    torch.testing.assert_close(out.aggregate, x[0])


def test_component_in_a_chain_reports_its_decisions():
    x, bad = honest_and_attackers(5)
    n, d = x.shape
    ctx = RoundContext(
        round=2,
        clients=torch.arange(n),
        num_clients=n,
        params=torch.zeros(d, dtype=torch.float64) + 0.5,
    )
    chain = fedkit.chain(FLAME())
    out, _, info = chain(x, None, chain.init(d), fedkit.key(0), context=ctx)
    assert out.shape == (d,)
    assert torch.equal(info["accepted"], ~info["rejected"]["flame"])
    assert info["rejected"]["flame"][bad].all()
    assert info["0.FLAME.clusters"].dtype == torch.int64
    assert info["0.FLAME.noise_std"] == pytest.approx(0.001 * info["0.FLAME.clip_norm"])
    with pytest.raises(ValueError, match="context"):
        FLAME()(x, None, (), fedkit.key(0))


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="noise_multiplier"):
        FLAME(noise_multiplier=-0.1)
    with pytest.raises(ValueError, match="space"):
        FLAME(space="gradients")
    with pytest.raises(ValueError, match="params"):
        flame(torch.ones(3, 2), space="models")
    with pytest.raises(ValueError, match="NaN"):
        flame(torch.tensor([[1.0, float("nan")], [1.0, 2.0]]), space="updates")
