"""The Opacus backend of the engines' DP-SGD (``DPSGD(backend="opacus")``): per-example
gradients from Opacus's ``GradSampleModule``, clipped and summed by its ``DPOptimizer``.

It implements :class:`fedkit.client_dp.DPSGDBackend`: only the clipped sum
``Σᵢ wᵢ clip_C(gᵢ)`` of a step is Opacus's. The Poisson batches
(:func:`fedkit.client_dp.poisson_schedule`), the Gaussian noise
(:func:`fedkit.client_dp.dp_noise`, drawn from the client's key), the division by the
expected batch and the optimiser step are the engines' own, the very ones of the
``torch.func`` backend: for the same key both backends add the *same* noise bits, and their
clipped sums differ only by Opacus's ``‖g‖ + 1e-6`` in the clip factor. Opacus's hooks keep
per-sample gradients on module parameters, so this backend is not vmappable: the vectorised
engine trains its clients one by one.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, ClassVar

import attrs
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from fedkit.client_dp import ClippedSum, applies_own_module
from fedkit.core.flat import unflatten


def _module_of(task: Any) -> torch.nn.Module:
    if not applies_own_module(task):
        raise ValueError(
            f"dp_sgd.backend='opacus' needs a fedkit.tasks.SupervisedTask that applies its own "
            f"module (Opacus hooks a torch module); task {getattr(task, 'name', task)!r} "
            "does not: use backend='torch.func'"
        )
    return task.module


class _OpacusHooks:
    """A private copy of a task's module under ``GradSampleModule`` and a ``DPOptimizer``
    (noise off, sum reduction) that clips and sums its per-sample gradients. The copy is
    scratch space: every call loads the given flat parameters first, so results depend only
    on the arguments."""

    def __init__(self, task: Any, max_grad_norm: float) -> None:
        module = copy.deepcopy(_module_of(task))
        self.task, self.spec = task, task.spec
        named = dict(module.named_parameters())
        self.params = [named[e.name] for e in self.spec.entries]
        for p in self.params:
            p.requires_grad_(True)
        self.gsm = GradSampleModule(module, loss_reduction="sum")
        self.optimizer = DPOptimizer(
            torch.optim.SGD(self.params, lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=float(max_grad_norm),
            expected_batch_size=None,
            loss_reduction="sum",
        )

    def _load(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            named = unflatten(flat, self.spec, cast=True)
            for p, value in zip(self.params, named.values(), strict=True):
                p.copy_(value)

    def _backward(self, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        """Per-sample gradients of ``wᵢ lᵢ`` into ``p.grad_sample``; returns the losses."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad(), warnings.catch_warnings():
            # Opacus's full backward hooks warn when the input does not require grad.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            losses = self.task.per_example_loss(self.gsm(xb), yb)
            (losses * wb.to(losses.dtype)).sum().backward()
        return losses.detach()

    def __call__(
        self, params: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if xb.shape[0] == 0:
            return torch.zeros_like(params), torch.zeros((), dtype=params.dtype)
        self._load(params)
        losses = self._backward(xb, yb, wb)
        self.optimizer.pre_step()  # clip each sample jointly over all parameters, then sum
        total = torch.cat([p.grad.reshape(-1) for p in self.params]).to(params.dtype)
        w = wb.to(losses.dtype)
        loss = (losses * w).sum() / w.sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        return total, loss.to(params.dtype)

    def per_sample(self, params: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Opacus's unclipped per-example gradients ``[B, d]`` at ``params``."""
        self._load(params)
        self._backward(xb, yb, torch.ones(xb.shape[0], dtype=params.dtype))
        rows = [p.grad_sample.reshape(xb.shape[0], -1) for p in self.params]
        self.optimizer.zero_grad(set_to_none=True)
        return torch.cat(rows, dim=1).to(params.dtype)


@attrs.frozen
class OpacusBackend:
    """DP-SGD's per-example clipped gradient sum by Opacus (``GradSampleModule`` hooks and
    ``DPOptimizer`` clipping, jointly over all parameters); not vmappable.

    (Abadi et al. 2016, Deep Learning with Differential Privacy; Yousefpour et al. 2021,
    Opacus: User-Friendly Differential Privacy Library in PyTorch.)
    """

    name: ClassVar[str] = "opacus"
    vmappable: ClassVar[bool] = False

    def bind(self, task: Any, max_grad_norm: float) -> ClippedSum:
        return _OpacusHooks(task, max_grad_norm)


def opacus_per_example_grads(
    task: Any, params: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor
) -> torch.Tensor:
    """Per-example gradients ``[B, d]`` of ``task``'s loss at flat ``params`` by Opacus's
    ``GradSampleModule`` (the reference for :func:`fedkit.client_dp.per_example_grads`)."""
    return _OpacusHooks(task, 1.0).per_sample(params, xb, yb)


__all__ = ["OpacusBackend", "opacus_per_example_grads"]
