"""FoolsGold (Fung, Yoon, Beschastnikh, RAID 2020): the scores against a direct reading of
the paper's Algorithm 1, and the defining property: sybils with (near-)identical update
histories get weight 0 while honest clients with diverse histories keep a positive
weight, whatever the order of the rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedkit
from fedkit.core.components import RoundContext
from fedkit.filters import FoolsGold, foolsgold, foolsgold_scores


def _reference(h: np.ndarray, kappa: float = 1.0) -> np.ndarray:
    """Algorithm 1 of the paper, pair by pair (self-similarity counted as 0)."""
    m = h.shape[0]
    norms = np.linalg.norm(h, axis=1)
    cs = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i != j and norms[i] > 0 and norms[j] > 0:
                cs[i, j] = h[i] @ h[j] / (norms[i] * norms[j])
    v = cs.max(axis=1)
    pardoned = cs.copy()
    for i in range(m):
        for j in range(m):
            if v[j] > v[i]:
                pardoned[i, j] = cs[i, j] * v[i] / v[j]
    alpha = np.clip(1.0 - pardoned.max(axis=1), 0.0, 1.0)
    if alpha.max() <= 0:
        return np.zeros(m)
    alpha = alpha / alpha.max()
    alpha[alpha == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        logit = kappa * (np.log(alpha / (1.0 - alpha)) + 0.5)
    return np.clip(logit, 0.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 9),
    d=st.integers(1, 16),
    seed=st.integers(0, 2**31 - 1),
    kappa=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_scores_follow_algorithm_1(m, d, seed, kappa):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(m, d))
    if m > 2:
        h[1] = 3.0 * h[0] + 1e-3 * rng.normal(size=d)  # a near-twin
    got = foolsgold_scores(torch.as_tensor(h), confidence=kappa).numpy()
    np.testing.assert_allclose(got, _reference(h, kappa), atol=1e-9)


def _ctx(clients, n, d, t=1):
    return RoundContext(
        round=t, clients=torch.as_tensor(clients), num_clients=n, params=torch.zeros(d)
    )


def _rounds(seed, honest, sybils, rounds, d, jitter):
    """Per round a [honest + sybils, d] update matrix: honest clients send independent
    Gaussian updates, the sybils one shared direction (plus ``jitter`` noise)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rounds):
        shared = torch.randn(d, generator=g, dtype=torch.float64)
        u = torch.randn(honest + sybils, d, generator=g, dtype=torch.float64)
        u[honest:] = shared + jitter * u[honest:]
        out.append(u)
    return out


@settings(max_examples=40, deadline=None)
@given(
    honest=st.integers(2, 8),
    sybils=st.integers(2, 4),
    rounds=st.integers(1, 4),
    jitter=st.sampled_from([0.0, 1e-3, 1e-2]),
    seed=st.integers(0, 2**31 - 1),
)
def test_sybils_get_zero_weight_honest_clients_keep_theirs(honest, sybils, rounds, jitter, seed):
    """The paper's property: k >= 2 sybils pushing one direction have near-identical
    histories and end at weight 0 (rejected), while honest clients with diverse histories
    keep a positive weight — every round."""
    d, n = 64, honest + sybils
    comp = FoolsGold()
    state = comp.init(d)
    w = torch.full((n,), 2.0, dtype=torch.float64)
    for t, u in enumerate(_rounds(seed, honest, sybils, rounds, d, jitter), start=1):
        (out, new_w), state, info = comp(u, w, state, None, context=_ctx(range(n), n, d, t))
        assert out is u
        assert torch.all(new_w[honest:] == 0)
        assert torch.all(new_w[:honest] > 0) and torch.all(new_w[:honest] <= w[:honest])
        assert info["rejected"]["foolsgold"].tolist() == [False] * honest + [True] * sybils
        alpha = info["scores"]["foolsgold"]
        torch.testing.assert_close(new_w, w * alpha)


@settings(max_examples=30, deadline=None)
@given(
    honest=st.integers(2, 6),
    sybils=st.integers(2, 3),
    seed=st.integers(0, 2**31 - 1),
    perm_seed=st.integers(0, 2**31 - 1),
)
def test_result_does_not_depend_on_row_order(honest, sybils, seed, perm_seed):
    """Permuting the rows and the client ids the same way permutes the output the same
    way, round after round (the history is kept per client id, not per row)."""
    d, n = 32, honest + sybils
    rng = np.random.default_rng(perm_seed)
    comp = FoolsGold()
    s_plain, s_perm = comp.init(d), comp.init(d)
    w = torch.as_tensor(rng.uniform(1.0, 3.0, size=n))
    ids = torch.arange(n)
    for t, u in enumerate(_rounds(seed, honest, sybils, 3, d, 1e-2), start=1):
        p = torch.as_tensor(rng.permutation(n))
        (_, w_plain), s_plain, i_plain = comp(u, w, s_plain, None, context=_ctx(ids, n, d, t))
        (_, w_perm), s_perm, i_perm = comp(u[p], w[p], s_perm, None, context=_ctx(p, n, d, t))
        torch.testing.assert_close(w_perm, w_plain[p], rtol=1e-12, atol=1e-12)
        assert torch.equal(i_perm["rejected"]["foolsgold"], i_plain["rejected"]["foolsgold"][p])
        torch.testing.assert_close(s_perm, s_plain)


def test_history_is_kept_per_client_id():
    """Partial participation: each client's history is the sum of its own updates;
    absent clients keep theirs; the table grows with the federation."""
    d = 5
    comp = FoolsGold()
    g = torch.Generator().manual_seed(0)
    u1 = torch.randn(3, d, generator=g)
    u2 = torch.randn(2, d, generator=g)
    _, state, _ = comp(u1, None, comp.init(d), None, context=_ctx([4, 0, 2], 5, d))
    _, state, _ = comp(u2, None, state, None, context=_ctx([2, 6], 7, d))
    assert state.shape == (7, d)
    torch.testing.assert_close(state[0], u1[1])
    torch.testing.assert_close(state[2], u1[2] + u2[0])
    torch.testing.assert_close(state[4], u1[0])
    torch.testing.assert_close(state[6], u2[1])
    assert torch.all(state[[1, 3, 5]] == 0)


def test_weight_zero_rows_are_absent():
    """A row of weight 0 (here NaN, a padding row) neither enters a history nor changes
    anybody's score."""
    d = 8
    comp = FoolsGold()
    u = torch.randn(4, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    u[3] = math.nan
    u0 = u.clone()
    w = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    (_, new_w), state, info = comp(u, w, comp.init(d), None, context=_ctx([0, 1, 2, -1], 3, d))
    (_, ref_w), _, _ = comp(u[:3], w[:3], comp.init(d), None, context=_ctx([0, 1, 2], 3, d))
    assert torch.equal(new_w[:3], ref_w) and new_w[3] == 0
    assert math.isnan(info["scores"]["foolsgold"][3]) and not info["rejected"]["foolsgold"][3]
    assert torch.isfinite(state).all()
    assert torch.equal(u[:3], u0[:3]) and torch.isnan(u[3]).all()


def test_kernel_and_single_client():
    u = torch.eye(3, 4, dtype=torch.float64)  # client 2 shares no direction with 0 and 1
    u[1] = torch.tensor([0.3, -1.0, 0.2, 0.5], dtype=torch.float64)
    h = torch.stack([u[0], u[0], u[2]])
    out, w = foolsgold(u, None, histories=h)
    assert out is u and w[:2].tolist() == [0.0, 0.0] and w[2] == 1.0
    # a lone client keeps its weight (no one to resemble)
    assert foolsgold_scores(u[:1]).tolist() == [1.0]
    # every client has a twin: all weights 0
    assert foolsgold_scores(torch.stack([u[0], u[0], 2 * u[0]])).tolist() == [0.0] * 3


def test_composes_in_a_chain():
    d, n = 16, 6
    u = torch.cat([torch.randn(4, d, generator=torch.Generator().manual_seed(4)), torch.ones(2, d)])
    server = fedkit.chain(FoolsGold(), fedkit.Mean())
    out, _, info = server(u, None, server.init(d), fedkit.key(0), context=_ctx(range(n), n, d))
    torch.testing.assert_close(out, u[:4].mean(0))
    assert info["accepted"].tolist() == [True] * 4 + [False] * 2


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"confidence.*> 0, got 0.0"):
        FoolsGold(confidence=0.0)
    with pytest.raises(TypeError, match="confidence"):
        FoolsGold(confidence="high")
    comp = FoolsGold()
    u = torch.ones(3, 4)
    with pytest.raises(ValueError, match="FoolsGold needs the round's context"):
        comp(u, None, comp.init(4), None)
    with pytest.raises(ValueError, match="more than one row"):
        comp(u, None, comp.init(4), None, context=_ctx([1, 1, 0], 2, 4))
    with pytest.raises(ValueError, match="one id per row"):
        comp(u, None, comp.init(4), None, context=_ctx([0, 1], 2, 4))
    with pytest.raises(ValueError, match="Sanitize"):
        bad = u.clone()
        bad[0, 0] = math.inf
        comp(bad, None, comp.init(4), None, context=_ctx([0, 1, 2], 3, 4))
