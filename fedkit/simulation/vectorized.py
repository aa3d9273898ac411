"""The vectorised engine: all sampled clients train at once.

Client parameters are stacked into ``P: [m, d]`` and :func:`fedkit.client.local_step` — the
function the sequential engine calls — runs under ``torch.func.vmap`` over clients, one
call per local step. Per-client batches ``[m, B, ...]`` follow the shared batching rule;
short batches are padded with weight-0 examples (the batch loss is ``Σ wᵢ lᵢ / Σ wᵢ``, so the
math is the sequential engine's). Clients with fewer local steps (less data, stragglers)
stop early: clients are sorted by their number of steps, so the ones still training at step
``t`` are a prefix of the stack and each step works on that prefix only (without ``vmap``
once a single client is left). Client DP-SGD runs :func:`fedkit.client_dp.dp_local_step` under
``vmap`` the same way, on Poisson batches padded to the widest one, when its backend is
vmappable (:class:`fedkit.client_dp.TorchFuncBackend`); the clients of a backend that is not
(Opacus: its hooks keep per-sample gradients on module parameters) are trained one by one
with :func:`fedkit.training.train_local`, the sequential engine's function, so both engines
give the same result for the same keys.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import torch

from fedkit.client import (
    ClientConfig,
    epoch_orders,
    init_opt_state,
    local_step,
    num_steps,
    stack_schedules,
    updates_buffers,
)
from fedkit.client_dp import (
    dp_backend,
    dp_keys,
    dp_local_step,
    dp_noise,
    pad_schedules,
    poisson_schedule,
)
from fedkit.core.keys import key as root_key
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.tasks.base import SupervisedTask
from fedkit.training import train_local


def vmap_blocker(task: Any, cfg: ClientConfig) -> str | None:
    """Why ``task`` cannot be trained by the vectorised engine, or ``None`` if it can.

    Tasks other than a :class:`~fedkit.tasks.SupervisedTask` (they bring their own training
    loop), models with batch-norm running statistics, and
    models whose step fails under ``vmap`` (found by a probe on two one-example clients)
    are blocked."""
    if not isinstance(task, SupervisedTask):
        return "the task has its own training loop (train_client)"
    if updates_buffers(task.module):
        return "the model updates batch-norm running statistics in its forward pass"
    donor = next((i for i, x in enumerate(task.client_x) if x.shape[0] > 0), None)
    if donor is None:
        return "no client has data"
    try:
        params = task.init(root_key(0))
        probe = ClientJob(
            client=donor,
            work=1,
            key=root_key(0),
            x=task.client_x[donor][:1],
            y=task.client_y[donor][:1],
        )
        VectorizedEngine().train(task, params, [probe, probe], attrs.evolve(cfg, steps=1))
    except Exception as exc:  # any failure under vmap means: use the sequential engine
        return f"the local step cannot be vmapped ({type(exc).__name__}: {exc})"
    return None


def _group(
    task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: ClientConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train ``jobs`` (all with data and work) together: ``(updates, loss, steps)``."""
    if cfg.dp_sgd is not None:
        if not dp_backend(cfg.dp_sgd).vmappable:
            return _one_by_one(task, params, jobs, cfg)
        return _group_dp(task, params, jobs, cfg)
    steps = [num_steps(j.num_examples, j.work, cfg) for j in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -steps[i])  # longest schedules first
    jobs = [jobs[i] for i in order]
    sizes = [j.num_examples for j in jobs]
    counts = torch.tensor([steps[i] for i in order])
    # drawing each client's data order needs its own key: one short loop over clients
    orders = [
        epoch_orders(j.num_examples, int(t), cfg.batch_size, cfg.shuffle, j.key)
        for j, t in zip(jobs, counts.tolist(), strict=True)
    ]
    index, mask = stack_schedules(sizes, counts.tolist(), orders, cfg.batch_size)
    offsets = torch.cumsum(torch.tensor(sizes), 0) - torch.tensor(sizes)
    xs = torch.cat([j.x for j in jobs])
    ys = torch.cat([j.y for j in jobs])
    index = (index + offsets[:, None, None]).to(xs.device)
    weight = mask.to(device=params.device, dtype=params.dtype)
    g, horizon = len(jobs), int(counts[0])
    active = (counts[None, :] > torch.arange(horizon)[:, None]).sum(1).tolist()
    stacked = params.expand(g, -1).clone()
    state = tuple(s.expand(g, *s.shape).clone() for s in init_opt_state(params, cfg))
    total = torch.zeros(g, dtype=torch.float64)
    step = torch.func.vmap(functools.partial(local_step, task, cfg), in_dims=(0, 0, 0, 0, 0, None))
    for t, a in enumerate(active):
        rows = index[:a, t]
        if a == 1:  # one client left: the same step without vmap's overhead
            new, new_state, loss = local_step(
                task,
                cfg,
                stacked[0],
                tuple(s[0] for s in state),
                xs[rows[0]],
                ys[rows[0]],
                weight[0, t],
                params,
                functional=False,
            )
            new, new_state, loss = new[None], tuple(s[None] for s in new_state), loss[None]
        else:
            new, new_state, loss = step(
                stacked[:a], tuple(s[:a] for s in state), xs[rows], ys[rows], weight[:a, t], params
            )
        _write_back(a, stacked, state, total, new, new_state, loss)
    return _in_job_order(order, stacked, params, total, counts)


def _one_by_one(
    task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: ClientConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_group` without ``vmap``: each job trained by :func:`fedkit.training.train_local`
    (as the sequential engine does), for DP-SGD backends that are not vmappable."""
    results = [train_local(task, params, j.x, j.y, j.work, j.key, cfg) for j in jobs]
    updates = torch.stack([u for u, _, _ in results])
    loss = torch.tensor([lo for _, lo, _ in results], dtype=torch.float64)
    steps = torch.tensor([s for _, _, s in results], dtype=torch.int64)
    return updates, loss, steps


def _group_dp(
    task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: ClientConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_group` for client DP-SGD: Poisson batches, per-example clipping, keyed noise."""
    setting = cfg.dp_sgd
    steps = [num_steps(j.num_examples, j.work, cfg) for j in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -steps[i])  # longest schedules first
    jobs = [jobs[i] for i in order]
    counts = torch.tensor([steps[i] for i in order])
    sizes = [j.num_examples for j in jobs]
    rates = [float(setting.sample_rate(n)) for n in sizes]
    keys = [dp_keys(j.key) for j in jobs]
    # each client's batches and noise come from its own key: short loops over clients
    index, mask = pad_schedules(
        [
            poisson_schedule(n, int(t), q, k[0])
            for n, t, q, k in zip(sizes, counts.tolist(), rates, keys, strict=True)
        ]
    )
    offsets = torch.cumsum(torch.tensor(sizes), 0) - torch.tensor(sizes)
    xs = torch.cat([j.x for j in jobs])
    ys = torch.cat([j.y for j in jobs])
    index = (index + offsets[:, None, None]).to(xs.device)
    weight = mask.to(device=params.device, dtype=params.dtype)
    expected = torch.tensor(
        [q * n for q, n in zip(rates, sizes, strict=True)], dtype=params.dtype
    ).to(params.device)
    g, horizon = len(jobs), int(counts[0])
    active = (counts[None, :] > torch.arange(horizon)[:, None]).sum(1).tolist()
    stacked = params.expand(g, -1).clone()
    state = tuple(s.expand(g, *s.shape).clone() for s in init_opt_state(params, cfg))
    total = torch.zeros(g, dtype=torch.float64)
    clipped_sum = dp_backend(setting).bind(task, setting.max_grad_norm)
    step = torch.func.vmap(
        functools.partial(dp_local_step, task, cfg, clipped_sum=clipped_sum),
        in_dims=(0, 0, 0, 0, 0, None, 0, 0),
    )
    for t, a in enumerate(active):
        width = max(1, int(mask[:a, t].sum(1).max()))  # real entries come first in a row
        rows = index[:a, t, :width]
        noise = torch.stack([dp_noise(setting, k[1], t, params) for k in keys[:a]])
        new, new_state, loss = step(
            stacked[:a],
            tuple(s[:a] for s in state),
            xs[rows],
            ys[rows],
            weight[:a, t, :width],
            params,
            noise,
            expected[:a],
        )
        _write_back(a, stacked, state, total, new, new_state, loss)
    return _in_job_order(order, stacked, params, total, counts)


def _write_back(
    a: int,
    stacked: torch.Tensor,
    state: tuple,
    total: torch.Tensor,
    new: torch.Tensor,
    new_state: tuple,
    loss: torch.Tensor,
) -> None:
    """Store one step's results of the first ``a`` (still active) clients of a group."""
    stacked[:a] = new
    for s, ns in zip(state, new_state, strict=True):
        s[:a] = ns
    total[:a] += loss.to(torch.float64)


def _in_job_order(
    order: Sequence[int],
    stacked: torch.Tensor,
    params: torch.Tensor,
    total: torch.Tensor,
    counts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Updates, mean losses and step counts of a group, back in the jobs' order (the group
    ran sorted by ``order``, longest first)."""
    g = len(order)
    unsort = torch.empty(g, dtype=torch.int64)
    unsort[torch.tensor(order)] = torch.arange(g)
    updates = (stacked - params).index_select(0, unsort.to(stacked.device))
    return updates, (total / counts).index_select(0, unsort), counts.index_select(0, unsort)


@attrs.frozen
class VectorizedEngine:
    """Trains all sampled clients at once with ``vmap``; ``max_parallel`` caps how many
    clients share one stack (memory: ``max_parallel × d`` parameters plus optimiser state)."""

    max_parallel: int | None = None
    name: ClassVar[str] = "vectorized"

    def train(
        self, task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: ClientConfig
    ) -> LocalResults:
        out = LocalResults.empty(len(jobs), params)
        ready = [i for i, j in enumerate(jobs) if j.work > 0 and j.num_examples > 0]
        for i, j in enumerate(jobs):
            out.trained[i] = j.work > 0
        size = self.max_parallel or max(len(ready), 1)
        with torch.no_grad():
            for start in range(0, len(ready), size):
                chunk = ready[start : start + size]
                updates, loss, steps = _group(task, params, [jobs[i] for i in chunk], cfg)
                at = torch.tensor(chunk, dtype=torch.int64)
                out.updates[at] = updates
                out.loss[at] = loss
                out.steps[at] = steps
                out.num_examples[at] = torch.tensor([jobs[i].num_examples for i in chunk])
        return out
