"""What every inversion attack shares: the model as a function of flat parameters, the
client's observable (one gradient, or a multi-step local update) as a differentiable
function of the data, and the :class:`Reconstruction` an attack returns.

Threat model. The server knows the global parameters ``params`` it sent and receives one
client's flat vector ``observed``:

* FedSGD (``local_lr=None``): ``observed = ∇θ L(params; x, y)``, the gradient of the mean
  cross-entropy over the client's batch;
* FedAvg (``local_lr=η``, ``local_steps=k``): ``observed = θ_k − θ_0``, the update after
  ``k`` full-batch SGD steps of rate ``η`` on the same batch (fedkit's sign: new − old).

For the FedAvg case the attacker either unrolls the ``k`` steps on its dummy data
(``unroll=True``, differentiable through every step; the stronger attack, Geiping et al.
2020 §5) or treats ``−Δ / (k η)`` as one averaged gradient (``unroll=False``; exact only
for ``k = 1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

from fedkit.core.flat import ParamSpec, unflatten

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@attrs.frozen(eq=False)
class Reconstruction:
    """An attack's output: ``inputs`` ``[B, *input_shape]`` (unclamped), hard ``labels``
    ``[B]`` (int64), the matching loss at every iteration of the best restart
    (``history``) and its final value (``loss``; lower = better match)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    history: torch.Tensor
    loss: float


def as_model_fn(model: Any) -> ModelFn:
    """``(flat_params, x) -> logits`` from a task (anything with ``apply(flat, x)``, e.g.
    :class:`fedkit.tasks.SupervisedTask`) or such a callable itself."""
    if isinstance(model, nn.Module):
        raise TypeError(
            "pass a task (with .apply(flat, x)) or a function (flat, x) -> logits, not an "
            "nn.Module; wrap a module with torch.func.functional_call and a ParamSpec"
        )
    apply = getattr(model, "apply", None)
    if callable(apply):
        return apply
    if callable(model):
        return model
    raise TypeError(f"model must be a task or a callable (flat, x) -> logits, got {type(model)}")


def spec_of_model(model: Any, spec: ParamSpec | None) -> ParamSpec:
    """The ParamSpec given, or the task's ``spec``; a clear error when neither exists."""
    if spec is not None:
        return spec
    own = getattr(model, "spec", None)
    if isinstance(own, ParamSpec):
        return own
    raise ValueError("this attack needs the model's ParamSpec: pass a task or spec=...")


def soft_cross_entropy(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``−Σ_c p_c log softmax(logits)_c`` (equals
    ``F.cross_entropy`` for one-hot ``probs``)."""
    return -(probs * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def gradient(
    model_fn: ModelFn, params: torch.Tensor, x: torch.Tensor, probs: torch.Tensor
) -> torch.Tensor:
    """``∇θ`` of the mean (soft-label) cross-entropy at ``params``; differentiable in
    ``x`` and ``probs`` (torch.func, so an attacker can differentiate through it)."""

    def loss(p: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(model_fn(p, x), probs)

    return torch.func.grad(loss)(params)


def local_update(
    model_fn: ModelFn,
    params: torch.Tensor,
    x: torch.Tensor,
    probs: torch.Tensor,
    *,
    local_steps: int,
    local_lr: float,
) -> torch.Tensor:
    """``θ_k − θ_0`` after ``local_steps`` full-batch SGD steps of rate ``local_lr`` on
    ``(x, probs)`` from ``θ_0 = params`` (differentiable in ``x`` and ``probs``)."""
    theta = params
    for _ in range(local_steps):
        theta = theta - local_lr * gradient(model_fn, theta, x, probs)
    return theta - params


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Labels ``[B]`` as probability rows ``[B, num_classes]``; a clear error when out of
    range."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16):
        raise ValueError(f"labels must be an integer tensor [B], got {labels.dtype} {labels.shape}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.tolist()}")
    return nn.functional.one_hot(labels.long(), num_classes).to(dtype)


def client_gradient(
    model: Any, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """What the server sees under FedSGD: the gradient of the mean cross-entropy of the
    client's batch ``(x, y)`` at ``params`` (a flat vector like ``params``)."""
    model_fn = as_model_fn(model)
    with torch.no_grad():
        logits = model_fn(params, x[:1])
    return gradient(model_fn, params, x, one_hot(y, logits.shape[-1], params.dtype)).detach()


def client_update(
    model: Any,
    params: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    local_steps: int,
    local_lr: float,
) -> torch.Tensor:
    """What the server sees under FedAvg: ``θ_k − θ_0`` after ``local_steps`` full-batch
    SGD steps of rate ``local_lr`` on ``(x, y)``."""
    check_local(local_steps, local_lr)
    model_fn = as_model_fn(model)
    with torch.no_grad():
        logits = model_fn(params, x[:1])
    probs = one_hot(y, logits.shape[-1], params.dtype)
    return local_update(
        model_fn, params, x, probs, local_steps=local_steps, local_lr=local_lr
    ).detach()


def check_local(local_steps: int, local_lr: float | None) -> None:
    if not isinstance(local_steps, int) or local_steps < 1:
        raise ValueError(f"local_steps must be a positive int, got {local_steps!r}")
    if local_lr is not None and not float(local_lr) > 0:
        raise ValueError(f"local_lr must be positive (or None for a gradient), got {local_lr!r}")
    if local_lr is None and local_steps != 1:
        raise ValueError("local_steps > 1 needs local_lr: the observation is then an update")


def check_observation(params: torch.Tensor, observed: torch.Tensor) -> None:
    for name, t in (("params", params), ("observed", observed)):
        if not isinstance(t, torch.Tensor) or t.ndim != 1 or not torch.is_floating_point(t):
            raise ValueError(f"{name} must be a flat floating-point Tensor[d], got {t!r:.80}")
    if params.shape != observed.shape:
        raise ValueError(f"observed has {observed.numel()} entries but params has {params.numel()}")
    if not torch.isfinite(observed).all():
        raise ValueError("observed holds NaN or Inf")


def predictor(
    model_fn: ModelFn,
    params: torch.Tensor,
    observed: torch.Tensor,
    *,
    local_steps: int,
    local_lr: float | None,
    unroll: bool,
) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.Tensor]:
    """The attacker's model of the observation and the target it matches:
    ``(predict(x, probs), target)`` with ``predict`` differentiable in both arguments."""
    check_observation(params, observed)
    check_local(local_steps, local_lr)
    params, observed = params.detach(), observed.detach()
    if local_lr is None:
        return (lambda x, p: gradient(model_fn, params, x, p)), observed
    if unroll:

        def predict(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            return local_update(model_fn, params, x, p, local_steps=local_steps, local_lr=local_lr)

        return predict, observed
    averaged = -observed / (local_steps * float(local_lr))
    return (lambda x, p: gradient(model_fn, params, x, p)), averaged


def gradient_estimate(
    observed: torch.Tensor, *, local_steps: int, local_lr: float | None
) -> torch.Tensor:
    """The observation as a gradient: itself (FedSGD) or ``−Δ / (k η)`` (FedAvg)."""
    check_local(local_steps, local_lr)
    return observed if local_lr is None else -observed / (local_steps * float(local_lr))


def last_weight_gradient(flat: torch.Tensor, spec: ParamSpec) -> torch.Tensor:
    """The gradient of the last 2-D parameter in ``spec`` (the classifier's weight
    ``[num_classes, features]``)."""
    matrices = [e for e in spec.entries if len(e.shape) == 2]
    if not matrices:
        raise ValueError("the model has no 2-D (Linear) weight to read labels from")
    if flat.numel() != spec.size:
        raise ValueError(f"flat has {flat.numel()} entries but the spec describes {spec.size}")
    return unflatten(flat, spec)[matrices[-1].name]


def check_shape(input_shape, batch_size: int, num_classes: int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"input_shape must be non-empty positive sizes, got {input_shape!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return shape
