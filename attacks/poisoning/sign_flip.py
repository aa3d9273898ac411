"""Sign flipping: send the negated honest mean."""

from __future__ import annotations

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, honest_mean, repeat_row
from fedkit.core.keys import Key


def sign_flip(honest: torch.Tensor, *, num_byzantine: int, key: Key | None = None) -> torch.Tensor:
    """Every Byzantine row is ``−μ``, the negated mean of the honest rows it sees (with partial
    knowledge: of its own clients' honest updates).

    Allen-Zhu et al. 2021, Byzantine-Resilient Non-Convex Stochastic Gradient Descent (ICLR).
    """
    b = check_honest(honest, num_byzantine, "sign_flip")
    return repeat_row(-honest_mean(honest), b)


@attrs.frozen
class SignFlip(Attack):
    """Attack value for :func:`sign_flip`."""

    kernel = staticmethod(sign_flip)
