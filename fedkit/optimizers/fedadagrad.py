"""FedAdagrad: Adagrad on the server, with the aggregate as pseudo-gradient."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import number_in, positive
from fedkit.core.deprecation import renamed_arguments
from fedkit.optimizers._adaptive import (
    AdaptiveOptimizer,
    AdaptiveState,
    adaptive_step,
)
from fedkit.optimizers._checks import unit_interval


@renamed_arguments(tau="eps")
def adagrad_step(
    delta: torch.Tensor,
    state: AdaptiveState,
    *,
    lr: float = 0.1,
    beta1: float = 0.9,
    eps: float = 1e-9,
    bias_correction: bool = False,
) -> tuple[torch.Tensor, AdaptiveState]:
    """``m ← β₁ m + (1 − β₁) Δ̄``, ``v ← v + Δ̄²``, ``step = η · m / (√v + ε)``; with
    ``bias_correction`` the step size at step ``t`` is ``η / (1 − β₁ᵗ)`` (``v`` is a plain
    sum and needs none). The server applies ``x ← x + step``.

    Reddi et al. 2021, Adaptive Federated Optimization (ICLR), Algorithm 2.
    """

    def second_moment(v: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        return v + sq

    def correction(t: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 - beta1**t)

    return adaptive_step(
        "fedadagrad",
        delta,
        state,
        second_moment,
        lr=lr,
        beta1=beta1,
        eps=eps,
        correction=correction if bias_correction else None,
    )


@renamed_arguments(tau="eps")
@attrs.frozen
class FedAdagrad(AdaptiveOptimizer):
    """Component for :func:`adagrad_step`; its state is an :class:`AdaptiveState` whose
    ``v`` starts at ``initial_accumulator``."""

    step_fn = staticmethod(adagrad_step)
    lr: float = attrs.field(default=0.1, converter=float, validator=positive())
    beta1: float = attrs.field(default=0.9, converter=float, validator=unit_interval)
    eps: float = attrs.field(default=1e-9, converter=float, validator=number_in(0.0))
    bias_correction: bool = False
    initial_accumulator: float = attrs.field(default=0.0, converter=float, validator=number_in(0.0))
