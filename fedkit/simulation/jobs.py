"""What an engine is asked to do in one round, and what it gives back.

An engine turns a list of :class:`ClientJob` (one per sampled client, in sampling order)
into :class:`LocalResults` (one row per job). A job with ``work == 0`` (a dropped straggler)
is not trained: its row is zero with 0 examples and ``trained`` False.

Tasks built on :class:`fedkit.tasks.SupervisedTask` are trained by the engines' own loop
(:mod:`fedkit.client`). A task with its own training loop (an SO-100 policy, say) defines
``train_client(params, client, cfg, work, key) -> (update, num_examples, metrics)`` and is
always trained by the sequential engine; ``x`` and ``y`` of its jobs are ``None``.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from fedkit.core.keys import Key


@attrs.frozen(eq=False)
class ClientJob:
    """Train ``client`` for ``work`` units (epochs or steps) on ``(x, y)`` with ``key``."""

    client: int
    work: int
    key: Key
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @property
    def num_examples(self) -> int:
        return 0 if self.x is None else int(self.x.shape[0])


@attrs.frozen(eq=False)
class LocalResults:
    """Per job: ``updates [m, d]`` (local − global), ``num_examples [m]`` (int64),
    ``loss [m]`` (float64 mean training loss over the local steps, NaN if not trained),
    ``steps [m]`` (int64) and ``trained [m]`` (bool)."""

    updates: torch.Tensor
    num_examples: torch.Tensor
    loss: torch.Tensor
    steps: torch.Tensor
    trained: torch.Tensor
    metrics: tuple[dict[str, Any], ...] = ()

    @classmethod
    def empty(cls, m: int, params: torch.Tensor) -> LocalResults:
        return cls(
            updates=torch.zeros(m, params.numel(), dtype=params.dtype, device=params.device),
            num_examples=torch.zeros(m, dtype=torch.int64),
            loss=torch.full((m,), float("nan"), dtype=torch.float64),
            steps=torch.zeros(m, dtype=torch.int64),
            trained=torch.zeros(m, dtype=torch.bool),
            metrics=tuple({} for _ in range(m)),
        )
