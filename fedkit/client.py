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


Client DP-SGD (``ClientConfig(dp_sgd=...)``) lives in :mod:`fedkit.client_dp`.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from fedkit.core.keys import Key, fold_in, permutation
from fedkit.protocols import DPSGDSetting

OPTIMIZERS = ("sgd", "adam")


def _positive(instance, attribute, value):
    if value is not None and value <= 0:
        raise ValueError(f"ClientConfig.{attribute.name} must be positive, got {value}")


DP_BACKENDS = ("torch.func", "opacus")
"""Per-example gradient backends of client DP-SGD (``dp_sgd.backend``); a setting whose
backend is not ``torch.func`` supplies it with ``grad_backend()`` (see
:func:`fedkit.client_dp.dp_backend`)."""


def _dp_setting(instance, attribute, value):
    if value is None:
        return
    if not isinstance(value, DPSGDSetting):
        raise TypeError(
            "ClientConfig.dp_sgd must implement fedkit.protocols.DPSGDSetting (max_grad_norm, "
            f"noise_multiplier, batch_size, sample_rate), got {type(value).__name__}"
        )
    backend = getattr(value, "backend", "torch.func")
    if backend not in DP_BACKENDS:
        raise ValueError(
            f"ClientConfig.dp_sgd.backend must be one of {DP_BACKENDS}, got {backend!r}"
        )
    if backend != "torch.func" and not callable(getattr(value, "grad_backend", None)):
        raise ValueError(
            f"ClientConfig.dp_sgd.backend={backend!r} needs a setting that supplies it with "
            f"grad_backend() (privacy.dpsgd.DPSGD does); {type(value).__name__} has none"
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
    Poisson-sampled; its ``backend``, one of :data:`DP_BACKENDS`, picks how per-example
    gradients are taken); ``worker_momentum`` β: what a client sends is its momentum over
    rounds, ``m_c ← β m_c + (1 − β) Δ_c`` (``m_c`` starts at 0 and persists for every
    client between the rounds it is sampled in: :mod:`fedkit.run.client_state`), not its
    raw update ``Δ_c``; 0 sends the update.
    FedProx: Li et al. 2020, "Federated Optimization in Heterogeneous Networks". Worker
    momentum: Karimireddy, He, Jaggi 2021, "Learning from History for Byzantine Robust
    Optimization" (ICML).
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
    worker_momentum: float = attrs.field(default=0.0, validator=_non_negative)
    shuffle: bool = True
    dp_sgd: Any = attrs.field(default=None, validator=_dp_setting)

    def __attrs_post_init__(self) -> None:
        if self.momentum >= 1:
            raise ValueError(f"ClientConfig.momentum must be < 1, got {self.momentum}")
        if self.worker_momentum >= 1:
            raise ValueError(
                f"ClientConfig.worker_momentum must lie in [0, 1), got {self.worker_momentum}"
            )
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
    """Loss of each example: the supervised task's
    :meth:`~fedkit.tasks.SupervisedTask.per_example_loss`."""
    return task.per_example_loss(logits, y)


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
