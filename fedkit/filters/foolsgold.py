"""FoolsGold: down-weight clients whose update histories point the same way (sybils)."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch

from fedkit.core.components import RoundContext, Transform, require_context
from fedkit.core.keys import Key
from fedkit.core.rows import gram
from fedkit.filters._common import check_rows, require_finite, row_norms

#: α after rescaling is capped just below 1 before the logit (the paper's 0.99)
ALPHA_CAP = 0.99


def _check_confidence(value: object, name: str) -> float:
    """``value`` as a finite float > 0 (the logit's confidence κ) or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def cosine_matrix(table: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarities ``[m, m]`` (float64) of the rows ``index`` of ``table`` (all rows
    when None), from one chunked Gram matrix; a zero row has similarity 0 with everything."""
    g = gram(table, index, center="none")
    norms = torch.diagonal(g).clamp(min=0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, g / torch.where(denom > 0, denom, 1.0), 0.0).clamp(-1.0, 1.0)


def foolsgold_scores(
    histories: torch.Tensor, *, confidence: float = 1.0, index: torch.Tensor | None = None
) -> torch.Tensor:
    """FoolsGold's learning-rate factors ``α`` (float64, ``[m]``, in ``[0, 1]``) for the
    ``m`` clients whose update histories (the sum of each client's updates so far) are the
    rows ``index`` of ``histories: [N, d]`` (all rows when None).

    1. ``cs_ij`` = cosine similarity of ``H_i`` and ``H_j``; a client's similarity with
       itself counts as 0 (so ``v_i ≥ 0``, as in the authors' code);
    2. ``v_i = max_j cs_ij``; pardoning: ``cs_ij ← cs_ij · v_i / v_j`` where ``v_j > v_i``
       (an honest client that merely resembles a sybil is not punished as one);
    3. ``α_i = 1 − max_j cs_ij`` clipped to ``[0, 1]``, then ``α ← α / max α`` and the
       maximum (``α = 1``) set to 0.99;
    4. ``α_i ← κ (ln(α_i / (1 − α_i)) + 0.5)`` clipped to ``[0, 1]`` (κ = ``confidence``).

    Clients with near-identical histories (sybils) end at ``α = 0``. When every client
    has a twin (``max α = 0``) every ``α`` is 0.

    Fung, Yoon, Beschastnikh 2020, The Limitations of Federated Learning in Sybil Settings
    (RAID), Algorithm 1 (without its importance weighting of output-layer features).
    """
    m = histories.shape[0] if index is None else index.numel()
    if histories.ndim != 2 or m == 0:
        raise ValueError(
            f"foolsgold: needs at least one history row of a [N, d] table, got "
            f"{tuple(histories.shape)} with {m} rows selected"
        )
    confidence = _check_confidence(confidence, "foolsgold: confidence")
    cs = cosine_matrix(histories, index)
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    pardon = v[None, :] > v[:, None]  # [i, j]: v_j > v_i (then v_j > 0)
    ratio = v[:, None] / torch.where(pardon, v[None, :], 1.0)
    cs = torch.where(pardon, cs * ratio, cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    top = alpha.max()
    if not bool(top > 0):
        return torch.zeros_like(alpha)
    alpha = alpha / top
    alpha = torch.where(alpha >= 1.0, ALPHA_CAP, alpha)
    logit = confidence * (torch.log(alpha) - torch.log1p(-alpha) + 0.5)  # α = 0 gives -inf
    return logit.clamp(0.0, 1.0)


def foolsgold(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    histories: torch.Tensor,
    confidence: float = 1.0,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights multiplied by FoolsGold's ``α`` (:func:`foolsgold_scores`) computed from
    ``histories[i]``, the history of the client that sent row ``i`` (this round's update
    included); rows of weight 0 take no part and keep weight 0. The rows are returned
    unchanged (the input tensor itself). ``key`` is unused.

    Fung, Yoon, Beschastnikh 2020, The Limitations of Federated Learning in Sybil Settings
    (RAID).
    """
    updates, w = check_rows(updates, weights, "foolsgold")
    if histories.shape != updates.shape:
        raise ValueError(
            f"foolsgold: histories must have the updates' shape {tuple(updates.shape)}, "
            f"got {tuple(histories.shape)}"
        )
    active = torch.nonzero(w > 0).flatten()
    alpha = torch.zeros(updates.shape[0], dtype=torch.float64, device=updates.device)
    if active.numel():
        alpha[active] = foolsgold_scores(histories, confidence=confidence, index=active)
    return updates, w * alpha.to(w.dtype)


def client_rows(
    context: RoundContext, weights: torch.Tensor, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, ids)``: the indices of the rows with positive weight and the client id of
    each, checked against ``context`` (one id per row, ``0 <= id < num_clients``, no client
    twice)."""
    clients = context.clients.to(device=weights.device, dtype=torch.int64)
    if clients.shape != weights.shape:
        raise ValueError(
            f"{who}: context.clients must have one id per row, shape {tuple(weights.shape)}, "
            f"got {tuple(clients.shape)}"
        )
    rows = torch.nonzero(weights > 0).flatten()
    ids = clients[rows]
    n = int(context.num_clients)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
        raise ValueError(
            f"{who}: rows of positive weight must carry client ids in [0, num_clients={n}), "
            f"got ids {ids.tolist()}"
        )
    if ids.unique().numel() != ids.numel():
        raise ValueError(f"{who}: a client sent more than one row this round: ids {ids.tolist()}")
    return rows, ids


def grow(table: torch.Tensor, n: int, fill: float | bool = 0) -> torch.Tensor:
    """``table`` (per-client rows along dim 0) extended with ``fill`` rows to ``n`` rows
    (itself when it has enough)."""
    if table.shape[0] >= n:
        return table
    pad = torch.full((n - table.shape[0], *table.shape[1:]), fill, dtype=table.dtype)
    return torch.cat([table, pad.to(table.device)])


@attrs.frozen
class FoolsGold(Transform):
    """Component for :func:`foolsgold` whose state is every client's update history
    ``H_c = Σ_t Δ_c^t`` (``Tensor[N, d]`` for the ``N = context.num_clients`` clients,
    indexed by client id: O(N·d) memory, allocated on the first call and grown when the
    federation grows; a client's row is zero until it sends an update of positive weight).

    Each call adds the round's rows to their clients' histories, compares the histories of
    this round's clients and multiplies each weight by ``α``. Rows whose ``α`` is 0 are
    rejected (reason ``"foolsgold"``); ``α`` is in ``info["scores"]["foolsgold"]`` (NaN for
    rows of weight 0). With the weighted-mean reducer the round's aggregate is
    ``Σ w_i α_i Δ_i / Σ w_i α_i``; the paper scales each client's learning rate by ``α_i``.
    The defense assumes honest clients are more diverse than sybils: when honest updates
    agree (IID data) and attackers send unrelated vectors (Gaussian noise), the honest
    clients are the ones scored down. Needs the round's context (client ids). Left out: the paper's importance weighting of
    the output layer's features in the similarity (a flat update does not say which
    coordinates form the output layer); similarities use the whole history.

    Fung, Yoon, Beschastnikh 2020, The Limitations of Federated Learning in Sybil Settings
    (RAID).
    """

    confidence: float = attrs.field(default=1.0)
    uses_context: ClassVar[bool] = True

    @confidence.validator
    def _check(self, attribute, value):
        _check_confidence(value, "FoolsGold: confidence (κ of the logit)")

    def init(self, d: int) -> torch.Tensor:
        return torch.zeros(0, d)

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        context = require_context(context, "FoolsGold")
        updates, w = check_rows(updates, weights, "FoolsGold")
        rows, ids = client_rows(context, w, "FoolsGold")
        active = w > 0
        require_finite(row_norms(updates), active, "FoolsGold")
        history = updates.new_zeros(0, updates.shape[1]) if state is None else state
        if history.ndim != 2 or history.shape[1] != updates.shape[1]:
            raise ValueError(
                f"FoolsGold: the state holds histories of shape {tuple(history.shape)}, "
                f"not [N, {updates.shape[1]}] for updates of dimension {updates.shape[1]}"
            )
        if history.shape[0] == 0:
            history = history.to(device=updates.device, dtype=updates.dtype)
        history = grow(history.to(updates.device), int(context.num_clients))
        if rows.numel():
            history = history.index_add(0, ids, updates[rows].to(history.dtype))
        alpha = torch.full(w.shape, torch.nan, dtype=torch.float64, device=w.device)
        if rows.numel():
            alpha[rows] = foolsgold_scores(history, confidence=self.confidence, index=ids)
        new_w = torch.where(active, w * torch.nan_to_num(alpha).to(w.dtype), w)
        rejected = active & (new_w <= 0)
        info = {"rejected": {"foolsgold": rejected}, "scores": {"foolsgold": alpha}}
        return (updates, new_w), history, info
