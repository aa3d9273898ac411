"""Local training of one supervised client, step after step: the loop of the sequential
engine, of :meth:`fedkit.tasks.SupervisedTask.train_client` and so of the Flower ClientApp.

Gradients come from plain autograd (about twice as fast as ``torch.func.grad`` for one
client, same values), which also lets batch-norm models update their running statistics;
those live in the task's module, outside the flat parameters, and are not federated. The
batching rule and the step function are :mod:`fedkit.client`'s (and
:mod:`fedkit.client_dp`'s for DP-SGD), the very ones the vectorised engine runs under
``vmap``, so both give the same updates.
"""

from __future__ import annotations

from typing import Any

import torch

from fedkit.client import ClientConfig, batch_schedule, init_opt_state, local_step, num_steps
from fedkit.client_dp import dp_backend, dp_keys, dp_local_step, dp_noise, poisson_schedule
from fedkit.core.keys import Key


def train_local(
    task: Any,
    params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    work: int,
    key: Key,
    cfg: ClientConfig,
) -> tuple[torch.Tensor, float, int]:
    """``work`` units of local training on ``(x, y)`` from ``params`` with ``key``:
    ``(update, mean loss, steps)``. With ``cfg.dp_sgd`` the steps are DP-SGD steps
    (:func:`train_local_dp`)."""
    if cfg.dp_sgd is not None:
        return train_local_dp(task, params, x, y, work, key, cfg)
    n = int(x.shape[0])
    steps = num_steps(n, work, cfg)
    index, mask = batch_schedule(n, steps, cfg.batch_size, cfg.shuffle, key)
    local, state = params.clone(), init_opt_state(params, cfg)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(steps):
        rows = index[t][mask[t]]
        wb = torch.ones(rows.numel(), dtype=params.dtype, device=params.device)
        local, state, loss = local_step(
            task, cfg, local, state, x[rows], y[rows], wb, params, functional=False
        )
        total += loss.to(torch.float64)
    return local - params, float(total / max(steps, 1)), steps


def train_local_dp(
    task: Any,
    params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    work: int,
    key: Key,
    cfg: ClientConfig,
) -> tuple[torch.Tensor, float, int]:
    """Local DP-SGD (:func:`fedkit.client_dp.dp_local_step` on Poisson batches padded with
    weight-0 examples, the clipped sums from the setting's
    :func:`~fedkit.client_dp.dp_backend`): ``(update, mean loss, steps)``."""
    n, setting = int(x.shape[0]), cfg.dp_sgd
    steps = num_steps(n, work, cfg)
    clipped_sum = dp_backend(setting).bind(task, setting.max_grad_norm)
    q = float(setting.sample_rate(n))
    k_batches, k_noise = dp_keys(key)
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
            x[index[t]],
            y[index[t]],
            wb,
            params,
            dp_noise(setting, k_noise, t, params),
            q * n,
            clipped_sum,
        )
        total += loss.to(torch.float64)
    return local - params, float(total / max(steps, 1)), steps
