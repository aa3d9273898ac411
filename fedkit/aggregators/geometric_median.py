"""Geometric median by the smoothed Weiszfeld algorithm (RFA)."""

from __future__ import annotations

import math

import attrs
import torch

from fedkit.core.checks import int_at_least, number_in, positive
from fedkit.core.components import KernelReducer
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key
from fedkit.core.rows import active_index, check_updates, gram, weighted_rows


@renamed_arguments(max_iter="iters")
def weiszfeld_coefficients(
    g: torch.Tensor, alpha: torch.Tensor, *, iters: int, tol: float, eps: float
) -> torch.Tensor:
    """Smoothed Weiszfeld on the Gram matrix ``g`` (``[m, m]``, float64, rows translated by
    any common vector) with weights ``alpha`` (``[m]``, summing to 1). Every iterate is a
    weighted average ``v = Σ c_i x_i`` with ``Σ c_i = 1``, so it is kept as ``c`` and
    ``‖v − x_j‖² = cᵀgc − 2 (gc)_j + g_jj`` costs ``O(m²)``: no pass over the rows.

    Starts at ``c = alpha`` (the weighted mean); each step sets ``c ∝ alpha_i / max(eps,
    ‖v − x_i‖)``; stops when the objective ``Σ alpha_i ‖v − x_i‖`` changes by at most
    ``tol`` times its value, or after ``iters`` steps. Returns ``c``."""
    diag = torch.diagonal(g)

    def distances(c: torch.Tensor) -> torch.Tensor:
        gc = g @ c
        return (c @ gc - 2.0 * gc + diag).clamp_(min=0.0).sqrt_()

    c = alpha
    dist = distances(c)
    objective = float(alpha @ dist)
    for _ in range(iters):
        beta = alpha / dist.clamp(min=eps)
        c = beta / beta.sum()
        dist = distances(c)
        new_objective = float(alpha @ dist)
        converged = abs(objective - new_objective) <= tol * new_objective
        objective = new_objective
        if converged or not math.isfinite(objective):
            break
    return c


@renamed_arguments(max_iter="iters")
def geometric_median(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    iters: int = 100,
    tol: float = 1e-6,
    eps: float = 1e-8,
    key: Key | None = None,
) -> torch.Tensor:
    """Weighted geometric median ``argmin_v Σ_i α_i ‖v − x_i‖`` with ``α_i = w_i / Σ w``
    over the active rows (``Tensor[d]``), by smoothed Weiszfeld iterations run to
    convergence: each step re-weights the rows by ``α_i / max(eps, ‖v − x_i‖)`` (``eps``
    keeps a step finite when ``v`` sits on a row); stop when the objective changes by at
    most ``tol`` relative to its value, or after ``iters`` steps.

    All steps are batched over the rows: distances come from one Gram matrix of the
    active rows, centred on a typical row so huge outliers do not cost the others their
    precision (products in the rows' dtype, summed in float64 across coordinate chunks; for
    float32 rows the error stays at the level of the rows' own rounding), and the iterate
    is kept as averaging coefficients, so the rows are read twice in all (Gram, final
    average), whatever the number of steps. The stopping rule is
    relative to the objective, which far outliers inflate: with outliers ``M`` times farther
    than the honest spread, pass ``tol`` well below ``1/M`` to converge among the honest rows.
    A row of weight 0 is absent. ``key`` is unused.

    Peak extra memory: one coordinate chunk plus its centred copy (about 2x a
    chunk of ``CHUNK_ELEMENTS`` values) and ``[n, n]`` matrices.

    Pillutla, Kakade, Harchaoui 2022, Robust Aggregation for Federated Learning (IEEE
    Transactions on Signal Processing).
    """
    updates, w = check_updates(updates, weights)
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"geometric_median: iters must be an int >= 1, got {iters!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"geometric_median: tol must be finite and >= 0, got {tol!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"geometric_median: eps must be finite and > 0, got {eps!r}")
    n = updates.shape[0]
    index = active_index(w)
    alpha = w.index_select(0, index).to(torch.float64)
    alpha = alpha / alpha.sum()
    rows = None if index.numel() == n else index
    g = gram(updates, rows, center="row")
    c = weiszfeld_coefficients(g, alpha, iters=iters, tol=tol, eps=eps)
    coeffs = torch.zeros(n, dtype=torch.float64, device=updates.device)
    coeffs[index] = c
    return weighted_rows(updates, coeffs)


@renamed_arguments(max_iter="iters")
@attrs.frozen
class GeometricMedian(KernelReducer):
    """Component for :func:`geometric_median` (RFA)."""

    kernel = staticmethod(geometric_median)
    iters: int = attrs.field(default=100, validator=int_at_least(1))
    tol: float = attrs.field(default=1e-6, validator=number_in(0.0))
    eps: float = attrs.field(default=1e-8, validator=positive())
