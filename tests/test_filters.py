"""Filters (client-side transforms): kernels, components, agreement with ByzFL."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys, permutations

import fedkit
from fedkit.aggregators.krum import krum_scores
from fedkit.filters import (
    ARC,
    NNM,
    Bucketing,
    Clip,
    KrumSelect,
    Sanitize,
    arc,
    arc_num_clipped,
    bucket_assignment,
    bucketing,
    clip,
    krum_select,
    nnm,
    sanitize,
)
from fedkit.filters._common import row_norms


def byzfl_preaggregators():
    """ByzFL's pre-aggregators module, imported without running ``byzfl/__init__.py`` (which
    pulls in its whole benchmark stack and takes tens of seconds). The temporary bare
    package is removed again, so a later ``import byzfl`` still gets the real one."""
    name = "byzfl.aggregators.preaggregators"
    if name in sys.modules:
        return sys.modules[name]
    if "byzfl" in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec("byzfl")
    bare = types.ModuleType("byzfl")
    bare.__path__ = list(spec.submodule_search_locations)
    sys.modules["byzfl"] = bare
    try:
        return importlib.import_module(name)
    finally:
        del sys.modules["byzfl"]


def byzfl_rule(rule: str, f: int, rows: torch.Tensor) -> torch.Tensor:
    """ByzFL's ``rule(f)`` on a float64 NumPy copy of ``rows`` (torch input would be cast
    to float32; ARC also writes into its input)."""
    out = getattr(byzfl_preaggregators(), rule)(f)(rows.numpy().copy())
    return torch.as_tensor(out)


@st.composite
def problems(draw, min_active=1, max_n=10, max_d=12, zeros=True, dtype=torch.float64):
    """``(U, w)``: random rows and positive weights, some rows (maybe) of weight 0."""
    n = draw(st.integers(min_active, max_n))
    d = draw(st.integers(1, max_d))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    u = torch.as_tensor(rng.normal(0.0, rng.choice([0.1, 1.0, 10.0]), size=(n, d)), dtype=dtype)
    w = torch.as_tensor(rng.uniform(0.5, 10.0, size=n), dtype=torch.float64)
    if zeros and n > min_active:
        off = rng.choice(n, size=draw(st.integers(0, n - min_active)), replace=False)
        w[torch.as_tensor(off, dtype=torch.int64)] = 0.0
    return u, w


def garbage_in_zero_rows(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``u`` with its weight-0 rows overwritten by huge values, NaN and Inf."""
    v = u.clone()
    zero = w == 0
    v[zero] = 1e30
    v[zero, 0] = float("nan")
    v[zero, -1] = float("inf")
    return v


def active(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return u[w > 0]


# ------------------------------------------------------------------------------------- clip


@given(problems(), st.floats(0.05, 20.0))
def test_clip_bounds_norms_and_keeps_short_rows(problem, clip_norm):
    u, w = problem
    out, new_w = clip(u, w, clip_norm=clip_norm)
    norms, out_norms = row_norms(u), row_norms(out)
    act = w > 0
    assert bool((out_norms[act] <= clip_norm * (1 + 1e-12)).all())
    short = ~act | (norms <= clip_norm)
    assert torch.equal(out[short], u[short])
    long = act & (norms > clip_norm)
    torch.testing.assert_close(out_norms[long], torch.full_like(out_norms[long], clip_norm))
    # clipping only scales: same direction
    torch.testing.assert_close(out[long] * norms[long, None] / clip_norm, u[long])
    assert torch.equal(new_w, w)
    _, _, info = Clip(clip_norm)(u, w, (), None)
    assert torch.equal(info["clipped"], long)


def test_clip_by_hand_and_float32_bound():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out, _ = clip(u, clip_norm=1.0)
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    assert torch.equal(out[1:], u[1:])
    rng = np.random.default_rng(3)
    big = torch.as_tensor(rng.normal(0, 100.0, size=(6, 1000)), dtype=torch.float32)
    out, _ = clip(big, clip_norm=0.5)
    assert out.dtype == torch.float32
    assert float(out.double().norm(dim=1).max()) <= 0.5 * (1 + 1e-6)


def test_clip_with_nothing_to_clip_returns_rows_unchanged():
    u = torch.tensor([[0.1, 0.2], [0.0, 0.3]])
    out, _ = clip(u, clip_norm=1.0)
    assert torch.equal(out, u)


# -------------------------------------------------------------------------------------- ARC


@st.composite
def arc_problems(draw, zeros=True):
    u, w = draw(problems(min_active=2, zeros=zeros))
    f = draw(st.integers(0, int((w > 0).sum()) - 1))
    return u, w, f


@given(arc_problems())
def test_arc_clips_exactly_k_largest_rows(problem):
    u, w, f = problem
    m = int((w > 0).sum())
    k = arc_num_clipped(m, f)
    assert k == math.floor(2 * (f / m) * (m - f) + 1e-9)
    _, _, info = ARC(f)(u, w, (), None)
    out, new_w = arc(u, w, f=f)
    clipped = info["clipped"]
    assert int(clipped.sum()) == k
    norms = row_norms(u)
    act_norms = norms[w > 0]
    if k:
        thr = torch.sort(act_norms, descending=True).values[k]
        # the clipped rows are the k largest, now at the (k+1)-th largest norm
        assert bool((norms[clipped] > thr).all())
        torch.testing.assert_close(
            row_norms(out)[clipped], torch.full((k,), float(thr), dtype=torch.float64)
        )
    assert torch.equal(out[~clipped], u[~clipped])
    assert torch.equal(new_w, w)


@given(arc_problems(zeros=False))
def test_arc_agrees_with_byzfl(problem):
    u, _, f = problem
    out, _ = arc(u, f=f)
    torch.testing.assert_close(out, byzfl_rule("ARC", f, u), rtol=1e-12, atol=1e-12)


@given(arc_problems())
def test_arc_with_zero_weights_is_byzfl_on_the_active_rows(problem):
    u, w, f = problem
    out, _ = arc(u, w, f=f)
    torch.testing.assert_close(
        active(out, w), byzfl_rule("ARC", f, active(u, w)), rtol=1e-12, atol=1e-12
    )
    assert torch.equal(out[w == 0], u[w == 0])


def test_arc_by_hand():
    # ByzFL's docstring example: n = 3, f = 1 → k = 1, the last row clipped to ‖[4, 5, 6]‖.
    u = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64)
    out, _ = arc(u, f=1)
    torch.testing.assert_close(out[2], u[2] * u[1].norm() / u[2].norm())
    assert torch.equal(out[:2], u[:2])


# -------------------------------------------------------------------------------------- NNM


@given(arc_problems(zeros=False))
def test_nnm_agrees_with_byzfl(problem):
    u, _, f = problem
    out, _ = nnm(u, f=f)
    torch.testing.assert_close(out, byzfl_rule("NNM", f, u), rtol=1e-9, atol=1e-9)


@given(arc_problems())
def test_nnm_with_zero_weights_is_byzfl_on_the_active_rows(problem):
    u, w, f = problem
    out, new_w = nnm(u, w, f=f)
    torch.testing.assert_close(
        active(out, w), byzfl_rule("NNM", f, active(u, w)), rtol=1e-9, atol=1e-9
    )
    assert torch.equal(out[w == 0], u[w == 0])
    assert torch.equal(new_w, w)


@given(st.data())
def test_nnm_is_permutation_equivariant(data):
    u, w, f = data.draw(arc_problems())
    p = data.draw(permutations(u.shape[0]))
    out, _ = nnm(u, w, f=f)
    out_p, w_p = nnm(u[p], w[p], f=f)
    torch.testing.assert_close(out_p, out[p], rtol=1e-9, atol=1e-9)
    assert torch.equal(w_p, w[p])


def test_nnm_by_hand():
    u = torch.tensor([[0.0], [1.0], [10.0]], dtype=torch.float64)
    out, _ = nnm(u, f=1)  # each row: mean of itself and its nearest other row
    assert torch.equal(out, torch.tensor([[0.5], [0.5], [5.5]], dtype=torch.float64))
    out, _ = nnm(u, f=0)  # every row becomes the mean
    torch.testing.assert_close(out, torch.full((3, 1), 11.0 / 3, dtype=torch.float64))


# -------------------------------------------------------------------------------- bucketing


@given(problems(), st.integers(1, 5), keys)
def test_bucketing_preserves_weight_and_weighted_mean(problem, s, key):
    u, w = problem
    out, new_w = bucketing(u, w, bucket_size=s, key=key)
    m = int((w > 0).sum())
    b = math.ceil(m / s)
    assert out.shape == u.shape and new_w.shape == w.shape
    assert bool((new_w[:b] > 0).all()) and bool((new_w[b:] == 0).all())
    assert bool((out[b:] == 0).all())
    torch.testing.assert_close(new_w.sum(), w.sum(), rtol=1e-12, atol=0)
    mean_in = (w[:, None] * u).sum(0) / w.sum()
    mean_out = (new_w[:, None] * out).sum(0) / new_w.sum()
    torch.testing.assert_close(mean_out, mean_in, rtol=1e-9, atol=1e-9)


@given(problems(), st.integers(1, 5), keys)
def test_bucketing_is_keyed_and_each_active_row_in_one_bucket(problem, s, key):
    u, w = problem
    a, aw = bucketing(u, w, bucket_size=s, key=key)
    b, bw = bucketing(u, w, bucket_size=s, key=key)
    assert torch.equal(a, b) and torch.equal(aw, bw)
    bucket = bucket_assignment(w, bucket_size=s, key=key)
    assert torch.equal(bucket < 0, w == 0)
    sizes = torch.bincount(bucket[bucket >= 0])
    m = int((w > 0).sum())
    assert int(sizes.sum()) == m and sizes.numel() == math.ceil(m / s)
    assert bool((sizes[:-1] == s).all()) and 1 <= int(sizes[-1]) <= s
    for j in range(sizes.numel()):  # output row j is bucket j's weighted mean
        members = bucket == j
        mean = (w[members, None] * u[members]).sum(0) / w[members].sum()
        torch.testing.assert_close(a[j], mean, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(aw[j], w[members].sum(), rtol=1e-12, atol=0)


def test_bucketing_with_s_one_permutes_rows_and_keys_matter():
    u = torch.arange(20.0, dtype=torch.float64).reshape(10, 2)
    out, new_w = bucketing(u, bucket_size=1, key=fedkit.key(0))
    assert sorted(out[:, 0].tolist()) == u[:, 0].tolist()
    assert torch.equal(new_w, torch.ones(10, dtype=torch.float64))
    others = [bucketing(u, bucket_size=1, key=fedkit.key(i))[0] for i in range(1, 4)]
    assert not all(torch.equal(out, o) for o in others)


def test_bucketing_component_reports_empty_rows_not_rejections():
    u = torch.ones(5, 3)
    w = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    (_, new_w), _, info = Bucketing(3)(u, w, (), fedkit.key(1))
    assert "rejected" not in info
    assert info["empty"].tolist() == [False, False, True, True, True]
    assert info["bucket"][2] == -1 and sorted(info["bucket"].tolist()) == [-1, 0, 0, 0, 1]
    assert new_w.tolist() == [3.0, 1.0, 0.0, 0.0, 0.0]


# --------------------------------------------------------------------------------- sanitize


@given(problems(zeros=False), st.data())
def test_sanitize_zeroes_exactly_the_nonfinite_rows(problem, data):
    u, w = problem
    n, d = u.shape
    bad = torch.as_tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    v = u.clone()
    for i in torch.nonzero(bad).flatten().tolist():
        j = data.draw(st.integers(0, d - 1))
        v[i, j] = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
    w[0] = 0.0  # a weight-0 row is never reported as rejected
    out, new_w = sanitize(v, w)
    assert torch.equal(new_w == 0, bad | (w == 0))
    assert bool((out[bad] == 0).all())
    assert torch.equal(out[~bad], u[~bad])
    assert bool(torch.isfinite(out).all())
    _, _, info = Sanitize()(v, w, (), None)
    assert torch.equal(info["rejected"]["nonfinite"], bad & (w > 0))


# ---------------------------------------------------------------------------- Krum selection


@st.composite
def krum_problems(draw):
    u, w = draw(problems(min_active=4))
    n_active = int((w > 0).sum())
    f = draw(st.integers(0, (n_active - 3) // 2))
    m = draw(st.integers(1, n_active))
    return u, w, f, m


@given(krum_problems())
def test_krum_select_keeps_the_m_best_scored_rows(problem):
    u, w, f, m = problem
    out, new_w = krum_select(u, w, f=f, m=m)
    kept = new_w > 0
    assert int(kept.sum()) == m
    assert out is u  # rows untouched
    assert torch.equal(new_w[kept], w[kept])
    assert not bool(kept[w == 0].any())
    scores = krum_scores(u, w, f=f)
    dropped = scores[(w > 0) & ~kept]
    if dropped.numel():
        assert float(scores[kept].max()) <= float(dropped.min())
    (_, cw), _, info = KrumSelect(f, m)(u, w, (), None)
    assert torch.equal(cw, new_w)
    assert torch.equal(info["rejected"]["krum"], (w > 0) & ~kept)
    assert torch.equal(info["scores"]["krum"], scores)


def test_krum_select_by_hand():
    # four close rows and one far outlier: Krum (f = 1) keeps the close ones first.
    u = torch.tensor([[0.0], [0.1], [0.2], [0.3], [100.0]], dtype=torch.float64)
    _, w = krum_select(u, f=1, m=4)
    assert w.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]


# ------------------------------------------------------------------------ shared properties

KERNELS = {
    "clip": lambda u, w, k: clip(u, w, clip_norm=1.0),
    "arc": lambda u, w, k: arc(u, w, f=1),
    "nnm": lambda u, w, k: nnm(u, w, f=1),
    "bucketing": lambda u, w, k: bucketing(u, w, bucket_size=2, key=k),
    "sanitize": lambda u, w, k: sanitize(u, w),
    "krum_select": lambda u, w, k: krum_select(u, w, f=1, m=2),
}


@pytest.mark.parametrize("name", list(KERNELS))
@given(problem=problems(min_active=5), key=keys)
def test_inputs_never_mutated_and_zero_weight_rows_ignored(name, problem, key):
    kernel = KERNELS[name]
    u, w = problem
    u0, w0 = u.clone(), w.clone()
    out, new_w = kernel(u, w, key)
    assert torch.equal(u, u0) and torch.equal(w, w0)
    assert out.shape == u.shape and new_w.shape == w.shape
    if name != "bucketing":  # bucketing's output rows are buckets, not clients
        assert bool((new_w[w == 0] == 0).all())
    # whatever the weight-0 rows hold, the rest of the result is the same
    g_out, g_w = kernel(garbage_in_zero_rows(u, w), w, key)
    assert torch.equal(g_w, new_w)
    keep = new_w > 0
    torch.testing.assert_close(g_out[keep], out[keep], rtol=1e-12, atol=1e-12)


def test_float32_rows_stay_float32():
    u = torch.as_tensor(np.random.default_rng(0).normal(size=(6, 7)), dtype=torch.float32)
    for name, kernel in KERNELS.items():
        out, w = kernel(u, None, fedkit.key(0))
        assert out.dtype == torch.float32, name
        assert w.dtype == torch.float32, name


@pytest.mark.parametrize(
    ("component", "kernel"),
    [
        (Clip(1.0), clip),
        (ARC(1), arc),
        (NNM(1), nnm),
        (Bucketing(2), bucketing),
        (KrumSelect(1, 2), krum_select),
    ],
)
def test_component_fields_are_the_kernel_hyperparameters(component, kernel):
    params = inspect.signature(kernel).parameters
    hyper = {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY and p != "key"}
    assert set(fedkit.hyperparameters(component)) == hyper


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: clip(torch.ones(3), clip_norm=1.0), r"shape \[n, d\]"),
        (lambda: clip(torch.ones(2, 2, dtype=torch.int64), clip_norm=1.0), "floating point"),
        (lambda: clip(torch.ones(2, 2), clip_norm=0.0), "clip_norm"),
        (lambda: clip(torch.ones(2, 2), torch.ones(3), clip_norm=1.0), "weights"),
        (lambda: clip(torch.tensor([[1.0, float("nan")]]), clip_norm=1.0), "Sanitize"),
        (lambda: arc(torch.ones(3, 2), f=3), "too large"),
        (lambda: arc(torch.ones(3, 2), torch.tensor([1.0, 0.0, 0.0]), f=1), "too large"),
        (lambda: nnm(torch.ones(3, 2), f=-1), ">= 0"),
        (lambda: nnm(torch.tensor([[1.0], [float("inf")]]), f=0), "Sanitize"),
        (lambda: bucketing(torch.ones(3, 2), bucket_size=0, key=fedkit.key(0)), ">= 1"),
        (lambda: bucketing(torch.ones(3, 2), bucket_size=2), "key"),
        (lambda: krum_select(torch.ones(5, 2), f=1, m=6), "m=6"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --------------------------------------------------------------------------------- chains


def _mean_reducer():
    try:
        from fedkit.aggregators.mean import Mean
    except ImportError:
        return _WeightedMean()
    return Mean()


class _WeightedMean(fedkit.Reducer):
    """Tiny local reducer (fallback when fedkit.aggregators.mean is not there)."""

    def __call__(self, updates, weights, state, key):
        return (weights[:, None] * updates).sum(0) / weights.sum(), state, {}


def test_filters_in_a_chain_report_their_decisions():
    from fedkit.optimizers import FedAvgM

    rng = np.random.default_rng(7)
    u = torch.as_tensor(rng.normal(size=(8, 4)))
    u[1, 0] = float("inf")
    u[5] *= 50.0  # an outlier that Krum rejects
    ch = fedkit.chain(Sanitize(), ARC(1), NNM(1), KrumSelect(f=1, m=5), _mean_reducer(), FedAvgM())
    step, state, info = ch(u, None, ch.init(4), fedkit.key(0))
    assert info["rejected"]["nonfinite"].tolist() == [i == 1 for i in range(8)]
    assert int(info["rejected"]["krum"].sum()) == 2
    assert int(info["accepted"].sum()) == 5
    assert info["clipped"].dtype == torch.bool
    assert "5.FedAvgM" not in info and set(info["scores"]) == {"3.KrumSelect.krum"}
    assert bool(torch.isfinite(step).all())
    torch.testing.assert_close(state[-1].momentum, step)
