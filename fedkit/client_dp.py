"""Client DP-SGD (``ClientConfig(dp_sgd=setting)``, a :class:`fedkit.protocols.DPSGDSetting`):
step ``t`` of a client with ``n`` examples trains on a Poisson batch, each example in it with
probability ``q = setting.sample_rate(n)``, drawn from ``fold_in(k_batches, t)``; the steps
per epoch are ``ceil(n / setting.batch_size)``. The gradient is
``(Σᵢ clip(gᵢ) + N(0, (z·C)² I)) / (q·n)`` (:func:`dp_local_step`), the noise drawn from
``fold_in(k_noise, t)`` where ``k_batches, k_noise = split(client key)``. Both engines use
this one function (the vectorised engine under ``vmap``, batches padded with weight 0).

Only the clipped sum ``Σᵢ wᵢ clip_C(gᵢ)`` depends on how per-example gradients are taken: a
:class:`DPSGDBackend`, chosen by the setting (:func:`dp_backend`), binds it for a task. The
batches, the noise and the division by the expected batch are the engines' and the same for
every backend. :class:`TorchFuncBackend` (``vmap(grad)``, vmappable over clients) is the
default; ``privacy.dpsgd.OpacusBackend`` uses Opacus's ``GradSampleModule``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import torch

from fedkit.client import ClientConfig, apply_gradient, per_example_loss
from fedkit.core.flat import unflatten
from fedkit.core.keys import Key, bernoulli, fold_in, normal, split
from fedkit.protocols import DPSGDSetting


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


def applies_own_module(task: Any) -> bool:
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
    if applies_own_module(task):
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


ClippedSum = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]
"""``(params [d], xb [B, ...], yb [B], wb [B]) -> (Σᵢ wᵢ clip_C(gᵢ) [d], mean loss)``: one
step's clipped gradient sum over the batch (``wᵢ`` the 0/1 Poisson mask) and the loss
``Σ wᵢ lᵢ / max(1, Σ wᵢ)``."""


@runtime_checkable
class DPSGDBackend(Protocol):
    """How a DP-SGD step gets its per-example clipped gradient sum. ``bind(task, C)`` gives
    the :data:`ClippedSum` of ``task``'s model with clip norm ``C``, built once per client
    training; ``vmappable`` says whether it may run under ``torch.func.vmap`` over clients
    (the vectorised engine trains the clients of a backend that is not one by one)."""

    name: ClassVar[str]
    vmappable: ClassVar[bool]

    def bind(self, task: Any, max_grad_norm: float) -> ClippedSum: ...


@attrs.frozen
class TorchFuncBackend:
    """Per-example gradients by ``torch.func`` (:func:`per_example_grads`), clipped jointly
    over all parameters (:func:`clipped_grad_sum`); a pure function, vmappable over clients.
    (Abadi et al. 2016, Deep Learning with Differential Privacy.)"""

    name: ClassVar[str] = "torch.func"
    vmappable: ClassVar[bool] = True

    def bind(self, task: Any, max_grad_norm: float) -> ClippedSum:
        c = float(max_grad_norm)

        def clipped_sum(params, xb, yb, wb):
            grads, losses = per_example_grads(task, params, xb, yb)
            loss = (losses * wb).sum() / wb.sum().clamp(min=1)
            return clipped_grad_sum(grads, wb, c), loss

        return clipped_sum


def dp_backend(setting: DPSGDSetting) -> DPSGDBackend:
    """The backend a DP-SGD setting asks for: ``setting.grad_backend()`` when the setting
    has one (``privacy.dpsgd.DPSGD`` does), else :class:`TorchFuncBackend`."""
    make = getattr(setting, "grad_backend", None)
    if make is None:
        return TorchFuncBackend()
    backend = make()
    if not isinstance(backend, DPSGDBackend):
        raise TypeError(
            f"dp_sgd.grad_backend() must return a fedkit.client_dp.DPSGDBackend (name, "
            f"vmappable, bind), got {type(backend).__name__}"
        )
    return backend


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
    clipped_sum: ClippedSum | None = None,
) -> tuple[torch.Tensor, tuple, torch.Tensor]:
    """One DP-SGD step: the gradient ``(Σᵢ wᵢ clip_C(gᵢ) + noise) / expected_batch`` (``wᵢ``
    the 0/1 Poisson mask, ``noise`` from :func:`dp_noise`, ``expected_batch = q·n``), then
    the optimiser update of :func:`apply_gradient`. The clipped sum comes from
    ``clipped_sum`` (a bound :class:`DPSGDBackend`; default :class:`TorchFuncBackend`).
    Returns ``(params, opt_state, loss)``, the loss being the mean over the batch (0 for an
    empty batch).
    (Abadi et al. 2016, Deep Learning with Differential Privacy.)"""
    if clipped_sum is None:
        clipped_sum = TorchFuncBackend().bind(task, cfg.dp_sgd.max_grad_norm)
    total, loss = clipped_sum(params, xb, yb, wb)
    grad = (total + noise) / expected_batch
    params, opt_state = apply_gradient(cfg, params, opt_state, grad, anchor)
    return params, opt_state, loss.detach()


@attrs.frozen
class DPSGDConfig:
    """The plain DP-SGD setting a ClientConfig carries across the wire (a
    :class:`fedkit.protocols.DPSGDSetting`): per-example clipping to ``max_grad_norm``,
    noise multiplier ``noise_multiplier``, Poisson batches of expected size ``batch_size``
    (rate ``min(1, batch_size / n)``: the rate ``privacy.dpsgd.DPSGD`` uses).
    (Abadi et al. 2016, Deep Learning with Differential Privacy.)"""

    max_grad_norm: float = attrs.field(converter=float)
    noise_multiplier: float = attrs.field(converter=float)
    batch_size: int = attrs.field(converter=int)

    def __attrs_post_init__(self) -> None:
        if not (self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)):
            raise ValueError(f"max_grad_norm must be finite and positive, got {self.max_grad_norm}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(
                f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def sample_rate(self, local_examples: int) -> float:
        """Poisson rate ``min(1, batch_size / local_examples)``."""
        if local_examples <= 0:
            raise ValueError(f"local_examples must be positive, got {local_examples}")
        return min(1.0, self.batch_size / local_examples)
