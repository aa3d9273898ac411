"""Server optimizers: server transforms that turn the aggregate into the server's step.

Client updates are ``Δ_i = local − global``, so the aggregate ``Δ̄`` points downhill and the
server applies ``x ← x + step``. Each optimizer is a pure kernel
``name_step(delta, state, *, <hyper>) -> (step, state)`` plus a thin component whose
``init(d)`` makes the state (a NamedTuple of tensors, kept in the aggregate's dtype).
"""

from fedkit.optimizers._adaptive import AdaptiveState, adaptive_init
from fedkit.optimizers.fedadagrad import FedAdagrad, adagrad_step
from fedkit.optimizers.fedadam import FedAdam, adam_step
from fedkit.optimizers.fedavgm import FedAvgM, MomentumState, momentum_init, momentum_step
from fedkit.optimizers.fedyogi import FedYogi, yogi_step
from fedkit.optimizers.server_lr import ServerLR, server_lr_step

__all__ = [
    "AdaptiveState",
    "FedAdagrad",
    "FedAdam",
    "FedAvgM",
    "FedYogi",
    "MomentumState",
    "ServerLR",
    "adagrad_step",
    "adam_step",
    "adaptive_init",
    "momentum_init",
    "momentum_step",
    "server_lr_step",
    "yogi_step",
]
