"""Group-1 kernels: hand-computed examples, documented bounds, clear errors, chunking."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import positive_weights, updates

from fedkit import aggregators as agg
from fedkit.aggregators import _select
from fedkit.aggregators.bulyan import iterated_krum
from fedkit.aggregators.centered_clipping import centered_clipping_with_mask


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


# --------------------------------------------------------------------------- by hand


def test_mean_by_hand():
    assert agg.mean(t([[1.0, 2.0], [3.0, 4.0]]), t([1.0, 3.0])).tolist() == [2.5, 3.5]


def test_median_by_hand():
    assert agg.median(t([[1.0], [5.0], [2.0], [8.0]])).tolist() == [3.5]  # even: mean of middles
    assert agg.median(t([[1.0], [5.0], [2.0]])).tolist() == [2.0]
    # weighted: W = 6, cumulative [1, 3, 5, 6] reaches W/2 at 2 and passes it at 3
    assert agg.median(t([[1.0], [2.0], [3.0], [4.0]]), t([1.0, 2.0, 2.0, 1.0])).tolist() == [2.5]
    # one row holds more than half the weight: it is the weighted median
    assert agg.median(t([[0.0], [10.0], [20.0]]), t([1.0, 5.0, 1.0])).tolist() == [10.0]
    assert agg.median(t([[0.0], [10.0]]), t([3.0, 1.0])).tolist() == [0.0]


def test_trimmed_mean_by_hand():
    u = t([[1.0, -7.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0], [100.0, 3.0]])
    assert agg.trimmed_mean(u, f=1).tolist() == [3.0, 1.0]
    torch.testing.assert_close(agg.trimmed_mean(u, f=0), agg.mean(u))
    assert agg.trimmed_mean(u, f=2).tolist() == agg.median(u).tolist()


def test_meamed_by_hand():
    # median 3; the four nearest are 1, 2, 3, 4
    assert agg.meamed(t([[1.0], [2.0], [3.0], [4.0], [100.0]]), f=1).tolist() == [2.5]
    # median 1; 0 and 2 tie for the last place: they share it
    assert agg.meamed(t([[0.0], [1.0], [2.0]]), f=1).tolist() == [1.0]


def test_krum_by_hand():
    u = t([[0.0], [0.1], [0.25], [0.3], [100.0]])
    scores = agg.krum_scores(u, f=1)  # two nearest neighbours each
    expected = [0.0725, 0.0325, 0.025, 0.0425, 99.75**2 + 99.7**2]
    assert torch.allclose(scores, t(expected))
    assert agg.krum(u, f=1).tolist() == [0.25]
    assert math.isclose(agg.multi_krum(u, t([1.0, 1.0, 3.0, 1.0, 1.0]), f=1, m=2).item(), 0.2125)
    w = t([1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    with_absent = torch.cat([u[:1], t([[float("nan")]]), u[1:]])
    s = agg.krum_scores(with_absent, w, f=1)
    assert s[1] == math.inf and s.dtype == torch.float64


def test_krum_ties_do_not_depend_on_row_order():
    # one neighbour each (n = 3, f = 0): rows 0 and 1 are mutual nearest neighbours and
    # tie; the tie goes to the row nearer to all the rows (1.0), in any order
    u = t([[0.0], [1.0], [3.0]])
    for perm in ([0, 1, 2], [1, 0, 2], [2, 1, 0], [2, 0, 1]):
        assert agg.krum(u[perm], f=0).tolist() == [1.0]


def test_bulyan_by_hand():
    # n = 7, f = 1: theta = 5 rows kept by iterated Krum (the two outliers go), beta = 3
    u = t([[0.0], [1.0], [2.0], [3.0], [4.0], [50.0], [-60.0]])
    assert sorted(iterated_krum(torch.cdist(u, u) ** 2, 1, 5).tolist()) == [0, 1, 2, 3, 4]
    assert agg.bulyan(u, f=1).tolist() == [2.0]  # median 2, nearest three: 1, 2, 3


def test_geometric_median_by_hand():
    triangle = t([[0.0, 0.0], [2.0, 0.0], [1.0, math.sqrt(3.0)]])
    gm = agg.geometric_median(triangle, tol=1e-14, iters=1000)
    assert torch.allclose(gm, t([1.0, 1.0 / math.sqrt(3.0)]), atol=1e-7)
    square = t([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0], [2.0, 2.0]])
    assert torch.allclose(agg.geometric_median(square), t([2.0, 2.0]), atol=1e-7)
    # on a line the geometric median is the (weighted) median
    line = t([[0.0], [1.0], [10.0]])
    assert abs(agg.geometric_median(line, tol=0.0, iters=500).item() - 1.0) < 1e-6
    assert (
        abs(agg.geometric_median(line, t([1.0, 1.0, 5.0]), tol=0.0, iters=500).item() - 10.0) < 1e-6
    )


def test_centered_clipping_by_hand():
    assert torch.allclose(agg.centered_clipping(t([[3.0, 4.0]]), clip_norm=1.0), t([0.6, 0.8]))
    out, clipped = centered_clipping_with_mask(t([[10.0, 0.0], [0.0, 0.0]]), clip_norm=1.0)
    assert out.tolist() == [0.5, 0.0] and clipped.tolist() == [True, False]
    center = t([1.0, 1.0])
    out = agg.centered_clipping(
        t([[1.0, 4.0], [1.0, 1.0]]), t([1.0, 1.0]), clip_norm=1.0, center=center
    )
    assert out.tolist() == [1.0, 1.5]
    assert center.tolist() == [1.0, 1.0]  # the centre is not written to


# -------------------------------------------------------------- documented bounds / specs


@given(data=st.data(), u=updates(min_n=2, max_n=8, max_d=6), seed=st.integers(0, 2**31 - 1))
def test_centered_clipping_bounds(data, u, seed):
    """What holds for centered clipping whatever the outliers (it is not a hull property):
    each step moves the centre by at most clip_norm, and with one step each row moves it by at most
    its weight share times clip_norm — so the output is the honest rows' clipped contribution plus
    at most clip_norm times the outliers' weight share."""
    n, d = u.shape
    w = data.draw(positive_weights(n))
    rng = np.random.default_rng(seed)
    clip_norm = float(rng.uniform(0.1, 20.0))
    iters = int(rng.integers(1, 4))
    center = torch.as_tensor(rng.normal(0.0, 5.0, size=d))
    out = agg.centered_clipping(u, w, clip_norm=clip_norm, iters=iters, center=center)
    assert float(torch.linalg.vector_norm(out - center)) <= iters * clip_norm * (1 + 1e-9)
    # one step, the last row replaced by a huge outlier
    f_share = float(w[-1] / w.sum())
    bad = u.clone()
    bad[-1] = torch.as_tensor(rng.choice([-1.0, 1.0], size=d) * 1e12)
    one = agg.centered_clipping(bad, w, clip_norm=clip_norm, center=center)
    offsets = u[:-1] - center
    scale = (clip_norm / torch.linalg.vector_norm(offsets, dim=1)).clamp(max=1.0)
    honest_part = center + ((w[:-1] / w.sum() * scale)[:, None] * offsets).sum(0)
    assert (
        float(torch.linalg.vector_norm(one - honest_part))
        <= f_share * clip_norm * (1 + 1e-9) + 1e-9
    )
    # clip_norm beyond every distance: one step is the weighted mean, wherever it starts
    far = agg.centered_clipping(u, w, clip_norm=1e9, center=center)
    torch.testing.assert_close(far, agg.mean(u, w))


@given(data=st.data(), u=updates(min_n=2, max_n=8, max_d=6))
def test_centered_clipping_translation_with_its_center(data, u):
    n, d = u.shape
    w = data.draw(positive_weights(n))
    shift = torch.linspace(-50.0, 70.0, d, dtype=u.dtype)
    center = u.mean(0) + 1.0
    out = agg.centered_clipping(u, w, clip_norm=3.0, iters=2, center=center)
    moved = agg.centered_clipping(u + shift, w, clip_norm=3.0, iters=2, center=center + shift)
    torch.testing.assert_close(moved, out + shift, rtol=1e-9, atol=1e-9 * 100)


@given(
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(3, 10),
    d=st.integers(1, 8),
    magnitude=st.sampled_from([1e3, 1e6, 1e12]),
)
def test_geometric_median_breakdown_bound(data, seed, n, d, magnitude):
    """The geometric median is not inside the honest hull, but with outliers of total weight
    share θ < 1/2 it stays within ``(2(1 − θ) / (1 − 2θ)) · r`` of any point ``z``, ``r`` the
    largest honest distance to ``z`` (compare the objective at the median and at ``z``) —
    however far the outliers are. Here ``z`` is the honest weighted mean."""
    f = (n - 1) // 2
    rng = np.random.default_rng(seed)
    honest = torch.as_tensor(rng.normal(0.0, 10.0, size=(n - f, d)))
    outliers = torch.as_tensor(magnitude * rng.choice([-1.0, 1.0], size=(f, d)))
    w = data.draw(positive_weights(n))
    if f:
        w[n - f :] *= 0.45 * float(w[: n - f].sum()) / float(w[n - f :].sum())
    theta = float(w[n - f :].sum() / w.sum())
    u = torch.cat([honest, outliers])
    # the stopping rule is relative to the objective, which the outliers inflate: tol below
    # honest spread / outlier distance (documented)
    gm = agg.geometric_median(u, w, tol=1e-15, iters=1000)
    z = agg.mean(honest, w[: n - f])
    r = float(torch.linalg.vector_norm(honest - z, dim=1).max())
    bound = 2 * (1 - theta) / (1 - 2 * theta) * r
    assert float(torch.linalg.vector_norm(gm - z)) <= bound * (1 + 1e-6) + 1e-6


@given(data=st.data(), u=updates(min_n=2, max_n=8, max_d=5))
def test_geometric_median_minimises_the_weighted_distance_sum(data, u):
    """Weiszfeld descends from the weighted mean; it ends at (near) the minimum. When the
    minimum sits on a row with almost balanced weights it converges linearly at rate near 1,
    so after ``iters`` steps the objective can be ~1e-4 above the minimum: the margin."""
    n, d = u.shape
    w = data.draw(positive_weights(n))
    gm = agg.geometric_median(u, w, tol=1e-12, iters=1000)

    def objective(v):
        return float((w * torch.linalg.vector_norm(u - v, dim=1)).sum())

    best = objective(gm)
    assert best <= objective(agg.mean(u, w)) * (1 + 1e-12)
    steps = torch.as_tensor(np.random.default_rng(0).normal(size=(20, d)))
    for step in steps:
        assert best <= objective(gm + 1e-3 * step) * (1 + 1e-3)
    for candidate in (agg.median(u, w), *u):
        assert best <= objective(candidate) * (1 + 1e-3)


def test_geometric_median_stops_on_the_relative_objective_change():
    u = torch.as_tensor(np.random.default_rng(3).normal(size=(9, 4)))
    exact = agg.geometric_median(u, tol=0.0, iters=2000)
    default = agg.geometric_median(u)
    assert torch.equal(default, agg.geometric_median(u, iters=10**6))  # stopped by tol
    assert not torch.allclose(agg.geometric_median(u, iters=1), exact, atol=1e-6)
    torch.testing.assert_close(default, exact, rtol=1e-2, atol=1e-2)

    def objective(v):
        return float(torch.linalg.vector_norm(u - v, dim=1).sum())

    assert objective(default) <= objective(exact) * (1 + 1e-5)


@given(data=st.data(), u=updates(min_n=1, max_n=9, max_d=6))
def test_weighted_median_minimises_weighted_absolute_deviation(data, u):
    n = u.shape[0]
    w = data.draw(positive_weights(n))
    out = agg.median(u, w)
    loss = (w[:, None] * (u - out).abs()).sum(0)
    for v in u:  # the minimum of a piecewise-linear convex function sits on a breakpoint
        assert bool((loss <= (w[:, None] * (u - v).abs()).sum(0) * (1 + 1e-12) + 1e-12).all())


@given(data=st.data(), u=updates(min_n=1, max_n=9, max_d=6), k=st.integers(1, 5))
def test_equal_weights_give_the_numpy_median(data, u, k):
    n = u.shape[0]
    expected = torch.as_tensor(np.median(u.numpy(), axis=0))
    assert torch.equal(agg.median(u, torch.full((n,), float(k), dtype=u.dtype)), expected)


# -------------------------------------------------------------------- selection helpers


@given(
    seed=st.integers(0, 2**31 - 1),
    w=st.integers(1, 6),
    m=st.integers(1, 9),
    discrete=st.booleans(),
)
def test_numpy_and_torch_selection_paths_agree(seed, w, m, discrete):
    """CPU float32/64 chunks go through NumPy; other devices and dtypes through torch.sort.
    Both paths of each row helper give the same values (ties included)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 4, size=(w, m)).astype(float) if discrete else rng.normal(size=(w, m))
    weights = torch.as_tensor(rng.uniform(0.5, 3.0, size=m))
    f = int(rng.integers(0, (m - 1) // 2 + 1))
    k = int(rng.integers(1, m + 1))

    def both(fn):
        return torch.as_tensor(fn(a.copy())), fn(torch.as_tensor(a.copy()))

    for fn in (
        _select.median_,
        lambda b: _select.trimmed_sum_(b, f),
        lambda b: _select.mean_nearest_(b, _select.median_(b), k),
        lambda b: _select.weighted_median_(b, weights),
    ):
        via_numpy, via_torch = both(fn)
        torch.testing.assert_close(via_numpy, via_torch.to(via_numpy.dtype))
    sorted_rows = np.sort(a, axis=1)
    np.testing.assert_allclose(_select.trimmed_sum_(a.copy(), f), sorted_rows[:, f : m - f].sum(1))


def test_half_precision_goes_through_torch():
    u = torch.as_tensor(np.random.default_rng(0).normal(size=(7, 33)))
    for kernel in (agg.median, lambda x: agg.trimmed_mean(x, f=2), lambda x: agg.meamed(x, f=2)):
        half = kernel(u.to(torch.bfloat16))
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half.double(), kernel(u), rtol=2e-2, atol=2e-2)


def test_chunked_equals_unchunked(monkeypatch):
    """Results do not depend on the chunk size (many tiny chunks vs one)."""
    u = torch.as_tensor(np.random.default_rng(5).normal(size=(11, 301)))
    w = torch.as_tensor(np.random.default_rng(6).uniform(0.5, 2.0, size=11))
    w[3] = 0.0
    calls = {
        "median": lambda: agg.median(u, w),
        "median_eq": lambda: agg.median(u),
        "trimmed": lambda: agg.trimmed_mean(u, w, f=2),
        "meamed": lambda: agg.meamed(u, w, f=2),
        "bulyan": lambda: agg.bulyan(u, w, f=1),
        "krum": lambda: agg.krum_scores(u, w, f=2),
        "gm": lambda: agg.geometric_median(u, w),
        "cc": lambda: agg.centered_clipping(u, w, clip_norm=2.0, iters=2),
        "mean": lambda: agg.mean(u, w),
    }
    whole = {k: c() for k, c in calls.items()}
    import fedkit.core.rows as common

    # the package re-exports the kernel under the module's name: fetch the module itself
    median_module = importlib.import_module("fedkit.aggregators.median")
    monkeypatch.setattr(median_module, "SELECT_ELEMENTS", 23 * 4)
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 23)
    monkeypatch.setattr(common.coordinate_chunks, "__defaults__", (23,))
    monkeypatch.setattr(_select.map_chunks, "__kwdefaults__", {"elements": 23})
    for k, c in calls.items():
        torch.testing.assert_close(c(), whole[k], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda u: agg.trimmed_mean(u[:4], f=2), r"trimmed_mean needs n_active >= 2f \+ 1 = 5"),
        (lambda u: agg.meamed(u[:2], f=1), r"meamed needs n_active >= 2f \+ 1 = 3"),
        (lambda u: agg.krum(u[:6], f=2), r"krum needs n_active >= 2f \+ 3 = 7"),
        (lambda u: agg.krum_scores(u[:4], f=1), r"2f \+ 3 = 5"),
        (lambda u: agg.multi_krum(u[:4], f=1, m=2), r"2f \+ 3 = 5"),
        (lambda u: agg.bulyan(u[:10], f=2), r"bulyan needs n_active >= 4f \+ 3 = 11"),
        (lambda u: agg.krum(u, t([1.0] * 4 + [0.0] * 8), f=1), r"got n_active=4"),
        (lambda u: agg.trimmed_mean(u, f=-1), "f must be a non-negative int"),
        (lambda u: agg.krum(u, f=True), "f must be a non-negative int"),
        (lambda u: agg.bulyan(u, f=1.0), "f must be a non-negative int"),
        (lambda u: agg.multi_krum(u, f=1, m=0), "m must be an int in"),
        (lambda u: agg.multi_krum(u, f=1, m=13), "m must be an int in"),
        (lambda u: agg.geometric_median(u, iters=0), "iters"),
        (lambda u: agg.geometric_median(u, tol=-1.0), "tol"),
        (lambda u: agg.geometric_median(u, eps=0.0), "eps"),
        (lambda u: agg.centered_clipping(u, clip_norm=0.0), "clip_norm"),
        (lambda u: agg.centered_clipping(u, clip_norm=float("inf")), "clip_norm"),
        (lambda u: agg.centered_clipping(u, clip_norm=1.0, iters=0), "iters"),
        (
            lambda u: agg.centered_clipping(u, clip_norm=1.0, center=torch.zeros(4)),
            r"center must have shape \(3,\)",
        ),
        (lambda u: agg.mean(u[0]), r"shape \[n, d\]"),
        (lambda u: agg.median(u.to(torch.int64)), "floating point"),
        (lambda u: agg.mean(u, torch.zeros(12)), "every weight is zero"),
        (lambda u: agg.median(u, -torch.ones(12)), "non-negative"),
        (lambda u: agg.mean(u, torch.ones(5)), r"weights must have shape \(12,\)"),
    ],
)
def test_clear_errors(call, match):
    u = torch.as_tensor(np.random.default_rng(0).normal(size=(12, 3)))
    with pytest.raises((ValueError, TypeError), match=match):
        call(u)
