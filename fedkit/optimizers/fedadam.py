"""FedAdam: Adam on the server, with the aggregate as pseudo-gradient."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import number_in, positive
from fedkit.core.deprecation import renamed_arguments
from fedkit.optimizers._adaptive import (
    AdaptiveOptimizer,
    AdaptiveState,
    adam_correction,
    adaptive_step,
)
from fedkit.optimizers._checks import check_real, unit_interval


@renamed_arguments(tau="eps")
def adam_step(
    delta: torch.Tensor,
    state: AdaptiveState,
    *,
    lr: float = 0.1,
    beta1: float = 0.9,
    beta2: float = 0.99,
    eps: float = 1e-9,
    bias_correction: bool = False,
) -> tuple[torch.Tensor, AdaptiveState]:
    """``m ← β₁ m + (1 − β₁) Δ̄``, ``v ← β₂ v + (1 − β₂) Δ̄²``, ``step = η · m / (√v + ε)``;
    with ``bias_correction`` the step size at step ``t`` is ``η √(1 − β₂ᵗ) / (1 − β₁ᵗ)``
    (Kingma and Ba's form: ``ε`` is not rescaled). The server applies ``x ← x + step``.

    Reddi et al. 2021, Adaptive Federated Optimization (ICLR), Algorithm 2.
    """
    beta2 = check_real(beta2, "fedadam: beta2", low=0.0, high=1.0)

    def second_moment(v: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        return beta2 * v + (1.0 - beta2) * sq

    return adaptive_step(
        "fedadam",
        delta,
        state,
        second_moment,
        lr=lr,
        beta1=beta1,
        eps=eps,
        correction=adam_correction(beta1, beta2) if bias_correction else None,
    )


@renamed_arguments(tau="eps")
@attrs.frozen
class FedAdam(AdaptiveOptimizer):
    """Component for :func:`adam_step`; its state is an :class:`AdaptiveState` whose ``v``
    starts at ``initial_accumulator``."""

    step_fn = staticmethod(adam_step)
    lr: float = attrs.field(default=0.1, converter=float, validator=positive())
    beta1: float = attrs.field(default=0.9, converter=float, validator=unit_interval)
    beta2: float = attrs.field(default=0.99, converter=float, validator=unit_interval)
    eps: float = attrs.field(default=1e-9, converter=float, validator=number_in(0.0))
    bias_correction: bool = False
    initial_accumulator: float = attrs.field(default=0.0, converter=float, validator=number_in(0.0))
