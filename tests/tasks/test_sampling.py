"""Keyed Gamma / Dirichlet / log-normal samplers: moments, support, determinism."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import fedkit
from fedkit.tasks.sampling import dirichlet, log_gamma, lognormal


@pytest.mark.parametrize("a", [0.02, 0.3, 1.0, 4.5])
def test_gamma_mean_and_variance_equal_shape(a):
    g = log_gamma(fedkit.key(11), torch.full((100_000,), a)).exp()
    assert g.mean().item() == pytest.approx(a, rel=0.03)
    assert g.var().item() == pytest.approx(a, rel=0.06)


@given(keys, st.floats(1e-3, 50.0))
def test_dirichlet_rows_are_finite_distributions_and_deterministic(k, alpha):
    conc = torch.full((4, 7), alpha, dtype=torch.float64)
    p = dirichlet(k, conc)
    assert p.shape == (4, 7) and p.dtype == torch.float64
    assert bool(torch.isfinite(p).all()) and bool((p >= 0).all())
    torch.testing.assert_close(p.sum(1), torch.ones(4, dtype=torch.float64))
    assert torch.equal(p, dirichlet(k, conc))


def test_dirichlet_mean_follows_concentration():
    conc = torch.tensor([1.0, 2.0, 7.0], dtype=torch.float64).expand(50_000, 3)
    mean = dirichlet(fedkit.key(5), conc).mean(0)
    expected = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)
    torch.testing.assert_close(mean, expected, atol=4e-3, rtol=0)


def test_lognormal_matches_its_log_moments():
    logs = lognormal(fedkit.key(2), 100_000, mean=4.0, sigma=2.0).log()
    assert logs.mean().item() == pytest.approx(4.0, abs=0.03)
    assert logs.std().item() == pytest.approx(2.0, rel=0.02)


def test_gamma_rejects_bad_shape():
    with pytest.raises(ValueError, match="concentration"):
        log_gamma(fedkit.key(0), torch.tensor([1.0, 0.0]))
