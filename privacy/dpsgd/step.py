"""One DP-SGD gradient for a client: Poisson-sample a batch, then the chosen backend."""

from __future__ import annotations

import torch
from torch import nn

from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key, split
from privacy.dpsgd.config import DPSGD
from privacy.dpsgd.functional import LossFn, Params, noisy_grad
from privacy.dpsgd.opacus_path import opacus_noisy_grad
from privacy.dpsgd.sampling import poisson_batch


def dpsgd_gradient(
    config: DPSGD,
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    key: Key,
    spec: ParamSpec | None = None,
) -> Params:
    """The DP-SGD gradient estimate at ``params`` on a client's local data ``(x, y)``: a
    batch drawn by Poisson sampling with rate ``config.sample_rate(n)``, per-example clipping,
    noise ``N(0, (z·C)²)`` and division by the expected batch size. Returned in the form of
    ``params`` (flat vector with ``spec``, or dict). The optimizer step is the caller's.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    if not isinstance(config, DPSGD):
        raise TypeError(f"config must be a privacy.dpsgd.DPSGD, got {type(config).__name__}")
    n = int(x.shape[0])
    sample_key, noise_key = split(key, 2)
    index = poisson_batch(sample_key, n, config.sample_rate(n), device=x.device)
    xb, yb = x.index_select(0, index), y.index_select(0, index)
    common = {
        "loss_fn": loss_fn,
        "max_grad_norm": config.max_grad_norm,
        "noise_multiplier": config.noise_multiplier,
        "expected_batch_size": config.expected_batch_size(n),
        "key": noise_key,
        "spec": spec,
    }
    if config.backend == "opacus":
        return opacus_noisy_grad(model, xb, yb, params=params, **common)
    return noisy_grad(model, params, xb, yb, **common)
