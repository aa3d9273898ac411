"""Server learning rate: scale the aggregate."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.checks import positive
from fedkit.core.components import ServerTransform
from fedkit.optimizers._checks import check_delta, check_real


def server_lr_step(
    delta: torch.Tensor, state: tuple = (), *, lr: float
) -> tuple[torch.Tensor, tuple]:
    """``step = lr · Δ̄`` (stateless: the state is ``()``). With client updates
    ``Δ_i = local − global``, the server applies ``x ← x + step``.

    The server step size of FedOpt (Reddi et al. 2021, Adaptive Federated Optimization).
    """
    delta = check_delta(delta, "server_lr")
    lr = check_real(lr, "server_lr: lr", low=0.0, low_open=True)
    return delta * lr, state


@attrs.frozen
class ServerLR(ServerTransform):
    """Component for :func:`server_lr_step`."""

    lr: float = attrs.field(converter=float, validator=positive())

    def __call__(self, updates, weights, state, key):
        step, state = server_lr_step(updates, state, lr=self.lr)
        return step, state, {}
