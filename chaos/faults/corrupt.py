"""Corrupted replies: the payload is damaged on the way (NaN/Inf, truncated, wrong dtype,
random bytes, oversized)."""

from __future__ import annotations

from typing import Any

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan
from fedkit.simulation.delivery import CORRUPTIONS

# Short names accepted for the engine's variants (``fedkit.simulation.delivery.CORRUPTIONS``).
ALIASES = {"truncate": "truncated", "dtype": "wrong_dtype", "random_bytes": "bytes"}


def _variants(kinds: Any) -> tuple[str, ...]:
    names = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    out = tuple(ALIASES.get(str(k), str(k)) for k in names)
    unknown = [k for k in out if k not in CORRUPTIONS]
    if unknown or not out:
        raise ValueError(
            f"Corrupt.kinds must be a non-empty selection of {CORRUPTIONS} "
            f"(or aliases {sorted(ALIASES)}), got {kinds!r}"
        )
    return out


@attrs.frozen
class Corrupt:
    """With probability ``p`` a sampled client's payload is damaged (``CORRUPT``); the variant
    is uniform over ``kinds`` and ``detail`` is its index in the engine's ``CORRUPTIONS``
    (``nan``, ``inf``, ``truncated``, ``wrong_dtype``, ``bytes``, ``oversized``). Reason
    ``"corrupt:<variant>"``. Validation rejects every variant (``non_finite``,
    ``wrong_shape``, ``wrong_dtype``, ``malformed``, ``oversized``)."""

    p: float = attrs.field(default=0.1, validator=check_probability)
    kinds: tuple[str, ...] = attrs.field(default=CORRUPTIONS, converter=_variants)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        u = round_uniforms(key, round, clients, 2)
        pick = torch.clamp((u[:, 1] * len(self.kinds)).long(), max=len(self.kinds) - 1)
        variants = torch.tensor([CORRUPTIONS.index(k) for k in self.kinds], dtype=torch.int64)
        reasons = tuple(f"corrupt:{self.kinds[i]}" for i in pick.tolist())
        return plan_where(u[:, 0] < self.p, FaultKind.CORRUPT, reasons, detail=variants[pick])
