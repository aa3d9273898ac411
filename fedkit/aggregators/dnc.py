"""Divide-and-Conquer: spectral outlier removal on random coordinate subsets."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import int_at_least, number_in
from fedkit.core.components import KernelReducer
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key, split
from fedkit.core.rows import (
    active_index,
    check_f,
    check_updates,
    sample_coordinates,
    weighted_rows,
)


@renamed_arguments(filter_frac="filter_multiplier")
def dnc(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    iters: int = 5,
    sub_dim: int = 10_000,
    filter_multiplier: float = 1.0,
    key: Key | None = None,
) -> torch.Tensor:
    """Weighted mean of the active rows that survive ``iters`` rounds of spectral filtering.

    Each round draws ``sub_dim`` coordinates with its own key (all of them, and no key
    needed, when ``sub_dim >= d``), centres the active rows on them at their plain mean,
    scores each row by its squared projection on the top right singular vector of the
    centred ``[m, sub_dim]`` matrix, and keeps all but the ``floor(filter_multiplier * f)``
    highest scores (``filter_multiplier`` is the paper's ``c``: it multiplies ``f`` and may
    exceed 1). The rows kept in every round (intersection) are averaged with their
    weights; if no row survives every round, the rows removed in the fewest rounds are.
    The singular pair comes from the ``m × m`` Gram matrix of the sampled block
    (score_i = ``λ u_i²`` for its top eigenpair ``(λ, u)``). The filter treats active rows
    alike; weights enter the final mean. Same key, same output; the output does not depend
    on row order (up to score ties). Blades averages the union of the kept sets instead;
    this follows the paper's intersection. Rows of weight 0 are absent (they may hold
    NaN/Inf). Raises ``ValueError`` when ``2f >= m``, on bad hyper-parameters, or when
    sampling is needed and ``key`` is None.

    Extra memory: the ``[m, sub_dim]`` sampled block (float64), ``O(m²)`` numbers, the
    ``[d]`` output.

    Shejwalkar, Houmansadr 2021, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning" (NDSS).
    """
    updates, w = check_updates(updates, weights)
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"dnc: iters must be a positive int, got {iters!r}")
    if not isinstance(sub_dim, int) or isinstance(sub_dim, bool) or sub_dim < 1:
        raise ValueError(f"dnc: sub_dim must be a positive int, got {sub_dim!r}")
    if not filter_multiplier >= 0.0:
        raise ValueError(f"dnc: filter_multiplier must be >= 0, got {filter_multiplier!r}")
    index = active_index(w)
    m = index.numel()
    check_f(f, m, "dnc")
    d = updates.shape[1]
    drop = int(filter_multiplier * f)
    if drop >= m:
        raise ValueError(f"dnc: filter_multiplier * f = {drop} would remove all {m} active rows")
    keys = split(key, iters) if key is not None else (None,) * iters
    removals = torch.zeros(m, dtype=torch.int64)
    for round_key in keys:
        coords = sample_coordinates(round_key, d, sub_dim, "dnc")
        if coords is None:
            block = updates.index_select(0, index)
        else:
            block = updates[index[:, None], coords.to(updates.device)[None, :]]
        block = block.to(torch.float64)
        block -= block.mean(dim=0, keepdim=True)
        inner = (block @ block.T).cpu()
        if not bool(torch.isfinite(inner).all()):
            raise ValueError("dnc: active rows hold NaN/Inf on the sampled coordinates")
        evals, evecs = torch.linalg.eigh(inner)
        scores = evals[-1].clamp(min=0.0) * evecs[:, -1].square()
        if drop > 0:
            removals[torch.topk(scores, drop).indices] += 1
        if coords is None:
            break  # every round would see the same block
    good = removals == removals.min()  # the intersection, or the least-removed rows
    kept = w.index_select(0, index).cpu().to(torch.float64) * good
    full = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    full[index] = (kept / kept.sum()).to(full.device)
    return weighted_rows(updates, full)


@renamed_arguments(filter_frac="filter_multiplier")
@attrs.frozen
class DnC(KernelReducer):
    """Reducer wrapping :func:`dnc` (fields = its hyper-parameters)."""

    kernel = staticmethod(dnc)
    f: int = attrs.field(default=1, validator=int_at_least(0))
    iters: int = attrs.field(default=5, validator=int_at_least(1))
    sub_dim: int = attrs.field(default=10_000, validator=int_at_least(1))
    filter_multiplier: float = attrs.field(default=1.0, validator=number_in(0.0))
