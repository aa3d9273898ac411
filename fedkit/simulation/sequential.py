"""The sequential engine: clients train one after the other with :func:`fedkit.client.local_step`.

Works for every task: supervised tasks go through the shared batching rule and step
function (so results match the vectorised engine), tasks with their own ``train_client``
are called as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from fedkit.client import (
    ClientConfig,
    batch_schedule,
    init_opt_state,
    local_step,
    num_steps,
)
from fedkit.client_dp import (
    dp_keys,
    dp_local_step,
    dp_noise,
    poisson_schedule,
)
from fedkit.simulation.jobs import ClientJob, LocalResults


def train_client(
    task: Any, params: torch.Tensor, job: ClientJob, cfg: ClientConfig
) -> tuple[torch.Tensor, float, int]:
    """Local training of one supervised client: ``(update, mean loss, steps)``.

    Gradients come from plain autograd (about twice as fast as ``torch.func.grad`` for one
    client, same values), which also lets batch-norm models update their running
    statistics; those live in the task's module, outside the flat parameters, and are not
    federated. With ``cfg.dp_sgd`` the steps are DP-SGD steps (:func:`train_client_dp`)."""
    if cfg.dp_sgd is not None:
        return train_client_dp(task, params, job, cfg)
    steps = num_steps(job.num_examples, job.work, cfg)
    index, mask = batch_schedule(job.num_examples, steps, cfg.batch_size, cfg.shuffle, job.key)
    local, state = params.clone(), init_opt_state(params, cfg)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(steps):
        rows = index[t][mask[t]]
        xb, yb = job.x[rows], job.y[rows]
        wb = torch.ones(rows.numel(), dtype=params.dtype, device=params.device)
        local, state, loss = local_step(
            task, cfg, local, state, xb, yb, wb, params, functional=False
        )
        total += loss.to(torch.float64)
    return local - params, float(total / max(steps, 1)), steps


def train_client_dp(
    task: Any, params: torch.Tensor, job: ClientJob, cfg: ClientConfig
) -> tuple[torch.Tensor, float, int]:
    """Local DP-SGD of one client (:func:`fedkit.client_dp.dp_local_step` on its Poisson
    batches, padded with weight-0 examples): ``(update, mean loss, steps)``."""
    n, setting = job.num_examples, cfg.dp_sgd
    steps = num_steps(n, job.work, cfg)
    q = float(setting.sample_rate(n))
    k_batches, k_noise = dp_keys(job.key)
    index, mask = poisson_schedule(n, steps, q, k_batches)
    local, state = params.clone(), init_opt_state(params, cfg)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(steps):
        wb = mask[t].to(device=params.device, dtype=params.dtype)
        local, state, loss = dp_local_step(
            task,
            cfg,
            local,
            state,
            job.x[index[t]],
            job.y[index[t]],
            wb,
            params,
            dp_noise(setting, k_noise, t, params),
            q * n,
        )
        total += loss.to(torch.float64)
    return local - params, float(total / max(steps, 1)), steps


@attrs.frozen
class SequentialEngine:
    """Trains the sampled clients one by one."""

    name: ClassVar[str] = "sequential"

    def train(
        self, task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: ClientConfig
    ) -> LocalResults:
        out = LocalResults.empty(len(jobs), params)
        own_loop = getattr(task, "train_client", None)
        if own_loop is not None and cfg.dp_sgd is not None:
            raise ValueError(
                f"ClientConfig.dp_sgd needs the engines' own training loop, but task "
                f"{getattr(task, 'name', '?')!r} trains with its own train_client"
            )
        with torch.no_grad():
            for i, job in enumerate(jobs):
                if job.work <= 0:
                    continue
                if own_loop is not None:
                    update, n, metrics = own_loop(params, job.client, cfg, job.work, job.key)
                    out.updates[i] = update
                    out.num_examples[i] = int(n)
                    out.loss[i] = float(metrics.get("loss", float("nan")))
                    out.steps[i] = int(metrics.get("steps", 0))
                    out.metrics[i].update(metrics)
                elif job.num_examples > 0:
                    update, loss, steps = train_client(task, params, job, cfg)
                    out.updates[i] = update
                    out.num_examples[i] = job.num_examples
                    out.loss[i] = loss
                    out.steps[i] = steps
                out.trained[i] = True
        return out
