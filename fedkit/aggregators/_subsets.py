"""Exact enumeration of the ways to remove ``f`` of ``m`` rows, in vectorised batches.

Subset-search aggregators (MDA, SMEA) score every subset of ``m - f`` rows. Instead of a
Python loop over ``itertools.combinations``, a batch of ranks ``r`` is turned into the
removed rows at once with the combinatorial number system (colexicographic unranking):
the largest ``c`` with ``C(c, i) <= r`` is the ``i``-th removed row, for ``i = f .. 1``.
That is ``f`` ``searchsorted`` calls per batch, whatever the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


def count_subsets(m: int, f: int, max_subsets: int, who: str) -> int:
    """``C(m, f)``, the number of subsets to score; a clear error when it exceeds
    ``max_subsets`` (the caller's budget)."""
    if not isinstance(max_subsets, int) or isinstance(max_subsets, bool) or max_subsets < 1:
        raise ValueError(f"{who}: max_subsets must be a positive int, got {max_subsets!r}")
    total = math.comb(m, f)
    if total > max_subsets:
        raise ValueError(
            f"{who}: exact search needs C({m}, {f}) = {total} subsets of {m - f} rows, more "
            f"than max_subsets={max_subsets}; lower f or raise max_subsets"
        )
    return total


def removal_masks(m: int, f: int, batch: int) -> Iterator[torch.Tensor]:
    """Every set of ``f`` rows out of ``m``, exactly once, as ``BoolTensor[b, m]`` batches
    (True = removed) of at most ``batch`` sets each."""
    total = math.comb(m, f)
    # table[i - 1, c] = C(c, i): non-decreasing in c, at most C(m, f) for i <= f <= m / 2.
    table = torch.tensor(
        [[math.comb(c, i) for c in range(m)] for i in range(1, f + 1)], dtype=torch.int64
    ).reshape(f, m)
    for start in range(0, total, batch):
        rank = torch.arange(start, min(total, start + batch), dtype=torch.int64)
        chosen = torch.empty(rank.numel(), max(f, 1), dtype=torch.int64)
        for i in range(f, 0, -1):
            c = torch.searchsorted(table[i - 1], rank, right=True) - 1
            rank = rank - table[i - 1][c]
            chosen[:, i - 1] = c
        mask = torch.zeros(rank.numel(), m, dtype=torch.bool)
        yield mask.scatter_(1, chosen[:, :f], True) if f > 0 else mask


def batch_size(m: int, per_subset: int, elements: int = 1 << 22) -> int:
    """How many subsets to score at once so that a batch holds about ``elements`` numbers
    when each subset needs ``per_subset`` of them."""
    return max(1, elements // max(1, per_subset))


def argmin_subset_weights(
    scored: Iterator[tuple[torch.Tensor, torch.Tensor]], weights: torch.Tensor
) -> torch.Tensor:
    """Averaging coefficients (float64 ``[m]``, summing to 1) of the best subset.

    ``scored`` yields ``(score[b], removed[b, m])`` batches. The result is the weighted mean
    (by ``weights``) of the kept rows of the subset with the smallest score; subsets tied
    exactly at the minimum are averaged, so the choice does not depend on row order.
    """
    w = weights.to(torch.float64)
    best = math.inf
    acc = torch.zeros_like(w)
    count = 0
    for score, removed in scored:
        low = float(score.min())
        if low > best:
            continue
        if low < best:
            best, count = low, 0
            acc.zero_()
        tied = score == low
        kept = (~removed[tied]).to(torch.float64) * w
        acc += (kept / kept.sum(dim=1, keepdim=True)).sum(dim=0)
        count += int(tied.sum())
    return acc / count
