"""Properties every group-1 kernel must have: row order, absent rows, identical rows,
robustness to huge outliers, translation, purity, determinism, components."""

from __future__ import annotations

import inspect

import attrs
import numpy as np
import pytest
import torch
from group1_cases import BY_NAME, CASES, outlier_rows
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys, permutations, positive_weights, updates

from fedkit import aggregators as agg
from fedkit.aggregators.centered_clipping import centered_clipping_with_mask
from fedkit.core.components import KernelReducer, Reducer

names = [c.name for c in CASES]
seeds = st.integers(0, 2**31 - 1)


def close(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, loose: bool = False) -> None:
    tol = 1e-6 if loose else 1e-9
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, scale))


def min_rows(name: str) -> int:
    return max(3, BY_NAME[name].min_n)


@pytest.mark.parametrize("name", names)
@given(data=st.data(), u=updates(min_n=3, max_n=10), key=keys)
def test_permutation_invariant(name, data, u, key):
    case = BY_NAME[name]
    n = u.shape[0]
    w = data.draw(positive_weights(n))
    perm = data.draw(permutations(n))
    out = case.call(u, w, n, key)
    close(case.call(u[perm], w[perm], n, key), out, float(u.abs().max()), case.loose)


@pytest.mark.parametrize("name", names)
@given(
    data=st.data(),
    u=updates(min_n=3, max_n=8),
    key=keys,
    junk=st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_zero_weight_rows_are_absent(name, data, u, key, junk, dtype):
    case = BY_NAME[name]
    n, d = u.shape
    u = u.to(dtype)
    w = data.draw(positive_weights(n))
    extra = data.draw(st.integers(1, 3))
    where = data.draw(
        st.lists(st.integers(0, n + extra - 1), min_size=extra, max_size=extra, unique=True)
    )
    junk = torch.finfo(dtype).max if junk == 1e300 else junk  # the largest finite value
    big = torch.full((n + extra, d), junk, dtype=dtype)
    big_w = torch.zeros(n + extra, dtype=w.dtype)
    live = [i for i in range(n + extra) if i not in where]
    big[live] = u
    big_w[live] = w
    out = case.call(big, big_w, n, key)
    assert bool(torch.isfinite(out).all())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(
        out, case.call(u, w, n, key), rtol=tol, atol=tol * float(u.abs().max())
    )


@pytest.mark.parametrize("name", [c.name for c in CASES if c.identical])
@given(data=st.data(), row=updates(min_n=1, max_n=1), n=st.integers(1, 9), key=keys)
def test_identical_rows_give_that_row(name, data, row, n, key):
    case = BY_NAME[name]
    if n < case.min_n:
        n = case.min_n
    w = data.draw(positive_weights(n))
    u = row.expand(n, -1).clone()
    close(case.call(u, w, n, key), row[0], float(row.abs().max()))


@pytest.mark.parametrize("name", [c.name for c in CASES if c.hull])
@given(
    data=st.data(),
    seed=seeds,
    n=st.integers(3, 12),
    d=st.integers(1, 12),
    magnitude=st.sampled_from([1e4, 1e8, 1e12, 1e30]),
    colluding=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)
def test_inside_honest_hull_with_f_huge_outliers(
    name, data, seed, n, d, magnitude, colluding, dtype
):
    case = BY_NAME[name]
    n = max(n, case.min_n)
    f = case.f_of(n)
    rng = np.random.default_rng(seed)
    honest = rng.normal(0.0, 10.0, size=(n - f, d))
    rows = np.concatenate([honest, outlier_rows(rng, f, d, magnitude, colluding)])
    w = data.draw(positive_weights(n))
    if name == "median" and f > 0:
        # the weighted median tolerates outliers of total weight below half
        w[n - f :] *= 0.49 * float(w[: n - f].sum()) / float(w[n - f :].sum())
    order = rng.permutation(n)
    u = torch.as_tensor(rows[order], dtype=dtype)
    out = case.call(u, w[order], n, None).double()
    h = torch.as_tensor(honest, dtype=dtype).double()
    slack = 1e-9 if dtype == torch.float64 else 1e-4 * float(h.abs().max())
    assert bool((out >= h.min(dim=0).values - slack).all()), (out, h)
    assert bool((out <= h.max(dim=0).values + slack).all()), (out, h)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.translation])
@given(data=st.data(), u=updates(min_n=3, max_n=9), seed=seeds)
def test_translation_equivariant(name, data, u, seed):
    case = BY_NAME[name]
    n, d = u.shape
    w = data.draw(positive_weights(n))
    shift = torch.as_tensor(np.random.default_rng(seed).normal(0.0, 100.0, size=d))
    out = case.call(u, w, n, None)
    scale = float(u.abs().max()) + float(shift.abs().max())
    close(case.call(u + shift, w, n, None), out + shift, scale, loose=True)


@pytest.mark.parametrize("name", names)
@given(data=st.data(), u=updates(min_n=3, max_n=9), key=keys)
def test_inputs_unchanged_and_same_key_same_output(name, data, u, key):
    case = BY_NAME[name]
    n = u.shape[0]
    w = data.draw(positive_weights(n))
    u_before, w_before = u.clone(), w.clone()
    first = case.call(u, w, n, key)
    assert torch.equal(u, u_before) and torch.equal(w, w_before)
    assert torch.equal(case.call(u, w, n, key), first)
    assert torch.equal(case.call(u, w, n, None), first)  # deterministic: the key is unused
    assert first.dtype == u.dtype and first.shape == (u.shape[1],)
    assert first.data_ptr() not in (u.data_ptr(), u[0].data_ptr())  # a new tensor


@pytest.mark.parametrize("name", names)
@given(u=updates(min_n=3, max_n=9))
def test_weights_none_means_equal_weights(name, u):
    case = BY_NAME[name]
    n = u.shape[0]
    close(case.call(u, None, n, None), case.call(u, torch.full((n,), 2.5, dtype=u.dtype), n, None))


# ------------------------------------------------------------------------------ components

COMPONENTS = {
    "mean": (agg.Mean(), agg.mean, {}),
    "median": (agg.Median(), agg.median, {}),
    "trimmed_mean": (agg.TrimmedMean(f=1), agg.trimmed_mean, {"f": 1}),
    "meamed": (agg.MeaMed(f=1), agg.meamed, {"f": 1}),
    "krum": (agg.Krum(f=1), agg.krum, {"f": 1}),
    "multi_krum": (agg.MultiKrum(f=1, m=3), agg.multi_krum, {"f": 1, "m": 3}),
    "bulyan": (agg.Bulyan(f=1), agg.bulyan, {"f": 1}),
    "geometric_median": (agg.GeometricMedian(tol=1e-9), agg.geometric_median, {"tol": 1e-9}),
}


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_calls_its_kernel_with_its_fields(name):
    component, kernel, kwargs = COMPONENTS[name]
    assert isinstance(component, KernelReducer) and attrs.has(type(component))
    params = inspect.signature(kernel).parameters
    for field in attrs.fields(type(component)):
        assert params[field.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[field.name].default in (inspect.Parameter.empty, field.default)
    u = torch.as_tensor(np.random.default_rng(0).normal(size=(7, 5)))
    w = torch.arange(1.0, 8.0, dtype=torch.float64)
    out, state, info = component(u, w, component.init(5), None)
    assert torch.equal(out, kernel(u, w, **kwargs))
    assert state == ()
    # the Krum reducers report the rows they did not select (test_krum_selection_info.py)
    assert set(info) == ({"rejected", "scores"} if "krum" in name else set())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        component.f = 3  # frozen value


def test_centered_clipping_component_keeps_the_aggregate_as_next_center():
    component = agg.CenteredClipping(clip_norm=0.5, iters=2)
    assert isinstance(component, Reducer)
    params = inspect.signature(agg.centered_clipping).parameters
    assert all(
        params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        for f in attrs.fields(agg.CenteredClipping)
    )
    rng = np.random.default_rng(1)
    u1, u2 = (torch.as_tensor(rng.normal(size=(6, 4))) for _ in range(2))
    w = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    state = component.init(4)
    assert torch.equal(state, torch.zeros(4))
    out1, state1, info1 = component(u1, w, state, None)
    assert torch.equal(out1, agg.centered_clipping(u1, w, clip_norm=0.5, iters=2))
    assert torch.equal(state1, out1)
    assert torch.equal(
        info1["clipped"], centered_clipping_with_mask(u1, w, clip_norm=0.5, iters=2)[1]
    )
    out2, state2, info2 = component(u2, w, state1, None)
    assert torch.equal(out2, agg.centered_clipping(u2, w, clip_norm=0.5, iters=2, center=out1))
    assert torch.equal(state2, out2)
    assert info2["clipped"].dtype == torch.bool and not bool(info2["clipped"][2])
    assert state is not state1  # a new state, the old one untouched
    assert torch.equal(state, torch.zeros(4))
