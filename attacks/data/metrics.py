"""Metrics of data poisoning: clean accuracy and backdoor success rate."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attacks.data._common import check_class, check_labels
from attacks.data.backdoor import PixelTrigger, stamp

PredictFn = Callable[[torch.Tensor], torch.Tensor]


def predict_labels(
    predict_fn: PredictFn, x: torch.Tensor, *, batch_size: int | None = None
) -> torch.Tensor:
    """Predicted classes for ``x``: ``predict_fn`` returns logits ``[N, K]`` (arg-maxed) or
    labels ``[N]``; run without gradients, ``batch_size`` examples at a time (all at once
    when None)."""
    n = x.shape[0]
    step = n if batch_size is None else int(batch_size)
    if step < 1 and n:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts = []
    with torch.no_grad():
        for start in range(0, n, max(step, 1)):
            out = predict_fn(x[start : start + step])
            if out.ndim == 2:
                out = out.argmax(dim=1)
            elif out.ndim != 1:
                raise ValueError(
                    f"predict_fn must return logits [N, K] or labels [N], got {tuple(out.shape)}"
                )
            parts.append(out)
    if not parts:
        return torch.zeros(0, dtype=torch.int64, device=x.device)
    return torch.cat(parts)


def clean_accuracy(
    predict_fn: PredictFn, x: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None
) -> float:
    """Fraction of ``x`` whose predicted class equals ``y`` (the main-task accuracy)."""
    y = check_labels(y, "clean_accuracy")
    if x.shape[0] != y.shape[0] or y.numel() == 0:
        raise ValueError(
            f"clean_accuracy: needs matching, non-empty x and y, got {x.shape[0]} and {y.shape[0]}"
        )
    pred = predict_labels(predict_fn, x, batch_size=batch_size)
    return float((pred.to(y.device) == y).double().mean())


def backdoor_success_rate(
    predict_fn: PredictFn,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    trigger: PixelTrigger,
    target: int,
    *,
    batch_size: int | None = None,
) -> float:
    """Fraction of the test examples whose true label is not ``target`` that the model
    classifies as ``target`` once the trigger is stamped on them.

    Bagdasaryan et al. 2020, How To Backdoor Federated Learning (AISTATS).
    """
    y_test = check_labels(y_test, "backdoor_success_rate")
    target = check_class(target, None, "backdoor_success_rate: target")
    if x_test.shape[0] != y_test.shape[0]:
        raise ValueError(
            f"backdoor_success_rate: {x_test.shape[0]} images but {y_test.shape[0]} labels"
        )
    index = torch.nonzero(y_test != target).flatten()
    if index.numel() == 0:
        raise ValueError(
            f"backdoor_success_rate: every test label equals the target {target}; "
            "the rate is undefined"
        )
    stamped = stamp(x_test.index_select(0, index.to(x_test.device)), trigger)
    pred = predict_labels(predict_fn, stamped, batch_size=batch_size)
    return float((pred == target).double().mean())
