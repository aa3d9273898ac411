"""FLTrust: trust scores, rescaling, the reference conventions, robustness bound."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import positive_weights, updates

from fedkit.aggregators import fltrust


def test_hand_example():
    g0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    clients = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # trust: 1, 0, 0 (ReLU of -1), 1/sqrt(2); rescaled rows: [1, 0] and [1, 1] / sqrt(2)
    t = 1 / math.sqrt(2)
    expected = (torch.tensor([1.0, 0.0]) + t * torch.tensor([t, t])) / (1 + t)
    torch.testing.assert_close(fltrust(clients, reference=g0), expected.to(torch.float64))


def test_no_trust_gives_the_zero_vector():
    g0 = torch.tensor([1.0, 0.0])
    clients = torch.tensor([[-1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    assert torch.equal(fltrust(clients, reference=g0), torch.zeros(2))
    assert torch.equal(fltrust(clients, reference=torch.zeros(2)), torch.zeros(2))


@given(data=st.data(), u=updates(min_n=2, max_n=10), scale=st.floats(1e-3, 1e6))
def test_output_norm_is_at_most_the_reference_norm(data, u, scale):
    w = data.draw(positive_weights(u.shape[0]))
    g0 = u[0] * 0.5 + 1.0
    u = u.clone()
    u[1] *= scale  # a scaled row is rescaled to |g0| anyway
    out = fltrust(u, w, reference=g0)
    assert float(out.norm()) <= float(g0.norm()) * (1 + 1e-9)


@given(data=st.data(), u=updates(min_n=2, max_n=8), factor=st.floats(0.1, 1e6))
def test_rows_against_the_reference_get_no_trust(data, u, factor):
    w = data.draw(positive_weights(u.shape[0]))
    g0 = u.mean(0)
    attacked = torch.cat([u, -factor * g0[None]])
    out = fltrust(attacked, torch.cat([w, torch.ones(1, dtype=w.dtype)]), reference=g0)
    torch.testing.assert_close(out, fltrust(u, w, reference=g0))


def test_reference_errors():
    u = torch.ones(3, 2)
    with pytest.raises(ValueError, match="shape"):
        fltrust(u, reference=torch.ones(3))
    with pytest.raises(ValueError, match="NaN/Inf"):
        fltrust(u, reference=torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="reference must be a Tensor"):
        fltrust(u, reference="last")  # no client row can be the trust anchor
