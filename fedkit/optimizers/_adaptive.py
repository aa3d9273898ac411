"""State and shared arithmetic of the adaptive server optimizers (FedAdam, FedYogi,
FedAdagrad; Reddi et al. 2021, Adaptive Federated Optimization, Algorithm 2: ``eps`` is the
paper's adaptivity ε, written τ there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch

from fedkit.core.components import ServerTransform, hyperparameters
from fedkit.optimizers._checks import check_delta, check_real, like_delta


class AdaptiveState(NamedTuple):
    """First moment ``m: Tensor[d]``, second-moment accumulator ``v: Tensor[d]`` (both kept
    in the aggregate's dtype) and ``count``: the number of steps taken (int64, 0-d)."""

    m: torch.Tensor
    v: torch.Tensor
    count: torch.Tensor


def adaptive_init(
    d: int,
    *,
    initial_accumulator: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> AdaptiveState:
    """``m = 0``, ``v = initial_accumulator`` (Flower starts at 0; the paper's analysis
    takes ``v₋₁ ≥ ε²``), ``count = 0``."""
    initial_accumulator = check_real(initial_accumulator, "initial_accumulator", low=0.0)
    return AdaptiveState(
        m=torch.zeros(d, dtype=dtype, device=device),
        v=torch.full((d,), initial_accumulator, dtype=dtype, device=device),
        count=torch.zeros((), dtype=torch.int64, device=device),
    )


def adaptive_step(
    name: str,
    delta: torch.Tensor,
    state: AdaptiveState,
    second_moment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    lr: float,
    beta1: float,
    eps: float,
    correction: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, AdaptiveState]:
    """``m ← β₁ m + (1 − β₁) Δ̄``, ``v ← second_moment(v, Δ̄²)``,
    ``step = lr · c(t) · m / (√v + ε)`` with ``t`` the new count and ``c(t)`` the bias
    correction (1 when ``correction`` is None)."""
    delta = check_delta(delta, name)
    lr = check_real(lr, f"{name}: lr", low=0.0, low_open=True)
    beta1 = check_real(beta1, f"{name}: beta1", low=0.0, high=1.0)
    eps = check_real(eps, f"{name}: eps", low=0.0)
    m = like_delta(state.m, delta, "m", name)
    v = like_delta(state.v, delta, "v", name)
    count = state.count.to(device=delta.device) + 1
    m = beta1 * m + (1.0 - beta1) * delta
    v = second_moment(v, delta.square())
    scale = lr if correction is None else lr * correction(count.to(torch.float64))
    step = (m * scale) / (v.sqrt() + eps)
    return step, AdaptiveState(m, v, count)


def adam_correction(beta1: float, beta2: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Kingma and Ba's bias correction ``c(t) = √(1 − β₂ᵗ) / (1 − β₁ᵗ)`` (Adam and Yogi)."""

    def correction(t: torch.Tensor) -> torch.Tensor:
        return (1.0 - beta2**t).sqrt() / (1.0 - beta1**t)

    return correction


class AdaptiveOptimizer(ServerTransform):
    """Base of the FedAdam / FedYogi / FedAdagrad components: the state is an
    :class:`AdaptiveState` whose ``v`` starts at the ``initial_accumulator`` field, and a
    call runs ``step_fn`` with every other field as a keyword argument."""

    step_fn: ClassVar[Callable[..., tuple[torch.Tensor, AdaptiveState]]]

    def init(self, d: int) -> AdaptiveState:
        return adaptive_init(d, initial_accumulator=self.initial_accumulator)

    def __call__(self, updates, weights, state, key):
        params = hyperparameters(self)
        params.pop("initial_accumulator")
        step, state = type(self).step_fn(updates, state, **params)
        return step, state, {}
