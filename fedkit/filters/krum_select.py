"""Krum / Multi-Krum selection as a filter: keep the best-scored clients."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators.krum import krum_scores
from fedkit.core.checks import int_at_least
from fedkit.core.components import Transform, as_weights
from fedkit.core.keys import Key
from fedkit.filters._common import check_int, check_rows


def check_m(m: object, weights: torch.Tensor) -> int:
    """``m``: an int with ``1 <= m <=`` the number of active rows."""
    m = check_int(m, "krum_select: m", 1)
    n_active = int((weights > 0).sum())
    if m > n_active:
        raise ValueError(f"krum_select: cannot keep m={m} rows out of {n_active} active rows")
    return m


def keep_lowest(scores: torch.Tensor, weights: torch.Tensor, *, m: int) -> torch.Tensor:
    """New weights: the ``m`` active rows with the lowest ``scores`` keep their weight, every
    other row gets 0 (NaN ranks last; ties go to the lower index)."""
    m = check_m(m, weights)
    active = weights > 0
    ranked = torch.where(torch.isnan(scores), torch.inf, scores.double())
    by_score = torch.sort(ranked, stable=True).indices
    active_first = torch.sort((~active[by_score]).to(torch.int8), stable=True).indices
    keep = torch.zeros_like(active).index_fill_(0, by_score[active_first][:m], True)
    return torch.where(keep, weights, torch.zeros_like(weights))


def krum_select(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    f: int,
    m: int = 1,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``m`` active rows with the lowest Krum scores (sum of squared distances to
    their ``n − f − 2`` nearest active neighbours) and zero every other weight. The rows are
    returned unchanged (the input tensor itself, never written to).

    Blanchard et al. 2017, Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent (NeurIPS); Multi-Krum (m > 1) from El Mhamdi et al. 2018, The Hidden
    Vulnerability of Distributed Learning in Byzantium (ICML).
    """
    updates, w = check_rows(updates, weights, "krum_select")
    check_m(m, w)
    return updates, keep_lowest(krum_scores(updates, w, f=f), w, m=m)


@attrs.frozen
class KrumSelect(Transform):
    """Component for :func:`krum_select`: rejected rows carry the reason ``"krum"`` and the
    Krum scores are reported under ``"scores"``."""

    f: int = attrs.field(validator=int_at_least(0))
    m: int = attrs.field(default=1, validator=int_at_least(1))

    def __call__(self, updates, weights, state, key):
        w = as_weights(weights, updates.shape[0], updates)
        check_m(self.m, w)
        scores = krum_scores(updates, w, f=self.f)
        new_w = keep_lowest(scores, w, m=self.m)
        rejected = (w > 0) & (new_w <= 0)
        return (updates, new_w), state, {"rejected": {"krum": rejected}, "scores": {"krum": scores}}
