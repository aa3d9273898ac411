"""Clipping, DP weights and the fixed-denominator mean."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import positive_weights, updates

from privacy.mechanisms import (
    CapWeights,
    ClipUpdates,
    FixedMean,
    UniformWeights,
    cap_weights,
    clip_rows,
    fixed_denominator_mean,
    uniform_weights,
)

clip_norms = st.floats(0.01, 30.0)


@given(updates(), clip_norms, st.sampled_from(["l2", "l1"]))
def test_clipped_rows_respect_the_bound_and_keep_direction(u, c, norm):
    clipped, scale = clip_rows(u, clip_norm=c, norm=norm)
    p = 2 if norm == "l2" else 1
    before = torch.linalg.vector_norm(u, ord=p, dim=1)
    after = torch.linalg.vector_norm(clipped, ord=p, dim=1)
    assert torch.all(after <= c * (1 + 1e-12))
    inside = before <= c
    assert torch.equal(clipped[inside], u[inside])  # rows inside the ball are untouched
    assert torch.equal(scale < 1, ~inside)
    # scaled rows keep their direction and land on the sphere
    out = ~inside
    torch.testing.assert_close(after[out], torch.full_like(after[out], c))
    torch.testing.assert_close(clipped[out] / after[out, None], u[out] / before[out, None])


@given(updates(min_n=2), clip_norms)
def test_clip_updates_component_reports_clipped_active_rows_only(u, c):
    w = torch.ones(u.shape[0], dtype=u.dtype)
    w[0] = 0.0
    (out, w_out), state, info = ClipUpdates(clip_norm=c)(u, w, (), None)
    norms = torch.linalg.vector_norm(u, dim=1)
    assert torch.equal(info["clipped"], (norms > c) & (w > 0))
    assert torch.equal(out[0], u[0])  # an excluded row is left alone
    assert torch.equal(w_out, w)
    assert state == ()


def test_clip_hand_example():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    clipped, scale = clip_rows(u, clip_norm=1.0)
    torch.testing.assert_close(
        clipped, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(scale, torch.tensor([0.2, 1.0, 1.0], dtype=torch.float64))
    l1, _ = clip_rows(u, clip_norm=1.0, norm="l1")
    torch.testing.assert_close(l1[0], torch.tensor([3 / 7, 4 / 7], dtype=torch.float64))


def test_clip_errors_are_clear():
    with pytest.raises(ValueError, match="clip_norm"):
        ClipUpdates(clip_norm=0.0)
    with pytest.raises(ValueError, match="norm must be"):
        clip_rows(torch.ones(2, 2), clip_norm=1.0, norm="linf")
    with pytest.raises(ValueError, match=r"shape \[n, d\]"):
        clip_rows(torch.ones(3), clip_norm=1.0)
    bad = torch.tensor([[float("nan"), 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        clip_rows(bad, clip_norm=1.0)


@given(st.integers(1, 10).flatmap(lambda n: positive_weights(n)), st.floats(0.5, 20.0))
def test_dp_weights_are_bounded_by_one(w, cap):
    w = w.clone()
    w[0] = 0.0
    uw = uniform_weights(w)
    assert torch.equal(uw, (w > 0).to(w.dtype))
    cw = cap_weights(w, weight_cap=cap)
    assert torch.all(cw <= 1.0) and cw[0] == 0.0
    torch.testing.assert_close(cw, torch.clamp(w / cap, max=1.0))
    u = torch.zeros(len(w), 3, dtype=w.dtype)
    assert torch.equal(UniformWeights()(u, w, (), None)[0][1], uw)
    assert torch.equal(CapWeights(weight_cap=cap)(u, w, (), None)[0][1], cw)


def test_fixed_mean_divides_by_the_expected_weight():
    u = torch.tensor([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    out = fixed_denominator_mean(u, w, expected_weight=4.0)
    torch.testing.assert_close(out, torch.tensor([1.0, 1.5], dtype=torch.float64))
    agg, _, _ = FixedMean(expected_weight=4.0)(u, w, (), None)
    torch.testing.assert_close(agg, out)
    # no active client: the (noiseless) estimate is zero, not an error
    zero = fixed_denominator_mean(u, torch.zeros(3, dtype=torch.float64), expected_weight=2.0)
    assert torch.equal(zero, torch.zeros(2, dtype=torch.float64))


@given(updates(min_n=2), clip_norms, st.floats(1.0, 50.0))
def test_sensitivity_of_clipped_fixed_mean_is_c_over_m(u, c, m):
    """Removing any one client moves the clipped fixed-denominator mean by at most C/m."""
    clipped, _ = clip_rows(u, clip_norm=c)
    n = u.shape[0]
    full = fixed_denominator_mean(clipped, torch.ones(n, dtype=u.dtype), expected_weight=m)
    for i in range(n):  # each neighbouring data set (one client removed)
        w = torch.ones(n, dtype=u.dtype)
        w[i] = 0.0
        neighbour = fixed_denominator_mean(clipped, w, expected_weight=m)
        assert float(torch.linalg.vector_norm(full - neighbour)) <= c / m * (1 + 1e-9)


def test_fixed_mean_rejects_weights_above_one():
    with pytest.raises(ValueError, match="UniformWeights"):
        fixed_denominator_mean(torch.ones(2, 2), torch.tensor([1.0, 5.0]), expected_weight=2.0)
    with pytest.raises(ValueError, match="expected_weight"):
        FixedMean(expected_weight=0.0)
