"""Keyed samplers the tasks need beyond :mod:`fedkit.core.keys`: Gamma, Dirichlet and
log-normal draws, all from explicit keys (no global RNG)."""

from __future__ import annotations

import torch

from fedkit.core.keys import Key, fold_in, normal, split, uniform

_MAX_ROUNDS = 64


def log_gamma(k: Key, concentration: torch.Tensor | float) -> torch.Tensor:
    """Logarithms of independent Gamma(a, 1) draws, one per entry of ``concentration``
    (float64). Works in log space so tiny shapes (a ≪ 1) neither underflow nor give zeros.

    Rejection sampling in rounds: every round proposes for all entries and keeps the first
    accepted proposal of each (acceptance > 95 %, so a handful of rounds). Shapes below one
    use the boost Gamma(a) = Gamma(a + 1) · U^(1/a).

    Marsaglia & Tsang 2000, A simple method for generating gamma variables.
    """
    a = torch.as_tensor(concentration, dtype=torch.float64)
    if not torch.isfinite(a).all() or (a <= 0).any():
        raise ValueError("gamma concentration must be finite and > 0")
    boosted = a < 1
    shape = torch.where(boosted, a + 1.0, a)
    d = shape - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    k_rounds, k_boost = split(k, 2)
    out = torch.zeros_like(a)
    done = torch.zeros(a.shape, dtype=torch.bool)
    for r in range(_MAX_ROUNDS):
        k_z, k_u = split(fold_in(k_rounds, r), 2)
        z = normal(k_z, a.shape, dtype=torch.float64)
        u = uniform(k_u, a.shape, dtype=torch.float64)
        v = (1.0 + c * z) ** 3
        log_v = torch.log(v.clamp_min(torch.finfo(torch.float64).tiny))
        accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * log_v)
        fresh = accept & ~done
        out = torch.where(fresh, torch.log(d) + log_v, out)
        done = done | accept
        if bool(done.all()):
            break
    else:  # pragma: no cover - probability ~0.05**64
        raise RuntimeError("gamma sampler did not converge")
    # 1 - U lies in (0, 1], so its log is finite.
    boost = torch.log1p(-uniform(k_boost, a.shape, dtype=torch.float64)) / a
    return torch.where(boosted, out + boost, out)


def dirichlet(k: Key, concentration: torch.Tensor) -> torch.Tensor:
    """Dirichlet draws over the last dimension of ``concentration`` (float64): normalised
    independent Gamma draws, computed as a softmax of their logarithms."""
    conc = torch.as_tensor(concentration, dtype=torch.float64)
    if conc.ndim == 0 or conc.shape[-1] < 1:
        raise ValueError("dirichlet needs a concentration tensor with a last dimension >= 1")
    return torch.softmax(log_gamma(k, conc), dim=-1)


def lognormal(
    k: Key, shape: int | tuple[int, ...], *, mean: float = 0.0, sigma: float = 1.0
) -> torch.Tensor:
    """exp(N(mean, sigma²)) draws (float64), like NumPy's ``lognormal(mean, sigma)``."""
    return torch.exp(normal(k, shape, mean=mean, std=sigma, dtype=torch.float64))
