"""FLTrust: trust scores from cosine similarity to the server's own update."""

from __future__ import annotations

import attrs
import torch

from fedkit.aggregators._common import (
    active_index,
    check_updates,
    coordinate_chunks,
    gather_chunk,
    weighted_rows,
)
from fedkit.core.components import KernelReducer
from fedkit.core.keys import Key


def fltrust(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    reference: torch.Tensor | str,
    key: Key | None = None,
) -> torch.Tensor:
    """Trust-weighted mean of the client rows, each rescaled to the reference's norm.

    ``g0`` is the server's update on its small clean root dataset. Client ``i`` gets trust
    ``TS_i = ReLU(cos(g_i, g0))`` and is rescaled to ``ĝ_i = g_i ‖g0‖ / ‖g_i‖``; the result
    is ``Σ w_i TS_i ĝ_i / Σ w_i TS_i`` (the paper's rule when all weights are equal), or
    the zero vector when every trust score is 0 (a zero row or a zero ``g0`` has cosine 0).

    ``reference`` is ``g0`` as a ``Tensor[d]``, or ``"last"``: the last row of ``updates``
    is ``g0`` and only the rows before it are clients (its weight is ignored) — the
    convention of the :class:`FLTrust` component, whose engine appends the server's
    root-data update as row ``n - 1``. Rows of weight 0 are absent (they may hold NaN/Inf);
    ``key`` is unused.

    Extra memory: one coordinate chunk (``_common``), ``O(n)`` numbers, the ``[d]`` output.

    Cao, Fang, Liu, Gong 2021, "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping" (NDSS).
    """
    del key
    if isinstance(reference, str):
        if reference != "last":
            raise ValueError(f"fltrust: reference must be a tensor or 'last', got {reference!r}")
        if not isinstance(updates, torch.Tensor) or updates.ndim != 2 or updates.shape[0] < 2:
            raise ValueError(
                "fltrust: reference='last' needs updates of shape [n + 1, d] with n >= 1 "
                "clients and the server's update as the last row"
            )
        ref = updates[-1]
        updates = updates[:-1]
        if weights is not None:
            weights = torch.as_tensor(weights)[:-1]
    else:
        ref = reference
    updates, w = check_updates(updates, weights)
    d = updates.shape[1]
    if not isinstance(ref, torch.Tensor) or ref.shape != (d,):
        shape = tuple(ref.shape) if isinstance(ref, torch.Tensor) else type(ref).__name__
        raise ValueError(f"fltrust: reference must be a Tensor of shape ({d},), got {shape}")
    if not bool(torch.isfinite(ref).all()):
        raise ValueError("fltrust: the reference update holds NaN/Inf")
    ref = ref.to(device=updates.device)
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
    trust = w.index_select(0, index).to(torch.float64) * cos.clamp(min=0.0)
    total = trust.sum()
    if not bool(total > 0):
        return torch.zeros(d, dtype=updates.dtype, device=updates.device)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    full = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    full[index] = trust * (ref_norm / safe) / total
    return weighted_rows(updates, full, finite=rows is None)


@attrs.frozen
class FLTrust(KernelReducer):
    """Reducer wrapping :func:`fltrust`. The engine appends the server's root-data update
    as row ``n - 1`` of ``updates``; that row is the reference, not a client."""

    kernel = staticmethod(fltrust)
    reference: str = attrs.field(default="last", validator=attrs.validators.in_(("last",)))
