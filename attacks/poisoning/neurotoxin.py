"""Neurotoxin: a backdoor update kept off the coordinates that benign clients update most, so
that later benign rounds overwrite it less and the backdoor lasts."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, honest_mean
from fedkit.core.keys import Key


def top_coordinates(reference: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Indices of the ``⌊top_fraction · d⌋`` coordinates of ``reference`` (``Tensor[d]``)
    with the largest magnitude; ties go to the lower index."""
    top_fraction = float(top_fraction)
    if not 0.0 <= top_fraction <= 1.0:
        raise ValueError(f"neurotoxin: top_fraction must lie in [0, 1], got {top_fraction}")
    d = reference.shape[0]
    k = min(d, math.floor(top_fraction * d + 1e-9))
    order = torch.sort(reference.abs(), descending=True, stable=True).indices
    return order[:k]


def neurotoxin(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    own: torch.Tensor,
    top_fraction: float = 0.1,
    key: Key | None = None,
) -> torch.Tensor:
    """Byzantine row ``j`` is the adversary's own update ``own[j]`` (e.g. trained on
    backdoored data) with the top ``top_fraction`` of the coordinates of the benign
    reference ``μ`` zeroed: ``own[j] ⊙ m`` with ``m_i = 0`` where ``|μ_i|`` is among the
    ``⌊top_fraction · d⌋`` largest (:func:`top_coordinates`), 1 elsewhere. ``μ`` is the mean
    of the ``honest`` rows the adversary sees.

    Differences from the paper: its reference is the previous round's global update (which
    every client can compute); here it is the mean of the current round's benign updates
    (the adversary's view under ``knowledge="omniscient"``, which :class:`Neurotoxin`
    requires), a fresher estimate of the same direction. The paper projects every local
    gradient step onto the mask (projected gradient descent); here the mask applies once, to
    the update the attacker's local training produced (the attack interface sees updates).

    Zhang et al. 2022, Neurotoxin: Durable Backdoors in Federated Learning (ICML).
    """
    b = check_honest(honest, num_byzantine, "neurotoxin")
    if not isinstance(own, torch.Tensor) or tuple(own.shape) != (b, honest.shape[1]):
        shape = tuple(own.shape) if isinstance(own, torch.Tensor) else type(own).__name__
        raise ValueError(
            f"neurotoxin: own must hold the adversary's {b} update(s) of dimension "
            f"{honest.shape[1]}, got {shape}"
        )
    top = top_coordinates(honest_mean(honest), top_fraction)
    return own.to(honest.dtype).index_fill(1, top.to(own.device), 0.0)


@attrs.frozen
class Neurotoxin(Attack):
    """Attack value for :func:`neurotoxin`: it reads its own rows (``own``) and the benign
    rows, so it needs ``knowledge="omniscient"``; used with a data poison in
    :class:`attacks.CombinedPoisoning`."""

    kernel = staticmethod(neurotoxin)
    context = ("own",)
    knowledge_levels: ClassVar[tuple[str, ...]] = ("omniscient",)
    top_fraction: float = attrs.field(default=0.1)

    @top_fraction.validator
    def _check(self, attribute: attrs.Attribute, value: float) -> None:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"Neurotoxin: top_fraction must lie in [0, 1], got {value!r}")
