"""Small tasks and components for the simulation tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import fedkit
from fedkit.aggregators import Mean
from fedkit.tasks.base import SupervisedTask

__all__ = ["Mean", "TinyBN", "TinyMLP", "strategy", "tiny_task"]


class TinyMLP(nn.Module):
    def __init__(self, features: int = 5, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


class TinyBN(nn.Module):
    def __init__(self, features: int = 5, classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(features, classes)
        self.bn = nn.BatchNorm1d(classes)

    def forward(self, x):
        return self.bn(self.fc(x))


def tiny_task(
    seed: int = 0,
    sizes: tuple[int, ...] = (7, 12, 3, 9, 5, 10),
    features: int = 5,
    classes: int = 3,
    model=TinyMLP,
    dtype=torch.float32,
) -> SupervisedTask:
    """Random keyed data: clients of the given sizes, a 40-example test set."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(features, classes))

    def make(n):
        x = rng.normal(size=(n, features))
        y = (x @ w + 0.5 * rng.normal(size=(n, classes))).argmax(1)
        return torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=torch.int64)

    data = [make(n) for n in sizes]
    tx, ty = make(40)
    return SupervisedTask(
        name="tiny",
        model_fn=lambda: model(features, classes=classes),
        client_x=[d[0] for d in data],
        client_y=[d[1] for d in data],
        test_x=tx,
        test_y=ty,
        num_classes=classes,
        meta={"seed": seed},
    )


def strategy(**client) -> fedkit.Strategy:
    cfg = {"epochs": 2, "batch_size": 4, "lr": 0.1, **client}
    return fedkit.Strategy(client=fedkit.ClientConfig(**cfg), server=Mean(), clients_per_round=4)
