"""FLTrust: trust scores from cosine similarity to the server's own update."""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

from fedkit.core.components import Reducer, RoundContext, as_weights, require_context
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_updates,
    coordinate_chunks,
    gather_chunk,
    weighted_rows,
)


def fltrust_trust(
    updates: torch.Tensor, weights: torch.Tensor | None, reference: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row coefficients [n] float64, trust scores [n] float64)`` of :func:`fltrust`: the
    trust score of row ``i`` is ``ReLU(cos(g_i, g0))`` (0 for an absent row) and the
    coefficient is ``w_i TS_i ‖g0‖ / ‖g_i‖ / Σ_j w_j TS_j`` (all zero when no row is
    trusted)."""
    updates, w = check_updates(updates, weights)
    d = updates.shape[1]
    if not isinstance(reference, torch.Tensor) or reference.shape != (d,):
        shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else reference
        raise ValueError(f"fltrust: reference must be a Tensor of shape ({d},), got {shape!r}")
    if not bool(torch.isfinite(reference).all()):
        raise ValueError("fltrust: the reference update holds NaN/Inf")
    ref = reference.to(device=updates.device)
    index = active_index(w)
    m = index.numel()
    rows = None if m == updates.shape[0] else index  # all active: no gather copy
    dots = torch.zeros(m, dtype=torch.float64, device=updates.device)
    sq = torch.zeros(m, dtype=torch.float64, device=updates.device)
    ref_sq = torch.zeros((), dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, d):
        block = gather_chunk(updates, rows, cols)
        piece = ref[cols].to(block.dtype)
        dots += (block @ piece).to(torch.float64)
        sq += torch.linalg.vector_norm(block, dim=1).to(torch.float64).square()
        ref_sq += torch.linalg.vector_norm(piece).to(torch.float64).square()
    if not bool(torch.isfinite(dots).all() & torch.isfinite(sq).all()):
        raise ValueError("fltrust: active rows hold NaN/Inf (or values too large)")
    norms = sq.sqrt()
    ref_norm = ref_sq.sqrt()
    denom = norms * ref_norm
    cos = torch.where(denom > 0, dots / denom, torch.zeros_like(dots))
    scores = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    scores[index] = cos.clamp(min=0.0)
    trust = w.index_select(0, index).to(torch.float64) * scores[index]
    total = trust.sum()
    coef = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    if bool(total > 0):
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        coef[index] = trust * (ref_norm / safe) / total
    return coef, scores


def fltrust(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    reference: torch.Tensor,
    key: Key | None = None,
) -> torch.Tensor:
    """Trust-weighted mean of the client rows, each rescaled to the reference's norm.

    ``reference`` is ``g0``, the server's own update on its small clean root dataset (a
    ``Tensor[d]`` the server computed: never a client's row). Client ``i`` gets trust
    ``TS_i = ReLU(cos(g_i, g0))`` and is rescaled to ``ĝ_i = g_i ‖g0‖ / ‖g_i‖``; the result
    is ``Σ w_i TS_i ĝ_i / Σ w_i TS_i`` (the paper's rule when all weights are equal), or
    the zero vector when every trust score is 0 (a zero row or a zero ``g0`` has cosine 0).
    Rows of weight 0 are absent (they may hold NaN/Inf); ``key`` is unused.

    Extra memory: one coordinate chunk (``_common``), ``O(n)`` numbers, the ``[d]`` output.

    Cao, Fang, Liu, Gong 2021, "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping" (NDSS).
    """
    del key
    updates, w = check_updates(updates, weights)
    coef, _ = fltrust_trust(updates, w, reference)
    if not bool((coef > 0).any()):
        return torch.zeros(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return weighted_rows(updates, coef, finite=bool((w > 0).all()))


@attrs.frozen
class FLTrust(Reducer):
    """Reducer for :func:`fltrust` whose reference ``g0`` is the server's own update on
    its trusted root dataset (``context.reference``: the run driver trains the global model
    on ``Strategy.root_examples`` clean examples the server holds, each round, Cao et al.'s
    setting), never a client's. A client with trust score 0 (cosine ≤ 0 with ``g0``)
    contributes nothing and is reported rejected (reason ``"fltrust"``); the trust scores
    are in ``info["scores"]["trust"]``."""

    uses_context: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        ref = require_context(context, "FLTrust", reference=True).reference
        w = as_weights(weights, updates.shape[0], updates)
        coef, scores = fltrust_trust(updates, w, ref)
        if bool((coef > 0).any()):
            out = weighted_rows(updates, coef, finite=bool((w > 0).all()))
        else:
            out = torch.zeros(updates.shape[1], dtype=updates.dtype, device=updates.device)
        distrusted = (w > 0) & (scores <= 0)
        return out, state, {"rejected": {"fltrust": distrusted}, "scores": {"trust": scores}}
