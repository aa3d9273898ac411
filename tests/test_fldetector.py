"""FLDetector (Zhang et al., KDD 2022): the L-BFGS Hessian-vector product, exact 1-D
2-means, the gap statistic, and the defining property on a simulated run: clients whose
updates the model's history cannot predict (sign flip, random) are banned, honest clients
are not, and without attackers the gap statistic finds no attack."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedkit
from fedkit.core.components import RoundContext
from fedkit.filters import (
    FLDetector,
    fldetector_outliers,
    gap_statistic_attack,
    lbfgs_hvp,
    two_means,
)

# ----------------------------------------------------------------------------- kernels


def _dense_bfgs(steps: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """The BFGS matrix after the updates (s_j, y_j) in order, from σ I (σ of the last pair),
    written as the textbook recursion B ← B − B s sᵀ B / sᵀ B s + y yᵀ / yᵀ s."""
    s_last, y_last = steps[-1], changes[-1]
    b = (y_last @ s_last) / (s_last @ s_last) * np.eye(steps.shape[1])
    for s, y in zip(steps, changes, strict=True):
        bs = b @ s
        b = b - np.outer(bs, bs) / (s @ bs) + np.outer(y, y) / (y @ s)
    return b


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 4), d=st.integers(4, 10), seed=st.integers(0, 2**31 - 1))
def test_lbfgs_hvp_is_the_bfgs_matrix_times_v(k, d, seed):
    """The compact form gives the same product as k dense BFGS updates (pairs from a
    positive definite Hessian, so every update is defined)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(d, d))
    h = q @ q.T + d * np.eye(d)
    steps = rng.normal(size=(k, d))
    changes = steps @ h.T + 0.1 * rng.normal(size=(k, d))
    v = rng.normal(size=d)
    expected = _dense_bfgs(steps, changes) @ v
    got = lbfgs_hvp(torch.tensor(steps), torch.tensor(changes), torch.tensor(v))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())


def test_lbfgs_hvp_secant_and_sign():
    """``B s_k = y_k`` for the latest pair; pairs of model updates (``−lr ×`` gradients)
    give ``−lr ×`` the product, so the prediction works on updates as on gradients."""
    g = torch.Generator().manual_seed(0)
    h = torch.diag(torch.linspace(0.5, 3.0, 12, dtype=torch.float64))
    steps = torch.randn(4, 12, generator=g, dtype=torch.float64)
    changes = steps @ h
    torch.testing.assert_close(lbfgs_hvp(steps, changes, steps[-1]), changes[-1])
    v = torch.randn(12, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        lbfgs_hvp(steps, -0.1 * changes, v), -0.1 * lbfgs_hvp(steps, changes, v)
    )
    # a degenerate pair (sᵀy = 0) still gives a finite product
    assert torch.isfinite(lbfgs_hvp(steps[:1], torch.zeros(1, 12, dtype=torch.float64), v)).all()


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 9), seed=st.integers(0, 2**31 - 1))
def test_two_means_is_the_exact_optimum(m, seed):
    """W_1, W_2 and the upper cluster equal a brute force over every 2-partition."""
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=m))
    w1, w2, cut = two_means(x[None, :])
    assert torch.isclose(w1[0], ((x - x.mean()) ** 2).sum())
    best = min(
        sum(((x[list(p)] - x[list(p)].mean()) ** 2).sum() for p in (a, b))
        for r in range(1, m)
        for a in itertools.combinations(range(m), r)
        for b in [tuple(i for i in range(m) if i not in a)]
    )
    assert torch.isclose(w2[0], torch.as_tensor(best, dtype=torch.float64))
    upper = x > cut[0]
    assert 0 < int(upper.sum()) < m
    assert x[upper].min() > x[~upper].max()


def test_gap_statistic_separates_one_cluster_from_two():
    rng = np.random.default_rng(0)
    one = torch.as_tensor(rng.normal(1.0, 0.05, size=40))
    two = one.clone()
    two[:3] += 2.0
    assert not gap_statistic_attack(one, fedkit.key(1))
    assert gap_statistic_attack(two, fedkit.key(1))
    flagged = fldetector_outliers(two, fedkit.key(1))
    assert flagged.tolist() == [True] * 3 + [False] * 37
    assert not gap_statistic_attack(torch.ones(10), fedkit.key(1))  # equal scores: no attack
    assert not fldetector_outliers(one, fedkit.key(1)).any()


# ------------------------------------------------------------------- simulated runs

D, LR, NOISE = 20, 0.1, 0.01


def _run(seed, attack=None, *, honest=40, bad=2, rounds=12, window=3, order=None):
    """Federated gradient descent on quadratics f_i(w) = ½ (w − c_i)ᵀ A (w − c_i) (shared
    A, client optima c_i, noisy gradients), every client every round, FLDetector → mean.
    Clients ``0 .. bad−1`` attack when ``attack`` is set. Returns the final state and the
    per-round infos (rows in client order, or in ``order`` when given)."""
    n = honest + (bad if attack else 0)
    g = torch.Generator().manual_seed(seed)
    a = torch.diag(torch.linspace(0.5, 2.0, D, dtype=torch.float64))
    c = torch.randn(n, D, generator=g, dtype=torch.float64)
    w = 3.0 * torch.randn(D, generator=g, dtype=torch.float64)
    det = FLDetector(window=window)
    state = det.init(D)
    infos = []
    perm = torch.arange(n) if order is None else order
    for t in range(1, rounds + 1):
        u = -LR * (w - c) @ a + NOISE * torch.randn(n, D, generator=g, dtype=torch.float64)
        attackers = slice(0, bad) if attack else slice(0, 0)
        if attack == "sign_flip":
            u[attackers] = -u[attackers]
        elif attack == "random":
            scale = u[bad:].norm(dim=1).mean() / D**0.5
            u[attackers] = scale * torch.randn(bad, D, generator=g, dtype=torch.float64)
        ctx = RoundContext(round=t, clients=perm.clone(), num_clients=n, params=w.clone())
        key = fedkit.fold_in(fedkit.key(seed), t)
        (rows, weights), state, info = det(
            u[perm], torch.ones(n, dtype=torch.float64), state, key, context=ctx
        )
        infos.append(info)
        w = w + (weights[:, None] * rows).sum(0) / weights.sum()
    return state, infos


SEEDS = range(20)


@pytest.mark.parametrize("attack", ["sign_flip", "random"])
def test_attackers_are_banned_and_honest_clients_kept(attack):
    """The paper's property: two clients sending sign-flipped (or random) updates are
    inconsistent with the model's history, so both are banned, in every run, in the
    round of the first detection and alone; honest clients stay. The gap statistic keeps
    a small false-alarm rate on later checks (about 0.3 % per check with 40 clients and
    Gaussian scores), so at most one run in 20 may also lose honest clients."""
    honest_lost = 0
    for seed in SEEDS:
        state, infos = _run(seed, attack)
        banned = set(torch.nonzero(state.banned).flatten().tolist())
        assert {0, 1} <= banned, f"seed {seed}: attackers not banned ({sorted(banned)})"
        honest_lost += bool(banned - {0, 1})
        first = next(i for i, info in enumerate(infos) if info["attack"])
        assert infos[first]["rejected"]["fldetector"].nonzero().flatten().tolist() == [0, 1]
        # banned for the rest of the run, reported as rejected every round
        assert all(bool(info["rejected"]["fldetector"][:2].all()) for info in infos[first:])
    assert honest_lost <= 1


def test_no_attack_no_ban():
    """Honest clients only: the gap statistic finds a single cluster and nobody is banned
    (again up to the false-alarm rate: at most one run in 20)."""
    false_alarms = 0
    for seed in SEEDS:
        state, infos = _run(seed, None)
        alarms = [i["attack"] for i in infos]
        assert any(alarms) == bool(state.banned.any())
        false_alarms += any(alarms)
        if not any(alarms):  # everybody scored from the third round on
            assert all(torch.isfinite(i["scores"]["fldetector"]).all() for i in infos[2:])
    assert false_alarms <= 1


def test_rows_are_matched_to_clients_by_id():
    """Shuffling the rows (and the ids with them) each run leaves the verdicts per client
    unchanged: the state is indexed by client id, not by row."""
    n = 42
    perm = torch.as_tensor(np.random.default_rng(3).permutation(n))
    plain, _ = _run(0, "sign_flip")
    shuffled, infos = _run(0, "sign_flip", order=perm)
    assert torch.equal(plain.banned, shuffled.banned)
    rejected = infos[-1]["rejected"]["fldetector"]
    assert torch.equal(rejected, plain.banned[perm])


def _ctx(t, clients, n, params):
    return RoundContext(round=t, clients=torch.as_tensor(clients), num_clients=n, params=params)


def test_scoring_needs_history_and_the_previous_update():
    """Nobody is scored in the first two calls (no L-BFGS pair yet); a client absent from
    the previous call is not scored (there is no previous update to move)."""
    det = FLDetector(window=2)
    state = det.init(3)
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(3, dtype=torch.float64)
    plan = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2], [0, 1, 2, 3]]
    scores = []
    for t, clients in enumerate(plan, start=1):
        u = torch.randn(len(clients), 3, generator=g, dtype=torch.float64)
        (_, weights), state, info = det(
            u, torch.ones(len(clients)), state, fedkit.key(t), context=_ctx(t, clients, 4, w)
        )
        scores.append(info["scores"]["fldetector"])
        w = w + (weights[:, None] * u).sum(0) / weights.sum()
    assert torch.isnan(scores[0]).all() and torch.isnan(scores[1]).all()
    assert torch.isfinite(scores[2]).all()
    assert state.count.tolist() == [3, 3, 3, 1]  # client 3 skipped the 4th call and the 5th


def test_weight_zero_rows_are_absent_and_inputs_untouched():
    det = FLDetector(window=2)
    u = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    u[3] = torch.nan  # absent (weight 0): may hold anything
    w = torch.tensor([1.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    u0, w0 = u.clone(), w.clone()
    ctx = _ctx(1, [0, 1, 2, -1], 3, torch.zeros(5, dtype=torch.float64))
    (out, new_w), state, info = det(u, w, det.init(5), fedkit.key(0), context=ctx)
    assert out is u and torch.equal(new_w, w)
    assert torch.equal(u[:3], u0[:3]) and torch.equal(w, w0)
    assert state.last.shape == (3, 5) and state.last_call.tolist() == [1, 1, 1]
    assert not info["rejected"]["fldetector"].any()


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="window"):
        FLDetector(window=0)
    with pytest.raises(TypeError, match="references"):
        FLDetector(references=2.5)
    with pytest.raises(ValueError, match="warmup"):
        FLDetector(warmup=-1)
    det = FLDetector()
    u = torch.ones(3, 4)
    with pytest.raises(ValueError, match="FLDetector needs the round's context"):
        det(u, None, det.init(4), fedkit.key(0))
    with pytest.raises(ValueError, match="more than one row"):
        det(u, None, det.init(4), fedkit.key(0), context=_ctx(1, [0, 0, 1], 3, torch.zeros(4)))
    with pytest.raises(ValueError, match="num_clients=2"):
        det(u, None, det.init(4), fedkit.key(0), context=_ctx(1, [0, 1, 2], 2, torch.zeros(4)))
