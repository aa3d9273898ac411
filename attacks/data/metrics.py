"""Metrics of data poisoning: clean accuracy, backdoor success rate, label-flip success rate,
and :func:`attack_success_rate`, the one an adversary reports for its poison."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attacks.data._common import check_class, check_labels
from attacks.data.backdoor import PixelTrigger, stamp
from attacks.data.label_flip import LabelFlip

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


def label_flip_success_rate(
    predict_fn: PredictFn,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    relabel: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int | None = None,
) -> float:
    """Fraction of the test examples whose label ``relabel`` changes that the model
    classifies as the changed label: for a targeted flip ``source → target``, the rate of
    source-class examples classified as the target; for a permutation, the rate at which the
    model outputs the flipped class.

    Tolpegin et al. 2020, Data Poisoning Attacks Against Federated Learning Systems (ESORICS).
    """
    y_test = check_labels(y_test, "label_flip_success_rate")
    if x_test.shape[0] != y_test.shape[0]:
        raise ValueError(
            f"label_flip_success_rate: {x_test.shape[0]} inputs but {y_test.shape[0]} labels"
        )
    flipped = relabel(y_test)
    index = torch.nonzero(flipped != y_test).flatten()
    if index.numel() == 0:
        raise ValueError(
            "label_flip_success_rate: the flip changes no test label; the rate is undefined"
        )
    pred = predict_labels(
        predict_fn, x_test.index_select(0, index.to(x_test.device)), batch_size=batch_size
    )
    return float((pred.to(y_test.device) == flipped.index_select(0, index)).double().mean())


def attack_success_rate(
    poison: object,
    predict_fn: PredictFn,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    *,
    batch_size: int | None = 4096,
) -> float | None:
    """The attack success rate of a data poison on a test set, or None when it has none:

    * a trigger poison (:class:`Backdoor`, :class:`DBA`: it has ``trigger`` and ``target``):
      :func:`backdoor_success_rate` with its whole trigger (DBA: the global one);
    * :class:`LabelFlip`: :func:`label_flip_success_rate` with its flip;
    * anything else, or a test set on which the rate is undefined (every label is the
      target, or the flip changes none): None.
    """
    y_test = check_labels(y_test, "attack_success_rate")
    if hasattr(poison, "trigger") and hasattr(poison, "target"):
        if not bool((y_test != poison.target).any()):
            return None
        return backdoor_success_rate(
            predict_fn, x_test, y_test, poison.trigger, poison.target, batch_size=batch_size
        )
    if isinstance(poison, LabelFlip):
        flipped = poison(x_test, y_test)[1]
        if not bool((flipped != y_test).any()):
            return None
        return label_flip_success_rate(
            predict_fn, x_test, y_test, lambda y: poison(x_test, y)[1], batch_size=batch_size
        )
    return None
