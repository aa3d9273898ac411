"""CAF: covariance-bound agnostic filter (iterative spectral down-weighting)."""

from __future__ import annotations

import math

import attrs
import torch

from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_f,
    check_updates,
    gram,
    weighted_rows,
)


def caf(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Spectral filter: down-weight the rows that stick out along the top eigenvector of
    the covariance until ``m - 2f`` mass is left; among the weighted means visited, return
    the one whose covariance has the smallest top eigenvalue.

    With filter masses ``c`` (one per active row, starting at 1), while ``Σ c > m - 2f``:
    ``p = c / Σ c``; ``μ = Σ p_i x_i``; ``(λ, v)`` = top eigenpair of
    ``Σ p_i (x_i - μ)(x_i - μ)ᵀ``; ``τ_i = ((x_i - μ)ᵀ v)²``;
    ``c_i ← c_i (1 - τ_i / max τ)``. For the masses ``c*`` with the smallest ``λ`` the result
    is ``Σ w_i c*_i x_i / Σ w_i c*_i`` (``f = 0``: the weighted mean). The filter itself
    treats active rows alike, so a client cannot buy influence over it with a large weight.
    The eigenpair is exact and never forms a ``d × d`` matrix: it comes from the ``m × m``
    Gram matrix ``K`` of the rows (``diag(√p)(I - 1pᵀ) K (I - p1ᵀ)diag(√p)`` has the same
    nonzero spectrum), so an iteration costs ``O(m³)`` and the data is read twice (Gram,
    final mean).

    Conventions: ``max τ`` is taken over rows still holding mass, so each iteration
    removes at least one row (at most ``m`` iterations). ByzFL takes it over all rows and
    estimates ``(λ, v)`` with one power-method step from a random start: its result is
    random and its loop can stall once a removed outlier dominates ``max τ``. Rows of
    weight 0 are absent (they may hold NaN/Inf); ``key`` is unused. Raises ``ValueError``
    when ``2f >= m``.

    Extra memory: one coordinate chunk (``_common``), ``O(m²)`` numbers, the ``[d]``
    output.

    Allouah, Guerraoui, Stephan 2025, "Towards Trustworthy Federated Learning with
    Untrusted Participants" (ICML).
    """
    del key
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    m = index.numel()
    rows = None if m == updates.shape[0] else index  # all active: no gather copy
    check_f(f, m, "caf")
    w_active = w.index_select(0, index).cpu().to(torch.float64)
    masses = torch.ones_like(w_active)
    if f > 0:
        k = gram(updates, rows, center="row").cpu()
        if not bool(torch.isfinite(k).all()):
            raise ValueError("caf: active rows hold NaN/Inf (or values too large to square)")
        k = (k + k.T) / 2
        masses = _filter(k, m - 2 * f)
    mass = w_active * masses
    full = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    full[index] = (mass / mass.sum()).to(full.device)
    return weighted_rows(updates, full, finite=rows is None and f > 0)  # f > 0: rows checked


def _filter(k: torch.Tensor, floor: int) -> torch.Tensor:
    """Run the CAF loop on the Gram matrix ``k``; the filter masses of the chosen mean."""
    c = torch.ones(k.shape[0], dtype=k.dtype)
    best_lam, best = math.inf, c
    while float(c.sum()) > floor:
        p = c / c.sum()
        kp = k @ p
        centred = k - kp[:, None] - kp[None, :] + p @ kp  # Gram of x_i - μ
        root = p.sqrt()
        evals, evecs = torch.linalg.eigh(root[:, None] * centred * root[None, :])
        lam = float(evals[-1])
        if lam < best_lam:
            best_lam, best = lam, c
        if lam <= 0.0:
            break  # every row with mass sits at μ: nothing left to filter
        # (x_i - μ)ᵀ v with v = Yᵀ diag(√p) u / √λ, where Y holds the centred rows.
        tau = (centred @ (root * evecs[:, -1])).square() / lam
        live = c > 0
        tau_max = float(tau[live].max())
        if tau_max <= 0.0:
            break
        c = torch.where(live, c * (1.0 - tau / tau_max), c).clamp_(min=0.0)
    return best


@attrs.frozen
class CAF(KernelReducer):
    """Reducer wrapping :func:`caf` (fields = its hyper-parameters)."""

    kernel = staticmethod(caf)
    f: int = attrs.field(default=1, validator=int_at_least(0))
