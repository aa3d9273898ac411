"""DP-SGD through the real Opacus: ``GradSampleModule`` for per-sample gradients and
``DPOptimizer`` for per-sample clipping, noise and scaling.

The reference implementation (and the path for models whose layers ``torch.func`` cannot
handle). The caller's module is never modified: the work happens on a deep copy, which
gets the given parameters loaded first when they are passed.
"""

from __future__ import annotations

import copy
import warnings

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

from fedkit.core.flat import ParamSpec, flatten, unflatten
from fedkit.core.keys import Key, generator
from privacy.dpsgd.functional import LossFn, Params, privatize


def _module_with(model: nn.Module, params: Params | None, spec: ParamSpec | None) -> nn.Module:
    clone = copy.deepcopy(model)
    if params is not None:
        named = unflatten(params, spec) if isinstance(params, torch.Tensor) else dict(params)
        with torch.no_grad():
            for name, p in clone.named_parameters():
                if name not in named:
                    raise KeyError(f"params has no entry for the model's parameter {name!r}")
                p.copy_(named[name])
    return clone


def _opacus_grads(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float | None,
    key: Key | None,
) -> dict[str, torch.Tensor]:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    gsm = GradSampleModule(model, loss_reduction="mean")
    params = [p for p in gsm.parameters() if p.requires_grad]
    optimizer = DPOptimizer(
        torch.optim.SGD(params, lr=0.0),
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        expected_batch_size=None if expected_batch_size is None else int(expected_batch_size),
        loss_reduction="sum" if expected_batch_size is None else "mean",
        generator=None if key is None else generator(key),
    )
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        # Opacus's full backward hooks warn when the input does not require grad.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss_fn(gsm(x), y).backward()
    optimizer.pre_step()
    return {name: p.grad.detach().clone() for name, p in zip(names, params, strict=True)}


def _as_input_form(
    grads: dict[str, torch.Tensor], params: Params | None, spec: ParamSpec | None
) -> Params:
    if isinstance(params, torch.Tensor):
        flat, _ = flatten(grads, spec)
        return flat
    return grads


def opacus_clipped_grad_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    max_grad_norm: float,
    params: Params | None = None,
    spec: ParamSpec | None = None,
) -> Params:
    """The sum of per-example gradients clipped to ``max_grad_norm`` (all parameters
    jointly), computed by Opacus's ``GradSampleModule`` + ``DPOptimizer`` with the noise
    off. Returns ``{name: tensor}`` (or a flat vector when ``params`` is flat).

    (Abadi et al. 2016, Deep Learning with Differential Privacy; Yousefpour et al. 2021,
    Opacus: User-Friendly Differential Privacy Library in PyTorch.)
    """
    module = _module_with(model, params, spec)
    if x.shape[0] == 0:
        grads = {n: torch.zeros_like(p) for n, p in module.named_parameters() if p.requires_grad}
    else:
        grads = _opacus_grads(
            module,
            x,
            y,
            loss_fn=loss_fn,
            max_grad_norm=max_grad_norm,
            noise_multiplier=0.0,
            expected_batch_size=None,
            key=None,
        )
    return _as_input_form(grads, params, spec)


def opacus_noisy_grad(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    key: Key,
    params: Params | None = None,
    spec: ParamSpec | None = None,
) -> Params:
    """One DP-SGD gradient ``(Σ clipped g + N(0, (z·C)²)) / expected_batch_size`` by Opacus's
    ``DPOptimizer``, its noise drawn from a generator seeded by ``key``.

    (Abadi et al. 2016, Deep Learning with Differential Privacy; Yousefpour et al. 2021,
    Opacus: User-Friendly Differential Privacy Library in PyTorch.)
    """
    if key is None:
        raise ValueError("opacus_noisy_grad needs a key for its noise")
    module = _module_with(model, params, spec)
    if x.shape[0] == 0:
        zeros = {n: torch.zeros_like(p) for n, p in module.named_parameters() if p.requires_grad}
        grads = privatize(
            zeros,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            key=key,
        )
    else:
        grads = _opacus_grads(
            module,
            x,
            y,
            loss_fn=loss_fn,
            max_grad_norm=max_grad_norm,
            noise_multiplier=noise_multiplier,
            expected_batch_size=expected_batch_size,
            key=key,
        )
    return _as_input_form(grads, params, spec)


def check_opacus_compatible(model: nn.Module) -> None:
    """Raise a clear error when Opacus cannot compute per-sample gradients for ``model``
    (e.g. BatchNorm layers, which mix examples)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"model is not DP-SGD compatible: {errors}")


__all__ = [
    "check_opacus_compatible",
    "opacus_clipped_grad_sum",
    "opacus_noisy_grad",
]
