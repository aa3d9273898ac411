"""Inverting Gradients: match the direction (cosine) of the observed gradient or update,
with a total-variation image prior, by Adam on signed gradients inside the data's box."""

from __future__ import annotations

import math
from typing import Any

import torch

from attacks.inversion._common import (
    Reconstruction,
    as_model_fn,
    check_observation,
    check_shape,
    predictor,
)
from attacks.inversion.dlg import INITS, check_iters, fixed_labels, initial_inputs
from attacks.inversion.idlg import infer_labels
from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key, fold_in

MILESTONES = (3 / 8, 5 / 8, 7 / 8)  # the learning rate drops 10x at these fractions of iters


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of images ``[B, ..., H, W]``: the mean absolute
    difference of vertical neighbours plus that of horizontal neighbours (0 for inputs
    with fewer than two spatial dimensions)."""
    if x.ndim < 3:
        return x.new_zeros(())
    dv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    dh = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return dv + dh


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 − ⟨a, b⟩ / (‖a‖ ‖b‖)`` over whole flat vectors (all layers at once)."""
    return 1.0 - (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)


def lr_at(step: int, iters: int, lr: float) -> float:
    """Step-decay schedule: ``lr`` divided by 10 at each of :data:`MILESTONES`."""
    drops = sum(step >= math.floor(m * iters) for m in MILESTONES)
    return lr * 0.1**drops


def inverting_gradients(
    model: Any,
    params: torch.Tensor,
    observed: torch.Tensor,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int = 1,
    labels: torch.Tensor | None = None,
    spec: ParamSpec | None = None,
    iters: int = 200,
    lr: float = 0.1,
    tv_weight: float = 1e-2,
    restarts: int = 1,
    init: str = "normal",
    signed: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    local_steps: int = 1,
    local_lr: float | None = None,
    unroll: bool = True,
    key: Key,
) -> Reconstruction:
    """Reconstruct a client's batch by minimising
    ``1 − cos(predicted, observed) + tv_weight · TV(x)`` over dummy inputs
    ``[batch_size, *input_shape]`` started from ``fold_in(key, r)`` as ``init`` says
    (:func:`attacks.inversion.dlg.initial_inputs`: ``"normal"``, ``"uniform"``,
    ``"zeros"``).

    The cosine makes the attack blind to the gradient's scale (so norm clipping alone
    does not stop it). Adam (``lr``, divided by 10 at 3/8, 5/8 and 7/8 of ``iters``) steps
    on the sign of the input gradient (``signed``); after each step the inputs are clamped
    to ``bounds`` (None: unconstrained). Labels are the known ``labels`` or, when None,
    :func:`attacks.inversion.infer_labels` (needs a task or ``spec``). ``restarts``
    independent runs; the one with the lowest final loss is returned. The observation
    model (gradient / FedAvg update, ``unroll``) is :mod:`._common`'s. Inputs are not
    modified.

    Geiping et al. 2020, Inverting Gradients — How easy is it to break privacy in
    federated learning? (NeurIPS).
    """
    model_fn = as_model_fn(model)
    shape = check_shape(input_shape, batch_size, num_classes)
    check_iters(iters, restarts)
    check_observation(params, observed)
    if tv_weight < 0 or not lr > 0:
        raise ValueError(f"need tv_weight >= 0 and lr > 0, got {tv_weight!r}, {lr!r}")
    if bounds is not None and not bounds[0] < bounds[1]:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if labels is None:
        labels = infer_labels(
            model,
            observed,
            batch_size=batch_size,
            spec=spec,
            local_steps=local_steps,
            local_lr=local_lr,
        )
    probs = fixed_labels(labels, batch_size, num_classes, params.dtype)
    best: Reconstruction | None = None
    with torch.enable_grad():
        predict, target = predictor(
            model_fn, params, observed, local_steps=local_steps, local_lr=local_lr, unroll=unroll
        )

        def objective(x: torch.Tensor) -> torch.Tensor:
            return cosine_distance(predict(x, probs), target) + tv_weight * total_variation(x)

        for r in range(restarts):
            x0 = initial_inputs(
                init, fold_in(key, r), (batch_size, *shape), dtype=params.dtype, device="cpu"
            )
            x = x0.to(params.device).requires_grad_()
            opt = torch.optim.Adam([x], lr=lr)
            history = []
            for step in range(iters):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, iters, lr)
                opt.zero_grad()
                loss = objective(x)
                loss.backward()
                if signed:
                    x.grad.sign_()
                opt.step()
                if bounds is not None:
                    with torch.no_grad():
                        x.clamp_(*bounds)
                history.append(float(loss.detach()))
            final = float(objective(x).detach())
            out = Reconstruction(
                inputs=x.detach().clone(),
                labels=torch.as_tensor(labels).long().clone(),
                history=torch.tensor(history, dtype=torch.float64),
                loss=final if math.isfinite(final) else math.inf,
            )
            if best is None or out.loss < best.loss:
                best = out
    assert best is not None
    return best
