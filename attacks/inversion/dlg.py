"""Deep Leakage from Gradients: optimise dummy inputs and dummy soft labels until the
gradient (or local update) they produce matches the observed one in squared L2 distance."""

from __future__ import annotations

import math
from typing import Any

import torch

from attacks.inversion._common import (
    Reconstruction,
    as_model_fn,
    check_shape,
    one_hot,
    predictor,
)
from fedkit.core.keys import Key, fold_in, normal, split


def lbfgs_match(
    predict,
    target: torch.Tensor,
    x0: torch.Tensor,
    label_logits0: torch.Tensor | None,
    fixed_probs: torch.Tensor | None,
    *,
    iters: int,
    lr: float,
    history_size: int,
) -> Reconstruction:
    """L-BFGS on ``‖predict(x, softmax(ℓ)) − target‖²`` from ``(x0, ℓ0)`` (labels fixed to
    ``fixed_probs`` when ``label_logits0`` is None). One L-BFGS iteration per step; the
    best point seen (lowest loss) is returned, so a diverging run keeps its best iterate."""
    x = x0.clone().requires_grad_()
    logits = None if label_logits0 is None else label_logits0.clone().requires_grad_()
    leaves = [x] if logits is None else [x, logits]
    opt = torch.optim.LBFGS(
        leaves, lr=lr, max_iter=1, history_size=history_size, line_search_fn=None
    )

    def probs() -> torch.Tensor:
        return fixed_probs if logits is None else torch.softmax(logits, dim=-1)

    def objective() -> torch.Tensor:
        return (predict(x, probs()) - target).pow(2).sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    def snapshot() -> tuple[torch.Tensor, torch.Tensor]:
        return x.detach().clone(), probs().detach().argmax(dim=-1)

    history: list[float] = []
    best_loss, best = math.inf, snapshot()
    for _ in range(iters):
        point = snapshot()
        loss = float(opt.step(closure).detach())
        history.append(loss)
        if not math.isfinite(loss):
            break
        if loss < best_loss:
            best_loss, best = loss, point
    else:
        final = float(objective().detach())
        if final < best_loss:
            best_loss, best = final, snapshot()
    return Reconstruction(
        inputs=best[0],
        labels=best[1],
        history=torch.tensor(history, dtype=torch.float64),
        loss=best_loss,
    )


def check_iters(iters: int, restarts: int) -> None:
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive int, got {restarts!r}")


def fixed_labels(
    labels: torch.Tensor | None, batch_size: int, num_classes: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """Known labels as one-hot rows (None when unknown); checks their count."""
    if labels is None:
        return None
    probs = one_hot(labels, num_classes, dtype)
    if probs.shape[0] != batch_size:
        raise ValueError(f"got {probs.shape[0]} labels for batch_size={batch_size}")
    return probs


def dlg(
    model: Any,
    params: torch.Tensor,
    observed: torch.Tensor,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int = 1,
    labels: torch.Tensor | None = None,
    iters: int = 100,
    lr: float = 1.0,
    history_size: int = 100,
    restarts: int = 1,
    local_steps: int = 1,
    local_lr: float | None = None,
    unroll: bool = True,
    key: Key,
) -> Reconstruction:
    """Reconstruct a client's batch from what the server saw of it.

    ``model`` is a task (``apply(flat, x)``) or a function ``(flat, x) -> logits``;
    ``observed`` the client's gradient at ``params`` (``local_lr=None``) or its update
    after ``local_steps`` SGD steps of rate ``local_lr`` (see :mod:`._common`). Dummy
    inputs ``[batch_size, *input_shape]`` and dummy label logits start from
    ``normal(key)``; L-BFGS (``lr``, ``history_size``, ``iters`` iterations) minimises the
    squared distance between their gradient/update and ``observed``, jointly over inputs
    and soft labels, or over inputs only when ``labels`` are known. ``restarts`` runs
    from independent inits (``fold_in(key, r)``) and keeps the lowest loss. Labels out:
    the arg-max of the dummy soft labels. Inputs are not modified.

    Zhu et al. 2019, Deep Leakage from Gradients (NeurIPS).
    """
    model_fn = as_model_fn(model)
    shape = check_shape(input_shape, batch_size, num_classes)
    check_iters(iters, restarts)
    dtype = params.dtype
    fixed = fixed_labels(labels, batch_size, num_classes, dtype)
    best: Reconstruction | None = None
    with torch.enable_grad():
        predict, target = predictor(
            model_fn, params, observed, local_steps=local_steps, local_lr=local_lr, unroll=unroll
        )
        for r in range(restarts):
            k_x, k_y = split(fold_in(key, r), 2)
            x0 = normal(k_x, (batch_size, *shape), dtype=dtype, device=params.device)
            y0 = None
            if fixed is None:
                y0 = normal(k_y, (batch_size, num_classes), dtype=dtype, device=params.device)
            out = lbfgs_match(
                predict, target, x0, y0, fixed, iters=iters, lr=lr, history_size=history_size
            )
            if best is None or out.loss < best.loss:
                best = out
    assert best is not None
    return best
