"""Robust learning rate: reverse the server step where too few clients agree on the sign."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.components import Reducer, as_weights
from fedkit.core.keys import Key
from fedkit.core.rows import (
    active_index,
    check_updates,
    coordinate_chunks,
    gather_chunk,
)


def check_threshold(threshold: object) -> int:
    """``threshold`` as an int ``>= 0`` or a ``ValueError`` naming it."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ValueError(
            f"rlr: threshold must be an int >= 0 (the number of agreeing clients θ), "
            f"got {threshold!r}"
        )
    return threshold


def check_lr(lr: object) -> float:
    """``lr`` as a finite float ``> 0`` or a ``ValueError`` naming it."""
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0.0 < lr < float("inf"):
        raise ValueError(f"rlr: lr must be a finite number > 0 (the server rate η), got {lr!r}")
    return float(lr)


def rlr_round(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    threshold: int,
    lr: float = 1.0,
    key: Key | None = None,
) -> tuple[torch.Tensor, int]:
    """:func:`rlr`'s aggregate and the number of coordinates whose rate was reversed."""
    del key
    updates, w = check_updates(updates, weights)
    threshold = check_threshold(threshold)
    lr = check_lr(lr)
    n, d = updates.shape
    index = active_index(w)
    rows = None if index.numel() == n else index  # all active: no gather copy
    coeffs = w.index_select(0, index).to(torch.float64)
    coeffs = (coeffs / coeffs.sum()).to(updates.dtype)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    flipped = 0
    for cols in coordinate_chunks(index.numel(), d):
        block = gather_chunk(updates, rows, cols)
        if not bool(torch.isfinite(block).all()):
            raise ValueError("rlr: active rows hold NaN/Inf")
        votes = torch.sign(block).sum(dim=0).abs()  # exact: small integers in any float
        agree = votes >= threshold
        flipped += int((~agree).sum())
        sign = agree.to(updates.dtype) * 2 - 1  # +1 where the vote holds, -1 elsewhere
        out[cols] = (coeffs @ block) * sign * lr
    return out, flipped


def rlr(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    threshold: int,
    lr: float = 1.0,
    key: Key | None = None,
) -> torch.Tensor:
    """The weighted mean of the rows with a per-coordinate server learning rate ``±lr``:
    ``x̄_j · η`` where ``|Σ_i sign(x_ij)| >= θ`` and ``x̄_j · (−η)`` elsewhere (``Tensor[d]``).

    The sign vote counts every active row once (``sign(0) = 0``), whatever its weight; the
    mean is weighted by ``weights`` (example counts, as the paper's FedAvg). A coordinate on
    which fewer than ``θ = threshold`` clients agree, net, is one that a small group (a
    backdoor's few poisoned clients) is pushing against an indifferent majority: the server
    moves it the other way. ``θ = 0`` never reverses (plain FedAvg times ``η``); ``θ`` above
    the number of active rows reverses every coordinate. ``f`` colluding clients pushing one
    coordinate the same way cannot set its direction alone when ``θ > f`` (choose ``θ``
    above the number of Byzantine clients expected in a round).

    A reducer, not a server transform: the vote needs the individual rows, which a server
    transform never sees; ``lr`` is RLR's ``η`` (keep 1 and put a plain server learning rate
    after it, or fold it in here). Rows of weight 0 are absent (they may hold NaN/Inf); an
    active row holding NaN/Inf is an error. ``key`` is unused (deterministic).

    Extra memory: one coordinate chunk (``_common``) and the ``[d]`` output.

    Ozdayi, Kantarcioglu, Gel 2021, "Defending against Backdoors in Federated Learning with
    Robust Learning Rate" (AAAI).
    """
    return rlr_round(updates, weights, threshold=threshold, lr=lr, key=key)[0]


@attrs.frozen
class RLR(Reducer):
    """Reducer for :func:`rlr`. No client is rejected (the defense acts on coordinates);
    ``info``: ``flipped`` (coordinates whose rate was reversed) and ``flipped_fraction``."""

    threshold: int = attrs.field()
    lr: float = attrs.field(default=1.0, converter=float)

    def __attrs_post_init__(self) -> None:
        check_threshold(self.threshold)
        check_lr(self.lr)

    def __call__(self, updates, weights, state, key):
        w = as_weights(weights, updates.shape[0], updates)
        out, flipped = rlr_round(updates, w, threshold=self.threshold, lr=self.lr, key=key)
        d = updates.shape[1]
        return out, state, {"flipped": flipped, "flipped_fraction": flipped / max(d, 1)}
