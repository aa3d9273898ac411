"""Min-max and min-sum (AGR-agnostic attacks): push the mean along a perturbation as far as
the honest rows' own spread allows.

Both attacks send ``μ + γ·p`` for a perturbation ``p`` and the largest ``γ >= 0`` meeting a
constraint on distances to the honest rows ``g_i``:

* min-max: ``max_i ‖μ + γp − g_i‖ <= max_{i,j} ‖g_i − g_j‖``;
* min-sum: ``Σ_i ‖μ + γp − g_i‖² <= max_j Σ_i ‖g_j − g_i‖²``.

Each side is a convex function of ``γ`` that holds at ``γ = 0`` (``μ`` lies in the honest rows'
convex hull, and the mean minimises the sum of squared distances), so the feasible ``γ`` form
an interval ``[0, γ*]``. With ``a_i = ‖μ − g_i‖²``, ``c_i = ⟨μ − g_i, p⟩`` and ``q = ‖p‖²``,
``‖μ + γp − g_i‖² = a_i + 2γc_i + γ²q``: these ``h`` numbers are computed once (chunked,
float64) and every step of the search costs ``O(h)``.

Search (tolerance ``tol``): start at ``gamma_init`` (the paper's 10), double while feasible,
then bisect the bracket ``[lo, hi]`` (``lo`` feasible, ``hi`` not) until
``hi − lo <= tol · hi``; the returned ``γ = lo`` meets the constraint and
``γ · (1 + 2·tol) >= hi`` violates it, so ``γ`` is maximal to relative precision ``tol``.
The paper's own search (Algorithm 1) is a bisection that never goes beyond ``2·γ_init``;
the doubling phase removes that cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs
import torch

from attacks.poisoning._common import (
    Attack,
    check_honest,
    check_positive,
    honest_mean,
    honest_std,
    repeat_row,
    row_dots,
)
from fedkit.core.keys import Key
from fedkit.core.rows import pairwise_sq_distances, sq_distances_to

Perturbation = Literal["unit", "std", "sign"]

_MAX_DOUBLINGS = 1100  # 2**1100 overflows float64: a bracket is always found before
_MAX_BISECTIONS = 200


def perturbation_vector(honest: torch.Tensor, perturbation: Perturbation) -> torch.Tensor:
    """``p`` (``Tensor[d]``): ``"unit"`` = ``−μ/‖μ‖`` (0 when ``μ = 0``), ``"std"`` = ``−σ``
    (coordinate-wise unbiased standard deviation), ``"sign"`` = ``−sign(μ)``."""
    if perturbation == "unit":
        mu = honest_mean(honest)
        norm = torch.linalg.vector_norm(mu, dtype=torch.float64)
        return torch.zeros_like(mu) if norm == 0 else (-mu.double() / norm).to(mu.dtype)
    if perturbation == "std":
        return -honest_std(honest, "min-max/min-sum with perturbation='std'")
    if perturbation == "sign":
        return -torch.sign(honest_mean(honest))
    raise ValueError(f"perturbation must be 'unit', 'std' or 'sign', got {perturbation!r}")


def _quadratic_terms(
    honest: torch.Tensor, p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(a, c, q)`` with ``‖μ + γp − g_i‖² = a_i + 2γ c_i + γ² q`` (float64)."""
    mu = honest_mean(honest)
    a = sq_distances_to(honest, mu)
    p64 = p.double()
    c = torch.dot(mu.double(), p64) - row_dots(honest, p)
    return a, c, float(torch.dot(p64, p64))


def largest_feasible(
    feasible: Callable[[float], bool], *, gamma_init: float = 10.0, tol: float = 1e-6
) -> float:
    """The largest ``γ >= 0`` with ``feasible(γ)`` to relative precision ``tol``, for a
    feasible set ``[0, γ*]``: doubling from ``gamma_init``, then bisection (module doc)."""
    gamma_init = check_positive(gamma_init, "gamma_init")
    tol = check_positive(tol, "tol")
    if not feasible(0.0):
        return 0.0
    lo, hi = 0.0, gamma_init
    for _ in range(_MAX_DOUBLINGS):
        if not feasible(hi):
            break
        lo, hi = hi, hi * 2.0
        if hi == float("inf"):
            return lo
    for _ in range(_MAX_BISECTIONS):
        if hi - lo <= tol * hi:
            break
        mid = 0.5 * (lo + hi)
        if feasible(mid):
            lo = mid
        else:
            hi = mid
    return lo


def min_max_gamma(
    honest: torch.Tensor, p: torch.Tensor, *, gamma_init: float = 10.0, tol: float = 1e-6
) -> float:
    """The largest ``γ`` with ``max_i ‖μ + γp − g_i‖ <= max_{i,j} ‖g_i − g_j‖`` (module doc)."""
    a, c, q = _quadratic_terms(honest, p)
    if q == 0:
        return 0.0
    bound = float(pairwise_sq_distances(honest).max())
    return largest_feasible(
        lambda g: float((a + 2 * g * c + g * g * q).max()) <= bound,
        gamma_init=gamma_init,
        tol=tol,
    )


def min_sum_gamma(
    honest: torch.Tensor, p: torch.Tensor, *, gamma_init: float = 10.0, tol: float = 1e-6
) -> float:
    """The largest ``γ`` with ``Σ_i ‖μ + γp − g_i‖² <= max_j Σ_i ‖g_j − g_i‖²``."""
    a, c, q = _quadratic_terms(honest, p)
    if q == 0:
        return 0.0
    bound = float(pairwise_sq_distances(honest).sum(dim=1).max())
    sa, sc, h = float(a.sum()), float(c.sum()), honest.shape[0]
    return largest_feasible(
        lambda g: sa + 2 * g * sc + h * g * g * q <= bound, gamma_init=gamma_init, tol=tol
    )


def _attack(honest, b, perturbation, gamma_fn, gamma_init, tol) -> torch.Tensor:
    p = perturbation_vector(honest, perturbation)
    gamma = gamma_fn(honest, p, gamma_init=gamma_init, tol=tol)
    return repeat_row(honest_mean(honest) + gamma * p, b)


def min_max(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    perturbation: Perturbation = "unit",
    gamma_init: float = 10.0,
    tol: float = 1e-6,
    key: Key | None = None,
) -> torch.Tensor:
    """Every Byzantine row is ``μ + γp`` with the largest ``γ`` such that its largest distance
    to an honest row is at most the largest distance between two honest rows.

    Shejwalkar & Houmansadr 2021, Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning (NDSS).
    """
    b = check_honest(honest, num_byzantine, "min_max")
    return _attack(honest, b, perturbation, min_max_gamma, gamma_init, tol)


def min_sum(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    perturbation: Perturbation = "unit",
    gamma_init: float = 10.0,
    tol: float = 1e-6,
    key: Key | None = None,
) -> torch.Tensor:
    """Every Byzantine row is ``μ + γp`` with the largest ``γ`` such that its sum of squared
    distances to the honest rows is at most the largest such sum of an honest row.

    Shejwalkar & Houmansadr 2021, Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning (NDSS).
    """
    b = check_honest(honest, num_byzantine, "min_sum")
    return _attack(honest, b, perturbation, min_sum_gamma, gamma_init, tol)


_perturbations = attrs.validators.in_(("unit", "std", "sign"))


@attrs.frozen
class MinMax(Attack):
    """Attack value for :func:`min_max`."""

    kernel = staticmethod(min_max)
    perturbation: str = attrs.field(default="unit", validator=_perturbations)
    gamma_init: float = 10.0
    tol: float = 1e-6


@attrs.frozen
class MinSum(Attack):
    """Attack value for :func:`min_sum`."""

    kernel = staticmethod(min_sum)
    perturbation: str = attrs.field(default="unit", validator=_perturbations)
    gamma_init: float = 10.0
    tol: float = 1e-6
