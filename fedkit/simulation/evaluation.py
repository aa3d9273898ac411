"""Test metrics of the global model."""

from __future__ import annotations

from typing import Any

import torch


def evaluate(task: Any, params: torch.Tensor, *, batch: int = 4096) -> dict[str, float]:
    """``task.evaluate(params)`` when the task defines it; else the mean test loss
    (``task.loss``) and the accuracy of ``argmax`` predictions on ``task.test_x/test_y``,
    computed in chunks of ``batch`` examples."""
    own = getattr(task, "evaluate", None)
    if own is not None:
        return {k: float(v) for k, v in own(params).items()}
    x, y = task.test_x, task.test_y
    n = int(x.shape[0])
    if n == 0:
        return {}
    loss = torch.zeros((), dtype=torch.float64)
    correct = 0
    with torch.no_grad():
        for start in range(0, n, batch):
            xb, yb = x[start : start + batch], y[start : start + batch]
            logits = task.apply(params, xb)
            loss += task.loss(logits, yb).to(torch.float64) * yb.shape[0]
            correct += int((logits.argmax(dim=-1) == yb).sum())
    return {"test_loss": float(loss / n), "test_accuracy": correct / n}
