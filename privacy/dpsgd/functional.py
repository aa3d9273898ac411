"""DP-SGD's per-sample clipped gradient sum with ``torch.func`` (the fast path).

Per-sample gradients come from ``vmap(grad(loss of one example))`` over the batch, so there
are no module hooks and the whole computation is a pure function of the parameters: it runs
under an outer ``vmap`` over clients (the vectorised engine) when the batch is given as a
fixed-size set of examples plus a 0/1 ``mask`` (Poisson sampling as a mask,
:func:`~privacy.dpsgd.sampling.poisson_mask`).

Parameters are either a dict ``{name: tensor}`` (the gradient comes back as a dict) or one
flat vector with its :class:`~fedkit.ParamSpec` (the gradient comes back flat). The loss
function ``loss_fn(logits, y)`` must reduce by the mean (as ``cross_entropy`` does); a
one-example batch makes mean and sum agree.

The clipping itself (:func:`fedkit.client_dp.clip_factors`, :func:`fedkit.client_dp.clipped_grad_sum`)
is the simulation engines' own: one implementation of the math for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedkit.client_dp import clip_factors
from fedkit.client_dp import clipped_grad_sum as clipped_sum_of_rows
from fedkit.core.flat import ParamSpec, unflatten
from fedkit.core.keys import Key, fold_in, normal

Params = torch.Tensor | Mapping[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchLoss = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]


def _check_inputs(params: Params, x: torch.Tensor, y: torch.Tensor, spec: ParamSpec | None) -> None:
    if isinstance(params, torch.Tensor):
        if spec is None:
            raise ValueError("flat parameters need their ParamSpec: pass spec=")
    elif not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a flat tensor or a dict of tensors, got {type(params).__name__}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")


def per_sample_grads_of(
    batch_loss: BatchLoss, params: Params, x: torch.Tensor, y: torch.Tensor
) -> Params:
    """Per-example gradients of ``batch_loss(params, xb, yb) -> scalar`` (a mean-reduced
    loss, called on one-example batches): ``Tensor[B, d]`` for a flat vector, else a dict
    of ``Tensor[B, *shape]``. ``batch_loss`` may be any pure function, e.g. a fedkit task's
    ``lambda p, xb, yb: task.loss(task.apply(p, xb), yb)``."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")

    def loss_one(p: Params, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return batch_loss(p, xi.unsqueeze(0), yi.unsqueeze(0))

    params_in = params if isinstance(params, torch.Tensor) else dict(params)
    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params_in, x, y)


def model_loss(model: nn.Module, loss_fn: LossFn, spec: ParamSpec | None = None) -> BatchLoss:
    """``batch_loss(params, xb, yb)`` of ``model`` under ``torch.func.functional_call``
    (flat parameters need their ``spec``; buffers are read from ``model``)."""
    buffers = dict(model.named_buffers())

    def batch_loss(p: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if isinstance(p, torch.Tensor):
            if spec is None:
                raise ValueError("flat parameters need their ParamSpec: pass spec=")
            named = unflatten(p, spec)
        else:
            named = dict(p)
        return loss_fn(functional_call(model, (named, buffers), (xb,)), yb)

    return batch_loss


def per_sample_grads(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    spec: ParamSpec | None = None,
) -> Params:
    """The gradient of ``loss_fn`` on each example separately: ``Tensor[B, d]`` for flat
    parameters, else ``{name: Tensor[B, *shape]}``. Buffers are read from ``model``."""
    _check_inputs(params, x, y, spec)
    if isinstance(params, torch.Tensor):
        grads = per_sample_grads_of(model_loss(model, loss_fn), unflatten(params, spec), x, y)
        return torch.cat([grads[e.name].reshape(x.shape[0], -1) for e in spec.entries], dim=1)
    return per_sample_grads_of(model_loss(model, loss_fn), params, x, y)


def per_sample_norms(grads: Params) -> torch.Tensor:
    """The L2 norm of each example's gradient over *all* parameters jointly: ``Tensor[B]``."""
    if isinstance(grads, torch.Tensor):
        return torch.linalg.vector_norm(grads, dim=1)
    sq = [g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads.values()]
    return torch.stack(sq, dim=0).sum(dim=0).sqrt()


def clipped_grad_sum_of(
    batch_loss: BatchLoss,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    max_grad_norm: float,
) -> Params:
    """``Σ_i m_i · g_i · min(1, C/‖g_i‖)`` for the per-example gradients ``g_i`` of
    ``batch_loss`` (see :func:`per_sample_grads_of`), each clipped to L2 norm
    ``max_grad_norm`` over all parameters jointly, summed over the examples selected by
    ``mask`` (all when None). Same form as ``params`` (flat tensor or dict).

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    if not float(max_grad_norm) > 0:
        raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm!r}")
    if mask is not None and mask.shape != (x.shape[0],):
        raise ValueError(f"mask must have shape ({x.shape[0]},), got {tuple(mask.shape)}")
    if x.shape[0] == 0:
        if isinstance(params, torch.Tensor):
            return torch.zeros_like(params)
        return {k: torch.zeros_like(v) for k, v in params.items()}
    grads = per_sample_grads_of(batch_loss, params, x, y)
    if isinstance(grads, torch.Tensor):
        weights = torch.ones(x.shape[0], dtype=grads.dtype) if mask is None else mask
        return clipped_sum_of_rows(grads, weights.to(grads.device), max_grad_norm)
    factors = clip_factors(per_sample_norms(grads), max_grad_norm)
    if mask is not None:
        factors = factors * mask.to(factors.dtype)
    return {k: torch.tensordot(factors, g, dims=1) for k, g in grads.items()}


def clipped_grad_sum(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    loss_fn: LossFn,
    max_grad_norm: float,
    spec: ParamSpec | None = None,
) -> Params:
    """:func:`clipped_grad_sum_of` for ``model`` with ``loss_fn(logits, y)`` (mean-reduced)
    at ``params`` (a dict, or a flat vector with its ``spec``). Prefer this form to a
    ``batch_loss`` on a flat vector: it differentiates with respect to the named tensors,
    which is about twice as fast.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    _check_inputs(params, x, y, spec)
    if isinstance(params, torch.Tensor):
        # Differentiate with respect to views of the flat vector, not the vector itself:
        # the backward of slicing would fill a [B, d] tensor per parameter tensor.
        total = clipped_grad_sum_of(
            model_loss(model, loss_fn),
            unflatten(params, spec),
            x,
            y,
            mask,
            max_grad_norm=max_grad_norm,
        )
        return torch.cat([total[e.name].reshape(-1).to(params.dtype) for e in spec.entries])
    return clipped_grad_sum_of(
        model_loss(model, loss_fn), params, x, y, mask, max_grad_norm=max_grad_norm
    )


def privatize(
    grad_sum: Params,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float | torch.Tensor,
    key: Key,
) -> Params:
    """``(Σ clipped g + N(0, (z·C)² I)) / (q·n)``: the DP-SGD gradient estimate, with the
    *expected* batch size as the denominator (Poisson sampling). Works on a flat vector, a
    dict, or a stack ``[clients, d]`` (one independent draw per entry); for a stack,
    ``expected_batch_size`` may be a ``Tensor[clients]`` (one denominator per row).

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    z, c = float(noise_multiplier), float(max_grad_norm)
    b = torch.as_tensor(expected_batch_size, dtype=torch.float64)
    if not (z >= 0 and c > 0 and bool((b > 0).all())):
        raise ValueError(
            "need noise_multiplier >= 0, max_grad_norm > 0, expected_batch_size > 0; got "
            f"{z}, {c}, {expected_batch_size}"
        )
    if key is None:
        raise ValueError("privatize needs a key for its noise")

    def noised(t: torch.Tensor, k: Key) -> torch.Tensor:
        if b.ndim and (t.ndim < 1 or b.shape != t.shape[:1]):
            raise ValueError(
                f"expected_batch_size of shape {tuple(b.shape)} needs a stack of that many rows"
            )
        denom = b.reshape(b.shape + (1,) * (t.ndim - b.ndim)).to(t.dtype).to(t.device)
        if z == 0.0:
            return t / denom
        noise = normal(k, t.shape, std=z * c, dtype=t.dtype, device=t.device)
        return (t + noise) / denom

    if isinstance(grad_sum, torch.Tensor):
        return noised(grad_sum, key)
    return {name: noised(t, fold_in(key, i)) for i, (name, t) in enumerate(grad_sum.items())}


def noisy_grad(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    loss_fn: LossFn,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    key: Key,
    spec: ParamSpec | None = None,
) -> Params:
    """:func:`clipped_grad_sum` then :func:`privatize`: one DP-SGD gradient.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    total = clipped_grad_sum(
        model, params, x, y, mask, loss_fn=loss_fn, max_grad_norm=max_grad_norm, spec=spec
    )
    return privatize(
        total,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        key=key,
    )
