"""Poisson sampling of local batches: each example is in the batch independently with
probability ``q``, so the batch size is random with mean ``q·n`` (what the accountants'
amplification-by-sampling analysis assumes)."""

from __future__ import annotations

import torch

from fedkit.core.keys import Key, bernoulli


def poisson_mask(
    key: Key, n: int, sample_rate: float, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``BoolTensor[n]``: True for the examples in this step's batch (static shape, for the
    vectorised engine)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must lie in [0, 1], got {sample_rate!r}")
    return bernoulli(key, float(sample_rate), (n,), device=device)


def poisson_batch(
    key: Key, n: int, sample_rate: float, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The indices (int64, increasing) of a Poisson-sampled batch from ``range(n)``.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    return torch.nonzero(poisson_mask(key, n, sample_rate, device=device), as_tuple=False).flatten()
