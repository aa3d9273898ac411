"""Bucketing: average random groups of clients before a robust reducer.

Bucketing turns ``n`` active rows into ``⌈n/bucket_size⌉`` buckets, and a robust rule after it
counts buckets, not clients: Krum needs ``⌈n/bucket_size⌉ >= 2f + 3``.
:func:`check_bucketed_reducer` checks
a chain against such rules (:func:`row_rule`) once the number of clients per round is known,
and arms each Bucketing with the rule that follows it, so a round that brings too few rows
fails at the Bucketing with the numbers rather than deep inside the reducer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import torch

from fedkit.aggregators.bulyan import Bulyan
from fedkit.aggregators.caf import CAF
from fedkit.aggregators.dnc import DnC
from fedkit.aggregators.krum import Krum, MultiKrum
from fedkit.aggregators.mda import MDA
from fedkit.aggregators.meamed import MeaMed
from fedkit.aggregators.monna import MoNNA
from fedkit.aggregators.smea import SMEA
from fedkit.aggregators.trimmed_mean import TrimmedMean
from fedkit.core.checks import int_at_least
from fedkit.core.components import Chain, Transform, as_weights
from fedkit.core.components import chain as compose
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key, permutation
from fedkit.core.rows import active_index, coordinate_chunks, gather_chunk
from fedkit.filters._common import check_int, check_rows
from fedkit.filters.arc import ARC
from fedkit.filters.krum_select import KrumSelect
from fedkit.filters.nnm import NNM


@renamed_arguments(s="bucket_size")
def bucket_assignment(weights: torch.Tensor, *, bucket_size: int, key: Key) -> torch.Tensor:
    """Bucket of every row (int64, ``[n]``): the active rows in a random order (drawn from
    ``key``) are cut into consecutive buckets of ``bucket_size``; rows of weight 0 get -1."""
    bucket_size = check_int(bucket_size, "bucketing: bucket_size", 1)
    if key is None:
        raise ValueError("bucketing needs a key (it draws a random permutation)")
    index = active_index(weights)
    m = index.numel()
    if m == 0:
        raise ValueError("bucketing: every weight is zero, no row to put in a bucket")
    order = index.index_select(0, permutation(key, m, device=weights.device))
    bucket = torch.full(weights.shape, -1, dtype=torch.int64, device=weights.device)
    return bucket.index_copy_(0, order, torch.arange(m, device=weights.device) // bucket_size)


def bucket_means(
    updates: torch.Tensor, weights: torch.Tensor | None, bucket: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of each bucket in output row ``j`` (for bucket ``j``), with weight the
    bucket's total weight; output rows past the last bucket are zeros with weight 0."""
    updates, w = check_rows(updates, weights, "bucketing")
    n = updates.shape[0]
    if bucket.shape != (n,):
        raise ValueError(f"bucketing: bucket must have shape ({n},), got {tuple(bucket.shape)}")
    index = torch.nonzero(bucket >= 0).flatten()
    if index.numel() == 0:
        raise ValueError("bucketing: no row is assigned to a bucket")
    if not bool((w.index_select(0, index) > 0).all()):
        raise ValueError("bucketing: a row of weight 0 is assigned to a bucket")
    of = bucket.index_select(0, index)
    b = int(of.max()) + 1
    if b > n:
        raise ValueError(f"bucketing: bucket ids must be < n = {n}, got {b - 1}")
    totals = torch.zeros(n, dtype=w.dtype, device=w.device)
    totals.index_add_(0, of, w.index_select(0, index))
    coeffs = torch.zeros(b, index.numel(), dtype=torch.float64, device=updates.device)
    share = w.index_select(0, index).double() / totals.index_select(0, of).double()
    coeffs[of, torch.arange(index.numel(), device=updates.device)] = share
    coeffs = coeffs.to(updates.dtype)
    out = torch.zeros_like(updates)
    for cols in coordinate_chunks(index.numel(), updates.shape[1]):
        out[:b, cols] = coeffs @ gather_chunk(updates, index, cols)
    return out, totals


@attrs.frozen
class RowRule:
    """A component's minimum number of active rows: ``factor·f + extra``, and at least
    ``keep`` when it keeps that many rows (Multi-Krum's ``m``). ``who`` names it."""

    who: str
    f: int
    factor: int
    extra: int
    keep: int = 0

    @property
    def need(self) -> int:
        return max(self.factor * self.f + self.extra, self.keep)

    def __str__(self) -> str:
        text = (
            f"{self.who} needs n >= {self.factor}f + {self.extra} = "
            f"{self.factor * self.f + self.extra} rows for f={self.f}"
        )
        return text + (f" and n >= m = {self.keep}" if self.keep else "")


# Components whose kernel refuses too few active rows: (factor, extra) of ``factor·f + extra``.
_BOUNDS: dict[type, tuple[int, int]] = {
    Krum: (2, 3),  # Blanchard et al. 2017
    MultiKrum: (2, 3),
    KrumSelect: (2, 3),
    Bulyan: (4, 3),  # El Mhamdi et al. 2018
    TrimmedMean: (2, 1),  # more than 2f rows
    MeaMed: (2, 1),
    CAF: (2, 1),
    DnC: (2, 1),
    MDA: (2, 1),
    MoNNA: (2, 1),
    SMEA: (2, 1),
    NNM: (1, 1),  # more than f rows
    ARC: (1, 1),
}


def row_rule(component: Any) -> RowRule | None:
    """The minimum-rows rule of ``component`` (``None`` when it has none), as its kernel
    checks it on the active rows."""
    bound = _BOUNDS.get(type(component))
    if bound is None:
        return None
    keep = getattr(component, "m", 0) if isinstance(component, MultiKrum | KrumSelect) else 0
    return RowRule(type(component).__name__, int(component.f), *bound, keep=int(keep))


def num_buckets(n: int, bucket_size: int) -> int:
    """``⌈n/bucket_size⌉``: the buckets of ``n`` rows cut in groups of ``bucket_size``."""
    return -(-n // bucket_size)


def _too_few(bucket_size: int, n: int, rule: RowRule, what: str) -> ValueError:
    """The error for ``n`` rows (``what``) cut into too few buckets of ``bucket_size`` for
    ``rule``."""
    if n < rule.need:
        fix = f"no bucket size helps: it needs at least {rule.need} {what}"
    else:
        fix = f"use bucket_size <= {(n - 1) // (rule.need - 1)} or more {what}"
    return ValueError(
        f"Bucketing(bucket_size={bucket_size}) with {n} {what} gives "
        f"⌈{n}/{bucket_size}⌉ = {num_buckets(n, bucket_size)} buckets, "
        f"but {rule.who} after it counts buckets as rows: {rule}; {fix}"
    )


def check_buckets(weights: torch.Tensor, bucket_size: int, then: RowRule | None) -> None:
    """Raise a ``ValueError`` with the numbers when the ``⌈m/bucket_size⌉`` buckets of the ``m``
    active rows fall short of ``then`` (the rule of what follows; None: no check)."""
    if then is None:
        return
    if not isinstance(then, RowRule):
        raise TypeError(f"bucketing: then must be a RowRule or None, got {type(then).__name__}")
    m = int((weights > 0).sum())
    if num_buckets(m, bucket_size) < then.need:
        raise _too_few(bucket_size, m, then, "active rows")


@renamed_arguments(s="bucket_size")
def bucketing(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    bucket_size: int,
    then: RowRule | None = None,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the active rows with ``key``, cut them into ``⌈m/bucket_size⌉`` buckets of
    ``bucket_size`` (the
    last may be smaller) and replace them by the buckets' weighted means: output row ``j``
    is bucket ``j``'s mean with weight the bucket's total weight; the remaining rows are
    zeros of weight 0. The total weight and the weighted mean are preserved. ``then``: the
    minimum-rows rule of what follows (:func:`row_rule`); too few buckets for it raise a
    ``ValueError`` naming ``bucket_size``, ``m``, ``⌈m/bucket_size⌉`` and the rule.

    Karimireddy, He and Jaggi 2022, Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing (ICLR).
    """
    _, w = check_rows(updates, weights, "bucketing")
    check_buckets(w, check_int(bucket_size, "bucketing: bucket_size", 1), then)
    return bucket_means(updates, w, bucket_assignment(w, bucket_size=bucket_size, key=key))


def check_bucketed_reducer(chain: Chain | Iterable[Any], clients_per_round: int) -> Chain:
    """Check that every component with a :func:`row_rule` after a :class:`Bucketing` gets
    enough buckets from ``clients_per_round`` rows (``⌈n/bucket_size⌉`` per Bucketing, ``m`` after a
    KrumSelect); raise a ``ValueError`` naming ``bucket_size``, the clients per round, the number of
    buckets and the rule otherwise. Returns the chain with each Bucketing armed with the
    first rule after it (:attr:`Bucketing.then`), so that a round that brings fewer rows
    (dropouts, rejected replies) fails there with the same numbers. A chain without
    Bucketing is returned unchanged."""
    n = check_int(clients_per_round, "clients_per_round", 1)
    components = list(getattr(chain, "components", chain))
    rows, entering, last = n, n, None  # rows now; rows entering the latest Bucketing; its index
    for i, comp in enumerate(components):
        if isinstance(comp, Bucketing):
            entering, rows, last = rows, num_buckets(rows, comp.bucket_size), i
            continue
        rule = row_rule(comp)
        if rule is None or last is None:
            continue
        if components[last].then is None:
            components[last] = attrs.evolve(components[last], then=rule)
        if rows < rule.need:
            what = "clients per round" if entering == n else f"rows (of {n} clients per round)"
            raise _too_few(components[last].bucket_size, entering, rule, what)
        if isinstance(comp, KrumSelect):
            rows = min(rows, comp.m)
    return compose(*components)


@renamed_arguments(s="bucket_size")
@attrs.frozen
class Bucketing(Transform):
    """Component for :func:`bucketing`. Its info holds ``"bucket"`` (each input row's
    bucket, -1 for rows of weight 0) and ``"empty"`` (output rows holding no bucket); the
    emptied rows are not rejections. ``then``: the minimum-rows rule of the component after
    it (set by :func:`check_bucketed_reducer`; ``None``: unchecked), as in the kernel."""

    bucket_size: int = attrs.field(validator=int_at_least(1))
    then: RowRule | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(RowRule))
    )

    def __call__(self, updates, weights, state, key):
        w = as_weights(weights, updates.shape[0], updates)
        check_buckets(w, self.bucket_size, self.then)
        bucket = bucket_assignment(w, bucket_size=self.bucket_size, key=key)
        out, totals = bucket_means(updates, w, bucket)
        empty = torch.arange(totals.numel(), device=totals.device) > int(bucket.max())
        return (out, totals), state, {"bucket": bucket, "empty": empty}
