"""Krum and Multi-Krum: keep the rows closest to their nearest neighbours."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import int_at_least
from fedkit.core.components import KernelReducer, as_weights
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_f_bound,
    check_updates,
    gram,
    gram_sq_distances,
    weighted_rows,
)


def active_sq_distances(updates: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Squared distances ``[m, m]`` (float64) between the active rows ``index``, from one
    chunked Gram matrix centred on a typical row (so huge outlier rows do not cost the
    ordinary rows their precision). A NaN distance (a row holding NaN, or a float64 row so
    huge its square overflows) becomes ``+inf``: such a row is infinitely far from all."""
    rows = None if index.numel() == updates.shape[0] else index
    return _sq_distances(gram(updates, rows, center="row"))


def _sq_distances(g: torch.Tensor) -> torch.Tensor:
    """Squared distances from a Gram matrix ``g``, made exactly symmetric (so
    mutual-neighbour ties are exact), NaN as ``+inf``."""
    dist = gram_sq_distances(g)
    dist = (dist + dist.T) / 2
    return torch.nan_to_num_(dist, nan=torch.inf)


def rank_rows(scores: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Positions ordered by ``scores`` (ascending); ties broken by the sum of distances to
    all rows (e.g. two mutual nearest neighbours tie on a one-neighbour score), then by
    position. The order depends on the rows, not on where they sit in the input."""
    spread = torch.sort(dist, dim=1).values.sum(dim=1)  # summed in sorted order: exact ties
    by_spread = torch.sort(spread, stable=True).indices
    return by_spread[torch.sort(scores[by_spread], stable=True).indices]


def sum_of_nearest(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Per row of ``dist`` (``[m, m]``), the sum of its ``k`` smallest entries off the
    diagonal (``k <= m - 1``)."""
    if k == 0:
        return torch.zeros(dist.shape[0], dtype=dist.dtype, device=dist.device)
    others = dist.clone().fill_diagonal_(torch.inf)
    return others.topk(k, dim=1, largest=False).values.sum(dim=1)


def krum_scores(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Krum score of each row (``Tensor[n]``, float64): the sum of its squared distances to
    its ``n_active − f − 2`` nearest other active rows; ``+inf`` for rows of weight 0 (and
    for a row holding NaN). Lower is more central. Needs ``n_active >= 2f + 3``.

    Peak extra memory: one coordinate chunk (``CHUNK_ELEMENTS`` values; a centred copy and,
    when some rows are absent, the gathered copy) and ``[n, n]`` matrices.

    Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent (NeurIPS).
    """
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    scores = torch.full((updates.shape[0],), torch.inf, dtype=torch.float64, device=updates.device)
    scores[index] = sum_of_nearest(_checked_distances(updates, index, f), index.numel() - f - 2)
    return scores


def _checked_distances(updates: torch.Tensor, index: torch.Tensor, f: int) -> torch.Tensor:
    """:func:`active_sq_distances` after checking Krum's bound ``n_active >= 2f + 3``."""
    check_f_bound(f, index.numel(), factor=2, extra=3, who="krum")
    return active_sq_distances(updates, index)


def krum_selection(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    m: int = 1,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The ``m`` active rows with the lowest :func:`krum_scores`: ``(chosen, scores,
    finite)`` with ``chosen`` their positions (int64 ``[m]``, best first; ties as in
    :func:`krum`), ``scores`` the Krum scores (float64 ``[n]``, ``+inf`` for absent rows)
    and ``finite`` whether every row of ``updates`` is known to be finite (all rows active
    and every squared norm in the Gram matrix finite), so a weighted sum may multiply the
    unselected rows by 0. Needs ``n_active >= 2f + 3`` and ``1 <= m <= n_active``.
    ``key`` is unused.

    Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent (NeurIPS).
    """
    updates, w = check_updates(updates, weights)
    index = active_index(w)
    if not isinstance(m, int) or isinstance(m, bool) or not 1 <= m <= index.numel():
        raise ValueError(
            f"multi_krum: m must be an int in [1, n_active={index.numel()}], got {m!r}"
        )
    check_f_bound(f, index.numel(), factor=2, extra=3, who="krum")
    rows = None if index.numel() == updates.shape[0] else index
    g = gram(updates, rows, center="row")
    # a row holding Inf/NaN has a non-finite squared norm (its centred square sum), and a
    # finite float32 row never overflows: the Gram matrix redoes such a chunk in float64
    finite = rows is None and bool(torch.isfinite(torch.diagonal(g)).all())
    dist = _sq_distances(g)
    near = sum_of_nearest(dist, index.numel() - f - 2)
    scores = torch.full((updates.shape[0],), torch.inf, dtype=torch.float64, device=updates.device)
    scores[index] = near
    return index[rank_rows(near, dist)[:m]], scores, finite


def krum(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Krum: the active row with the lowest :func:`krum_scores` (a copy, ``Tensor[d]``);
    ties go to the row with the smaller sum of distances to all rows (then the lower
    index; Flower takes the lower index). Weights only decide which rows are present. Needs
    ``n_active >= 2f + 3``. ``key`` is unused.

    Peak extra memory: as :func:`krum_scores`.

    Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent (NeurIPS).
    """
    return krum_with_selection(updates, weights, f=f)[0]


def krum_with_selection(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, f: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`krum` with its selection: ``(out, chosen, scores)`` as in
    :func:`krum_selection` (``chosen`` holds the one row returned)."""
    chosen, scores, _ = krum_selection(updates, weights, f=f)
    return updates[chosen[0]].clone(), chosen, scores


def multi_krum(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    m: int,
    key: Key | None = None,
) -> torch.Tensor:
    """Multi-Krum: the weighted mean ``Σ w_i x_i / Σ w_i`` of the ``m`` active rows with the
    lowest :func:`krum_scores` (ties as in :func:`krum`). Weights count as example counts in
    that mean (as Flower's ``aggregate_krum`` and ``MultiKrum``), not in the selection.
    ``m = 1`` is Krum. Needs ``n_active >= 2f + 3`` and ``1 <= m <= n_active``.
    ``key`` is unused.

    The mean is one weighted pass over the rows; when every row is finite (all active, and
    the Gram matrix's squared norms finite) it multiplies the unselected rows by 0 instead
    of gathering the selected ones chunk by chunk.

    Peak extra memory: as :func:`krum_scores`.

    Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent (NeurIPS).
    """
    return multi_krum_with_selection(updates, weights, f=f, m=m)[0]


def multi_krum_with_selection(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, f: int, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`multi_krum` with its selection: ``(out, chosen, scores)`` as in
    :func:`krum_selection`."""
    updates, w = check_updates(updates, weights)
    chosen, scores, finite = krum_selection(updates, w, f=f, m=m)
    coeffs = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    chosen_w = w.index_select(0, chosen).to(torch.float64)
    coeffs[chosen] = chosen_w / chosen_w.sum()
    return weighted_rows(updates, coeffs, finite=finite), chosen, scores


def selection_info(
    weights: torch.Tensor | None, like: torch.Tensor, chosen: torch.Tensor, scores: torch.Tensor
) -> dict:
    """A Krum reducer's info: the active rows of ``like`` (``[n, d]``) not ``chosen`` are
    rejected with reason ``"krum"``; the Krum scores go under ``"scores"``."""
    active = as_weights(weights, like.shape[0], like) > 0
    selected = torch.zeros_like(active).index_fill_(0, chosen, True)
    return {"rejected": {"krum": active & ~selected}, "scores": {"krum": scores}}


@attrs.frozen
class Krum(KernelReducer):
    """Component for :func:`krum`; its info rejects (reason ``"krum"``) every active row
    but the chosen one and carries the Krum scores under ``"scores"``."""

    kernel = staticmethod(krum)
    f: int = attrs.field(validator=int_at_least(0))

    def __call__(self, updates, weights, state, key):
        out, chosen, scores = krum_with_selection(updates, weights, f=self.f)
        return out, state, selection_info(weights, updates, chosen, scores)


@attrs.frozen
class MultiKrum(KernelReducer):
    """Component for :func:`multi_krum`; its info rejects (reason ``"krum"``) the active
    rows outside the ``m`` chosen and carries the Krum scores under ``"scores"``."""

    kernel = staticmethod(multi_krum)
    f: int = attrs.field(validator=int_at_least(0))
    m: int = attrs.field(validator=int_at_least(1))

    def __call__(self, updates, weights, state, key):
        out, chosen, scores = multi_krum_with_selection(updates, weights, f=self.f, m=self.m)
        return out, state, selection_info(weights, updates, chosen, scores)
