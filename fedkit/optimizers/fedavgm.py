"""FedAvgM: server momentum on the aggregate."""

from __future__ import annotations

from typing import NamedTuple

import attrs
import torch

from fedkit.core.checks import positive
from fedkit.core.components import ServerTransform
from fedkit.optimizers._checks import check_delta, check_real, like_delta, unit_interval


class MomentumState(NamedTuple):
    """The momentum buffer ``m: Tensor[d]`` (kept in the aggregate's dtype)."""

    momentum: torch.Tensor


def momentum_init(
    d: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> MomentumState:
    """A zero momentum buffer for ``d`` parameters."""
    return MomentumState(torch.zeros(d, dtype=dtype, device=device))


def momentum_step(
    delta: torch.Tensor, state: MomentumState, *, lr: float, momentum: float
) -> tuple[torch.Tensor, MomentumState]:
    """``m ← β m + Δ̄`` and ``step = lr · m`` (``β`` = ``momentum``); the server applies
    ``x ← x + step``. With ``β = 0`` and ``lr = 1`` the step is ``Δ̄`` itself (FedAvg).

    Hsu, Qi and Brown 2019, Measuring the Effects of Non-Identical Data Distribution for
    Federated Visual Classification.
    """
    delta = check_delta(delta, "fedavgm")
    lr = check_real(lr, "fedavgm: lr", low=0.0, low_open=True)
    momentum = check_real(momentum, "fedavgm: momentum", low=0.0, high=1.0)
    m = like_delta(state.momentum, delta, "momentum", "fedavgm")
    m = delta + momentum * m if momentum != 0.0 else delta.clone()
    return m * lr if lr != 1.0 else m.clone(), MomentumState(m)


@attrs.frozen
class FedAvgM(ServerTransform):
    """Component for :func:`momentum_step`; its state is a :class:`MomentumState`."""

    lr: float = attrs.field(default=1.0, converter=float, validator=positive())
    momentum: float = attrs.field(default=0.9, converter=float, validator=unit_interval)

    def init(self, d: int) -> MomentumState:
        return momentum_init(d)

    def __call__(self, updates, weights, state, key):
        step, state = momentum_step(updates, state, lr=self.lr, momentum=self.momentum)
        return step, state, {}
