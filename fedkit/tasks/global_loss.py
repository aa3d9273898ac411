"""The global training loss: the loss of one (global) model on the union of every client's
training set, each example counted once, so clients weigh by their example counts:

    f(w) = Σ_k n_k F_k(w) / Σ_k n_k,   F_k(w) = mean loss of w on client k's n_k examples.

This is the objective federated training minimises and what the FedProx paper plots as
"training loss" (its code: the per-client mean losses averaged with weights n_k). It is
not the local minibatch loss a round reports (``train_loss`` of a round's metrics: the
sampled clients' losses *during* local training, each at its own local model).

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020, "Federated Optimization in
Heterogeneous Networks" (MLSys), Section 5 and its training-loss figures; the objective is
McMahan et al. 2017's, "Communication-Efficient Learning of Deep Networks from
Decentralized Data".
"""

from __future__ import annotations

from typing import Any

import torch


def client_train_losses(
    task: Any, params: torch.Tensor, *, batch: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(losses, sizes)``: ``losses[k]`` the mean loss (float64) of the model with flat
    parameters ``params`` on client k's training data ``task.client_x[k], task.client_y[k]``
    (NaN for a client without examples), ``sizes[k]`` its example count (int64).

    ``task``: a :class:`fedkit.tasks.SupervisedTask` (or anything with ``client_x``,
    ``client_y``, ``apply`` and ``per_example_loss``). Evaluated in chunks of at most
    ``batch`` examples, without gradients."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    sizes = torch.tensor([int(x.shape[0]) for x in task.client_x], dtype=torch.int64)
    sums = torch.zeros(sizes.numel(), dtype=torch.float64)
    with torch.no_grad():
        for k, (x, y) in enumerate(zip(task.client_x, task.client_y, strict=True)):
            for start in range(0, int(x.shape[0]), batch):
                logits = task.apply(params, x[start : start + batch])
                losses = task.per_example_loss(logits, y[start : start + batch])
                sums[k] += losses.to(torch.float64).sum()
    return sums / sizes.to(torch.float64), sizes


def global_train_loss(task: Any, params: torch.Tensor, *, batch: int = 4096) -> float:
    """The global training loss ``Σ_k n_k F_k(params) / Σ_k n_k`` (module doc): the mean
    loss of ``params`` over the union of all clients' training examples.

    Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (the training loss
    of its figures)."""
    losses, sizes = client_train_losses(task, params, batch=batch)
    total = int(sizes.sum())
    if total == 0:
        raise ValueError(
            f"global_train_loss: the task's {sizes.numel()} clients hold no training examples"
        )
    held = sizes > 0
    return float((losses[held] * sizes[held].to(torch.float64)).sum() / total)
