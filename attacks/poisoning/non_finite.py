"""Non-finite rows (NaN / ±Inf): they exercise the server's sanitisation."""

from __future__ import annotations

from typing import Literal

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, require_key
from fedkit.core.keys import Key, bernoulli

_VALUES = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def non_finite(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    kind: Literal["nan", "inf", "-inf"] = "nan",
    fraction: float = 1.0,
    key: Key | None = None,
) -> torch.Tensor:
    """Byzantine rows holding ``kind`` (NaN, +Inf or −Inf): every coordinate when
    ``fraction = 1``, else each coordinate independently with probability ``fraction``
    (drawn from ``key``) and 0 elsewhere. Not an attack from a paper: a robustness check."""
    b = check_honest(honest, num_byzantine, "non_finite")
    if kind not in _VALUES:
        raise ValueError(f"non_finite: kind must be one of {sorted(_VALUES)}, got {kind!r}")
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"non_finite: fraction must lie in (0, 1], got {fraction}")
    shape = (b, honest.shape[1])
    value = _VALUES[kind]
    if fraction == 1.0:
        return torch.full(shape, value, dtype=honest.dtype, device=honest.device)
    hit = bernoulli(require_key(key, "non_finite with fraction < 1"), fraction, shape)
    zeros = torch.zeros(shape, dtype=honest.dtype)
    return torch.where(hit, torch.full_like(zeros, value), zeros).to(honest.device)


@attrs.frozen
class NonFinite(Attack):
    """Attack value for :func:`non_finite`."""

    kernel = staticmethod(non_finite)
    kind: str = attrs.field(default="nan", validator=attrs.validators.in_(tuple(_VALUES)))
    fraction: float = 1.0
