"""iDLG: read the labels off the classifier's weight gradient, then run DLG with them."""

from __future__ import annotations

from typing import Any

import torch

from attacks.inversion._common import (
    Reconstruction,
    as_model_fn,
    check_observation,
    gradient_estimate,
    last_weight_gradient,
    spec_of_model,
)
from attacks.inversion.dlg import dlg
from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key


def idlg_labels(last_weight_grad: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """Labels from the gradient ``[num_classes, features]`` of the last Linear layer's
    weight under cross-entropy.

    Row ``c`` is ``mean_i (p_ic − y_ic) h_iᵀ``: with non-negative features ``h`` (after
    ReLU / pooling) only the rows of classes in the batch have negative entries. For one
    example that row is the label (iDLG: the row with the smallest sum, the only negative
    one); for ``batch_size`` examples the ``batch_size`` classes whose rows reach the most
    negative entries (Yin et al. 2021's rule; assumes distinct labels in the batch).

    Zhao et al. 2020, iDLG: Improved Deep Leakage from Gradients (arXiv:2001.02610);
    Yin et al. 2021, See through Gradients: Image Batch Recovery via GradInversion (CVPR).
    """
    g = torch.as_tensor(last_weight_grad)
    if g.ndim != 2 or not torch.is_floating_point(g):
        raise ValueError(f"last_weight_grad must be a float [classes, features], got {g.shape}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= g.shape[0]:
        raise ValueError(
            f"batch_size must be an int in 1..{g.shape[0]} (distinct labels), got {batch_size!r}"
        )
    if batch_size == 1:
        return g.sum(dim=1).argmin().reshape(1)
    return torch.topk(g.amin(dim=1), batch_size, largest=False).indices.sort().values


def infer_labels(
    model: Any,
    observed: torch.Tensor,
    *,
    batch_size: int = 1,
    spec: ParamSpec | None = None,
    local_steps: int = 1,
    local_lr: float | None = None,
) -> torch.Tensor:
    """:func:`idlg_labels` on the last 2-D weight of a flat observation (a gradient, or a
    FedAvg update read as the averaged gradient ``−Δ / (k η)``)."""
    grad = gradient_estimate(observed, local_steps=local_steps, local_lr=local_lr)
    return idlg_labels(last_weight_gradient(grad, spec_of_model(model, spec)), batch_size)


def idlg(
    model: Any,
    params: torch.Tensor,
    observed: torch.Tensor,
    *,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    spec: ParamSpec | None = None,
    iters: int = 100,
    lr: float = 1.0,
    history_size: int = 100,
    restarts: int = 1,
    line_search: str | None = None,
    tolerance_grad: float = 0.0,
    tolerance_change: float = 0.0,
    max_evals: int | None = None,
    init: str = "normal",
    local_steps: int = 1,
    local_lr: float | None = None,
    unroll: bool = True,
    key: Key,
) -> Reconstruction:
    """DLG (:func:`attacks.inversion.dlg`, with the same L-BFGS options and ``init``) with
    the labels fixed to :func:`infer_labels` instead of optimised; the number of classes
    is the last weight gradient's row count. ``spec`` is needed when ``model`` is a plain
    function rather than a task.

    Zhao et al. 2020, iDLG: Improved Deep Leakage from Gradients (arXiv:2001.02610).
    """
    as_model_fn(model)
    check_observation(params, observed)
    spec = spec_of_model(model, spec)
    labels = infer_labels(
        model,
        observed,
        batch_size=batch_size,
        spec=spec,
        local_steps=local_steps,
        local_lr=local_lr,
    )
    num_classes = int(last_weight_gradient(observed, spec).shape[0])
    return dlg(
        model,
        params,
        observed,
        input_shape=input_shape,
        num_classes=num_classes,
        batch_size=batch_size,
        labels=labels,
        iters=iters,
        lr=lr,
        history_size=history_size,
        restarts=restarts,
        line_search=line_search,
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
        max_evals=max_evals,
        init=init,
        local_steps=local_steps,
        local_lr=local_lr,
        unroll=unroll,
        key=key,
    )
