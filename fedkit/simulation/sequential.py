"""The sequential engine: clients train one after the other.

Works for every task: a :class:`~fedkit.tasks.SupervisedTask` trains with
:func:`fedkit.training.train_local` on the job's data (possibly poisoned by the adversary),
so results match the vectorised engine; any other task trains with its own
``train_client``, with client DP-SGD only when it runs DP-SGD itself and says over which
privacy unit (``task.dp_unit``, e.g. the SO-100 task's episodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from fedkit.client import ClientConfig
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.tasks.base import SupervisedTask
from fedkit.training import train_local


@attrs.frozen
class SequentialEngine:
    """Trains the sampled clients one by one."""

    name: ClassVar[str] = "sequential"

    def train(
        self, task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: ClientConfig
    ) -> LocalResults:
        out = LocalResults.empty(len(jobs), params)
        supervised = isinstance(task, SupervisedTask)
        if not supervised and cfg.dp_sgd is not None and getattr(task, "dp_unit", None) is None:
            raise ValueError(
                f"ClientConfig.dp_sgd needs the engines' own training loop or a task that runs "
                f"DP-SGD itself (a dp_unit attribute), but task {task.name!r} trains with its "
                "own train_client and has none"
            )
        with torch.no_grad():
            for i, job in enumerate(jobs):
                if job.work <= 0:
                    continue
                if not supervised:
                    update, n, metrics = task.train_client(
                        params, job.client, cfg, job.work, job.key
                    )
                    out.updates[i] = update
                    out.num_examples[i] = int(n)
                    out.loss[i] = float(metrics.get("loss", float("nan")))
                    out.steps[i] = int(metrics.get("steps", 0))
                    out.metrics[i].update(metrics)
                elif job.num_examples > 0:
                    update, loss, steps = train_local(
                        task, params, job.x, job.y, job.work, job.key, cfg
                    )
                    out.updates[i] = update
                    out.num_examples[i] = job.num_examples
                    out.loss[i] = loss
                    out.steps[i] = steps
                out.trained[i] = True
        return out
