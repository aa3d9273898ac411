"""Client-side local training: the config, the batching rule and one optimiser step.

Everything here is a pure function of flat tensors, shared by both simulation engines: the
sequential engine calls :func:`local_step` client by client, the vectorised engine calls the
very same function under ``torch.func.vmap`` over stacked client parameters.

Batching rule (both engines): a client with ``n`` examples and batch size ``B`` (capped at
``n``; ``None`` means full batch) runs ``ceil(n / B)`` steps per epoch. Epoch ``e`` visits the
examples in the order ``permutation(fold_in(key, e), n)`` (identity when ``shuffle`` is off),
cut into consecutive batches; the last batch of an epoch may be smaller. With ``steps`` set,
a client runs exactly that many steps, walking through as many epochs as it needs. The
vectorised engine pads short batches to ``B`` with examples of weight 0, and the loss of a
batch is ``Σ wᵢ lᵢ / Σ wᵢ``, so padded and unpadded batches give the same value.

Client DP-SGD (``ClientConfig(dp_sgd=setting)``, a :class:`fedkit.protocols.DPSGDSetting`):
step ``t`` of a client with ``n`` examples trains on a Poisson batch, each example in it with
probability ``q = setting.sample_rate(n)``, drawn from ``fold_in(k_batches, t)``; the steps
per epoch are ``ceil(n / setting.batch_size)``. The gradient is
``(Σᵢ clip(gᵢ) + N(0, (z·C)² I)) / (q·n)`` (:func:`dp_local_step`), the noise drawn from
``fold_in(k_noise, t)`` where ``k_batches, k_noise = split(client key)``. Both engines use
this one function (the vectorised engine under ``vmap``, batches padded with weight 0).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import torch

from fedkit.core.flat import unflatten
from fedkit.core.keys import Key, bernoulli, fold_in, normal, permutation, split
from fedkit.protocols import DPSGDSetting

OPTIMIZERS = ("sgd", "adam")


def _positive(instance, attribute, value):
    if value is not None and value <= 0:
        raise ValueError(f"ClientConfig.{attribute.name} must be positive, got {value}")


def _dp_setting(instance, attribute, value):
    if value is not None and not isinstance(value, DPSGDSetting):
        raise TypeError(
            "ClientConfig.dp_sgd must implement fedkit.protocols.DPSGDSetting (max_grad_norm, "
            f"noise_multiplier, batch_size, sample_rate), got {type(value).__name__}"
        )
    if value is not None and getattr(value, "backend", "torch.func") != "torch.func":
        raise ValueError(
            "the simulation engines run DP-SGD with torch.func per-example gradients; "
            f"dp_sgd.backend={value.backend!r} is for privacy.dpsgd.dpsgd_gradient only"
        )


def _non_negative(instance, attribute, value):
    if value < 0:
        raise ValueError(f"ClientConfig.{attribute.name} must be >= 0, got {value}")


@attrs.frozen
class ClientConfig:
    """How a client trains locally.

    ``epochs`` local epochs, or exactly ``steps`` minibatch steps when ``steps`` is set;
    ``batch_size`` (``None`` = full batch); ``optimizer`` ``"sgd"`` (``momentum``,
    ``weight_decay``) or ``"adam"`` (``betas``, ``eps``, L2 ``weight_decay``) with learning
    rate ``lr``; FedProx proximal weight ``prox_mu`` (adds ``μ (w − w_global)`` to each
    gradient; 0 is FedAvg); ``shuffle`` the data order (drawn from the client's key);
    ``dp_sgd`` client DP-SGD (a :class:`fedkit.protocols.DPSGDSetting`, e.g.
    ``privacy.dpsgd.DPSGD``; its ``batch_size`` replaces ``batch_size`` and batches are
    Poisson-sampled).
    FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous Networks".
    """

    epochs: int = attrs.field(default=1, validator=_positive)
    steps: int | None = attrs.field(default=None, validator=_positive)
    batch_size: int | None = attrs.field(default=32, validator=_positive)
    lr: float = attrs.field(default=0.01, validator=_positive)
    optimizer: str = attrs.field(default="sgd", validator=attrs.validators.in_(OPTIMIZERS))
    momentum: float = attrs.field(default=0.0, validator=_non_negative)
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), converter=tuple)
    eps: float = attrs.field(default=1e-8, validator=_positive)
    prox_mu: float = attrs.field(default=0.0, validator=_non_negative)
    shuffle: bool = True
    dp_sgd: Any = attrs.field(default=None, validator=_dp_setting)

    def __attrs_post_init__(self) -> None:
        if self.momentum >= 1:
            raise ValueError(f"ClientConfig.momentum must be < 1, got {self.momentum}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"ClientConfig.betas must be two numbers in [0, 1), got {self.betas}")

    @property
    def work(self) -> int:
        """Units of local work of a full client: steps if ``steps`` is set, else epochs."""
        return self.steps if self.steps is not None else self.epochs


def batch_width(n: int, batch_size: int | None) -> int:
    """Examples per batch for a client with ``n`` examples (at most ``n``)."""
    return n if batch_size is None else min(batch_size, n)


def num_steps(n: int, work: int, cfg: ClientConfig) -> int:
    """Local steps of a client with ``n`` examples doing ``work`` units (epochs or steps)."""
    if n <= 0 or work <= 0:
        return 0
    if cfg.steps is not None:
        return work
    batch = cfg.batch_size if cfg.dp_sgd is None else int(cfg.dp_sgd.batch_size)
    return work * math.ceil(n / batch_width(n, batch))


def epoch_orders(
    n: int, steps: int, batch_size: int | None, shuffle: bool, key: Key
) -> torch.Tensor:
    """The example order of each epoch a client needs for ``steps`` steps: ``[epochs, n]``,
    row ``e`` = ``permutation(fold_in(key, e), n)`` (``arange(n)`` without shuffling)."""
    if n <= 0:
        raise ValueError(f"a client needs at least one example to train, got n={n}")
    epochs = math.ceil(steps / math.ceil(n / batch_width(n, batch_size)))
    if not shuffle or epochs == 0:
        return torch.arange(n).expand(epochs, n)
    if epochs == 1:
        return permutation(fold_in(key, 0), n).unsqueeze(0)
    return torch.stack([permutation(fold_in(key, e), n) for e in range(epochs)])


def stack_schedules(
    sizes: list[int], steps: list[int], orders: list[torch.Tensor], batch_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batching rule for several clients at once: example indices ``[g, T, B]`` (``T``
    the most steps, ``B`` the widest batch) and the mask of real entries; masked entries
    hold index 0. ``orders[i]`` comes from :func:`epoch_orders`."""
    n = torch.tensor(sizes, dtype=torch.int64)[:, None, None]
    last = torch.tensor(steps, dtype=torch.int64)[:, None, None]
    width = n if batch_size is None else n.clamp(max=batch_size)
    per_epoch = (n + width - 1) // width
    s = torch.arange(max(steps))[None, :, None]
    j = torch.arange(int(width.max()))[None, None, :]
    epoch, within = s // per_epoch, (s % per_epoch) * width + j
    mask = (s < last) & (j < width) & (within < n)
    flat = torch.cat([o.reshape(-1) for o in orders])
    sizes_of_orders = torch.tensor([o.numel() for o in orders], dtype=torch.int64)
    base = (torch.cumsum(sizes_of_orders, 0) - sizes_of_orders)[:, None, None]
    position = torch.where(mask, base + epoch * n + within, 0)
    return torch.where(mask, flat[position], 0), mask


def batch_schedule(
    n: int, steps: int, batch_size: int | None, shuffle: bool, key: Key
) -> tuple[torch.Tensor, torch.Tensor]:
    """Example indices ``[steps, B]`` of one client's local steps and the mask of the real
    ones (masked positions, the tail of an epoch's last batch, hold index 0)."""
    orders = epoch_orders(n, steps, batch_size, shuffle, key)
    index, mask = stack_schedules([n], [steps], [orders], batch_size)
    return index[0], mask[0]


def init_opt_state(params: torch.Tensor, cfg: ClientConfig) -> tuple:
    """Optimiser state on flat tensors: SGD ``(momentum buffer,)`` or ``()``; Adam
    ``(first moment, second moment, step count)``."""
    if cfg.optimizer == "adam":
        return (
            torch.zeros_like(params),
            torch.zeros_like(params),
            torch.zeros((), dtype=params.dtype),
        )
    if cfg.momentum > 0:
        return (torch.zeros_like(params),)
    return ()


def updates_buffers(module: Any) -> bool:
    """Whether ``module`` changes buffers in a training forward pass (batch norm)."""
    if not isinstance(module, torch.nn.Module):
        return False
    return any(
        isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats and m.training
        for m in module.modules()
    )


def per_example_loss(task: Any, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Loss of each example: ``task.per_example_loss`` when the task has one, cross-entropy
    for :class:`~fedkit.tasks.SupervisedTask`'s default loss, else the task's (mean-reduced)
    ``loss`` applied to each example on its own."""
    own = getattr(task, "per_example_loss", None)
    if own is not None:
        return own(logits, y)
    base = sys.modules.get("fedkit.tasks.base")  # loaded whenever task is a SupervisedTask
    if base is not None and getattr(type(task), "loss", None) is base.SupervisedTask.loss:
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")
    return torch.func.vmap(lambda lg, t: task.loss(lg.unsqueeze(0), t.unsqueeze(0)))(logits, y)


def local_step(
    task: Any,
    cfg: ClientConfig,
    params: torch.Tensor,
    opt_state: tuple,
    xb: torch.Tensor,
    yb: torch.Tensor,
    wb: torch.Tensor,
    anchor: torch.Tensor,
    *,
    functional: bool = True,
) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """One optimiser step on the weighted batch loss ``Σ wᵢ lᵢ / Σ wᵢ``.

    The gradient gets the FedProx term ``prox_mu · (params − anchor)`` and L2 weight decay;
    SGD and Adam follow PyTorch's update rules (momentum without dampening; Adam with bias
    correction). Returns ``(params, opt_state, loss)``; inputs are not modified.
    The gradient comes from ``torch.func.grad`` (vmappable), or from plain autograd with
    ``functional=False`` — needed by models that update buffers in the forward pass (batch
    norm running statistics), which torch.func transforms refuse.
    Adam: Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization".
    """

    def objective(p: torch.Tensor) -> torch.Tensor:
        losses = per_example_loss(task, task.apply(p, xb), yb)
        return (losses * wb).sum() / wb.sum()

    if functional:
        grad, loss = torch.func.grad_and_value(objective)(params)
    else:
        leaf = params.detach().requires_grad_()
        with torch.enable_grad():
            loss = objective(leaf)
            (grad,) = torch.autograd.grad(loss, leaf)
        loss = loss.detach()
    params, opt_state = apply_gradient(cfg, params, opt_state, grad, anchor)
    return params, opt_state, loss


def apply_gradient(
    cfg: ClientConfig,
    params: torch.Tensor,
    opt_state: tuple,
    grad: torch.Tensor,
    anchor: torch.Tensor,
) -> tuple[torch.Tensor, tuple]:
    """One optimiser update of ``params`` with gradient ``grad``: adds the FedProx term
    ``prox_mu · (params − anchor)`` and L2 weight decay, then SGD (momentum without
    dampening) or Adam (with bias correction) as PyTorch defines them.
    Adam: Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization".
    """
    if cfg.prox_mu:
        grad = grad + cfg.prox_mu * (params - anchor)
    if cfg.weight_decay:
        grad = grad + cfg.weight_decay * params
    if cfg.optimizer == "adam":
        m, v, t = opt_state
        b1, b2 = cfg.betas
        t = t + 1
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        c1 = 1 - torch.pow(b1, t)
        c2 = 1 - torch.pow(b2, t)
        params = params - (cfg.lr / c1) * m / (torch.sqrt(v) / torch.sqrt(c2) + cfg.eps)
        return params, (m, v, t)
    if cfg.momentum > 0:
        (buf,) = opt_state
        buf = cfg.momentum * buf + grad
        return params - cfg.lr * buf, (buf,)
    return params - cfg.lr * grad, ()


# ---------------------------------------------------------------------------------------------
# Client DP-SGD


def dp_keys(key: Key) -> tuple[Key, Key]:
    """``(k_batches, k_noise)`` of a client's DP-SGD from its round key."""
    k_batches, k_noise = split(key, 2)
    return k_batches, k_noise


def poisson_schedule(
    n: int, steps: int, sample_rate: float, key: Key
) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson batches of ``steps`` DP-SGD steps: example indices ``[steps, W]`` (increasing
    within a row, ``W`` the largest batch drawn, at least 1) and the mask of the real ones.
    Row ``t`` holds the examples ``i`` with ``uniform < sample_rate``, drawn from
    ``fold_in(key, t)``. (Abadi et al. 2016, Deep Learning with Differential Privacy.)"""
    if n <= 0:
        raise ValueError(f"a client needs at least one example to train, got n={n}")
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must lie in [0, 1], got {sample_rate!r}")
    if steps == 0:
        return torch.zeros(0, 1, dtype=torch.int64), torch.zeros(0, 1, dtype=torch.bool)
    chosen = torch.stack([bernoulli(fold_in(key, t), sample_rate, (n,)) for t in range(steps)])
    counts = chosen.sum(1)
    width = max(1, int(counts.max()))
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :width]
    mask = torch.arange(width)[None, :] < counts[:, None]
    return torch.where(mask, order, 0), mask


def pad_schedules(
    schedules: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Several clients' ``(index [T_i, W_i], mask)`` as one ``[g, T, W]`` pair (padding masked)."""
    steps = max(i.shape[0] for i, _ in schedules)
    width = max(i.shape[1] for i, _ in schedules)
    index = torch.zeros(len(schedules), steps, width, dtype=torch.int64)
    mask = torch.zeros(len(schedules), steps, width, dtype=torch.bool)
    for g, (i, m) in enumerate(schedules):  # copies only: one short loop over clients
        index[g, : i.shape[0], : i.shape[1]] = i
        mask[g, : m.shape[0], : m.shape[1]] = m
    return index, mask


def dp_noise(setting: DPSGDSetting, k_noise: Key, step: int, params: torch.Tensor) -> torch.Tensor:
    """The Gaussian noise ``N(0, (z·C)² I)`` of local step ``step`` (zeros when ``z = 0``)."""
    std = float(setting.noise_multiplier) * float(setting.max_grad_norm)
    if std == 0.0:
        return torch.zeros_like(params)
    return normal(
        fold_in(k_noise, step), params.shape, std=std, dtype=params.dtype, device=params.device
    )


def _named_model(task: Any) -> bool:
    """Whether ``task`` is a :class:`~fedkit.tasks.SupervisedTask` applying its own module
    (then gradients can be taken with respect to the named tensors)."""
    base = sys.modules.get("fedkit.tasks.base")
    return base is not None and getattr(type(task), "apply", None) is base.SupervisedTask.apply


def per_example_grads(
    task: Any, params: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The gradient and loss of every example on its own: per-example gradient blocks
    ``[B, ...]`` that concatenate (flattened, in order) to ``[B, d]``, and the losses ``[B]``
    (``vmap`` of ``grad`` over the batch; works under an outer ``vmap`` over clients). A
    supervised task's gradients are taken with respect to its named parameter tensors (views
    of ``params``): differentiating the flat vector itself would fill a ``[B, d]`` tensor
    per parameter tensor in the backward of the slicing."""
    if _named_model(task):
        spec, module = task.spec, task.module
        named = unflatten(params, spec)

        def loss_named(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            logits = torch.func.functional_call(module, p, (xi.unsqueeze(0),))
            return per_example_loss(task, logits, yi.unsqueeze(0))[0]

        grads, losses = torch.func.vmap(
            torch.func.grad_and_value(loss_named), in_dims=(None, 0, 0)
        )(named, xb, yb)
        return tuple(grads[e.name] for e in spec.entries), losses

    def loss_one(p: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return per_example_loss(task, task.apply(p, xi.unsqueeze(0)), yi.unsqueeze(0))[0]

    grads, losses = torch.func.vmap(torch.func.grad_and_value(loss_one), in_dims=(None, 0, 0))(
        params, xb, yb
    )
    return (grads,), losses


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``min(1, C / ‖g‖)`` per example (1 for a zero gradient)."""
    c = torch.as_tensor(float(max_grad_norm), dtype=norms.dtype, device=norms.device)
    return c / torch.maximum(norms, c)


def clipped_grad_sum(
    grads: torch.Tensor | Sequence[torch.Tensor], weights: torch.Tensor, max_grad_norm: float
) -> torch.Tensor:
    """``Σᵢ wᵢ · gᵢ · min(1, C/‖gᵢ‖)`` for per-example gradients ``gᵢ`` — one ``[B, d]``
    tensor or blocks ``[B, ...]`` whose flattened concatenation is ``gᵢ`` (the norm is over
    all blocks jointly) — and weights ``[B]`` (the 0/1 batch mask). Returns ``[d]``.
    (Abadi et al. 2016, Deep Learning with Differential Privacy.)"""
    blocks = [grads] if isinstance(grads, torch.Tensor) else list(grads)
    if not blocks or any(g.ndim < 1 or g.shape[:1] != weights.shape for g in blocks):
        raise ValueError(
            "need per-example gradients [B, ...] and weights [B], got "
            f"{[tuple(g.shape) for g in blocks]} and {tuple(weights.shape)}"
        )
    flat = [g.reshape(g.shape[0], -1) for g in blocks]
    norms = torch.stack([g.pow(2).sum(1) for g in flat]).sum(0).sqrt()
    factors = clip_factors(norms, max_grad_norm) * weights.to(norms.dtype)
    return torch.cat([factors.to(g.dtype) @ g for g in flat])


def dp_local_step(
    task: Any,
    cfg: ClientConfig,
    params: torch.Tensor,
    opt_state: tuple,
    xb: torch.Tensor,
    yb: torch.Tensor,
    wb: torch.Tensor,
    anchor: torch.Tensor,
    noise: torch.Tensor,
    expected_batch: torch.Tensor | float,
) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """One DP-SGD step: the gradient ``(Σᵢ wᵢ clip_C(gᵢ) + noise) / expected_batch`` (``wᵢ``
    the 0/1 Poisson mask, ``noise`` from :func:`dp_noise`, ``expected_batch = q·n``), then
    the optimiser update of :func:`apply_gradient`. Returns ``(params, opt_state, loss)``,
    the loss being the mean over the batch (0 for an empty batch).
    (Abadi et al. 2016, Deep Learning with Differential Privacy.)"""
    grads, losses = per_example_grads(task, params, xb, yb)
    total = clipped_grad_sum(grads, wb, cfg.dp_sgd.max_grad_norm)
    grad = (total + noise) / expected_batch
    loss = (losses * wb).sum() / wb.sum().clamp(min=1)
    params, opt_state = apply_gradient(cfg, params, opt_state, grad, anchor)
    return params, opt_state, loss.detach()
