"""The Krum and Multi-Krum reducers report their selection: active rows they did not
select are rejected with reason ``"krum"`` and the Krum scores come with them, so a run's
records count the clients Krum left out (as the KrumSelect filter does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fedkit
from fedkit import aggregators as agg
from fedkit.aggregators.krum import krum_selection


def _rows(seed: int, n: int, d: int = 6) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, d)))


@st.composite
def problems(draw):
    n = draw(st.integers(3, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    absent = draw(st.sets(st.integers(0, n - 1), max_size=n - 3))
    w = torch.as_tensor(np.random.default_rng(seed + 1).uniform(0.5, 3.0, size=n))
    w[list(absent)] = 0.0
    n_active = n - len(absent)
    f = draw(st.integers(0, (n_active - 3) // 2))
    m = draw(st.integers(1, n_active))
    return _rows(seed, n), w, f, m


@given(problems())
def test_multi_krum_component_rejects_the_active_rows_it_did_not_select(problem):
    u, w, f, m = problem
    out, state, info = agg.MultiKrum(f=f, m=m)(u, w, (), None)
    assert torch.equal(out, agg.multi_krum(u, w, f=f, m=m)) and state == ()
    assert set(info) == {"rejected", "scores"} and set(info["rejected"]) == {"krum"}
    rejected = info["rejected"]["krum"]
    scores = agg.krum_scores(u, w, f=f)
    assert rejected.dtype == torch.bool and rejected.shape == w.shape
    assert torch.equal(info["scores"]["krum"], scores)
    kept = (w > 0) & ~rejected
    assert int(kept.sum()) == m and not bool(rejected[w == 0].any())
    if m < int((w > 0).sum()):  # the kept rows score no worse than the rejected ones
        assert float(scores[kept].max()) <= float(scores[rejected].min())
    # the aggregate is the weighted mean of exactly the kept rows
    expected = (w[kept, None] * u[kept]).sum(0) / w[kept].sum()
    torch.testing.assert_close(out, expected)


@given(problems())
def test_krum_component_keeps_exactly_the_row_it_returns(problem):
    u, w, f, _ = problem
    out, _, info = agg.Krum(f=f)(u, w, (), None)
    assert torch.equal(out, agg.krum(u, w, f=f))
    kept = (w > 0) & ~info["rejected"]["krum"]
    assert int(kept.sum()) == 1
    assert torch.equal(u[kept][0], out)
    assert torch.equal(info["scores"]["krum"], agg.krum_scores(u, w, f=f))


def test_selection_helper_and_kernels_agree():
    u = _rows(3, 9)
    w = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0, 3.0, 1.0, 0.0, 2.0], dtype=torch.float64)
    chosen, scores, finite = krum_selection(u, w, f=1, m=4)
    assert chosen.dtype == torch.int64 and chosen.shape == (4,) and not finite  # absent rows
    assert torch.equal(scores, agg.krum_scores(u, w, f=1))
    assert bool((w[chosen] > 0).all())
    assert torch.equal(agg.krum(u, w, f=1), u[chosen[0]])
    assert bool(torch.isinf(scores[w == 0]).all())
    _, _, finite = krum_selection(u, None, f=1, m=4)
    assert finite


def test_a_row_holding_nan_or_inf_is_rejected_and_never_leaks_into_the_mean():
    u = _rows(4, 8)
    u[2, 1] = float("nan")
    u[5, 0] = float("inf")
    chosen, _, finite = krum_selection(u, None, f=2, m=6)
    assert not finite and not ({2, 5} & set(chosen.tolist()))
    out, _, info = agg.MultiKrum(f=2, m=6)(u, None, (), None)
    assert bool(torch.isfinite(out).all())
    assert info["rejected"]["krum"].tolist() == [i in (2, 5) for i in range(8)]
    torch.testing.assert_close(out, u[[0, 1, 3, 4, 6, 7]].mean(0))


def test_float32_rows_so_huge_their_squares_overflow_still_count_as_finite():
    u = _rows(5, 7).float()
    u[3] *= 1e30  # finite, but its float32 squared norm overflows: the Gram redoes it in float64
    chosen, _, finite = krum_selection(u, None, f=1, m=5)
    assert finite and 3 not in chosen.tolist()
    out = agg.multi_krum(u, None, f=1, m=5)
    torch.testing.assert_close(out, u[chosen].mean(0))


def test_in_a_chain_the_unselected_clients_are_not_accepted():
    u = _rows(6, 8)
    u[[1, 6]] *= 100.0  # two far outliers
    w = torch.ones(8, dtype=torch.float64)
    w[4] = 0.0  # absent: neither accepted nor rejected by Krum
    for reducer, m in ((fedkit.Krum(f=2), 1), (fedkit.MultiKrum(f=2, m=5), 5)):
        ch = fedkit.chain(reducer, fedkit.ServerLR(lr=1.0))
        _, _, info = ch(u, w, ch.init(6), fedkit.key(0))
        rejected = info["rejected"]["krum"]
        assert int(info["accepted"].sum()) == m
        assert torch.equal(info["accepted"], (w > 0) & ~rejected)
        assert bool(rejected[[1, 6]].all()) and not bool(rejected[4])
        assert set(info["scores"]) == {f"0.{type(reducer).__name__}.krum"}


@pytest.mark.parametrize(("server", "kept"), [("krum", 1), ("multi_krum", 4)])
def test_a_run_records_the_clients_krum_left_out(server, kept):
    reducer = fedkit.Krum(f=1) if server == "krum" else fedkit.MultiKrum(f=1, m=kept)
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, lr=0.1), server=fedkit.chain(reducer)
    )
    task = fedkit.tasks.synthetic(num_users=6, key=0)
    history = fedkit.simulate(task, strategy, rounds=2, key=0, progress=False)
    for m in history.metrics:
        assert m["received"] == 6 and m["accepted"] == kept
        assert m["rejected"] == {"krum": 6 - kept}
    counters = history.record["counters"]
    assert counters["accepted"] == 2 * kept and counters["rejected"] == {"krum": 2 * (6 - kept)}
