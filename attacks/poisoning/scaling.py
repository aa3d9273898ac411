"""Scaling / model replacement: boost an update so that it dominates the average."""

from __future__ import annotations

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, honest_mean, repeat_row
from fedkit.core.keys import Key


def scaling(
    honest: torch.Tensor, *, num_byzantine: int, factor: float, key: Key | None = None
) -> torch.Tensor:
    """Every Byzantine row is ``factor · μ``, the scaled mean of the honest rows it sees.

    Model replacement uses partial knowledge (``μ`` is then the mean of the adversary's own
    updates, e.g. trained on backdoored data) and ``factor = n / η`` (clients per round over
    the server learning rate), so that plain averaging lands on the adversary's model.

    Bagdasaryan et al. 2020, How To Backdoor Federated Learning (AISTATS).
    """
    b = check_honest(honest, num_byzantine, "scaling")
    factor = float(factor)
    if factor != factor or abs(factor) == float("inf"):
        raise ValueError(f"scaling: factor must be finite, got {factor}")
    return repeat_row(honest_mean(honest) * factor, b)


@attrs.frozen
class Scaling(Attack):
    """Attack value for :func:`scaling`."""

    kernel = staticmethod(scaling)
    factor: float = 10.0
