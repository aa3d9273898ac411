"""A little is enough (ALIE): shift the mean by a few standard deviations."""

from __future__ import annotations

import math
from statistics import NormalDist

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, honest_mean, honest_std, repeat_row
from fedkit.core.keys import Key


def alie_z(num_clients: int, num_byzantine: int) -> float:
    """The paper's ``z_max``: with ``s = ⌊n/2 + 1⌋ − f`` supporters needed,
    ``z = Φ⁻¹((n − s) / n)`` (``n`` clients in all, ``f`` Byzantine)."""
    n, f = int(num_clients), int(num_byzantine)
    if n < 1 or f < 0 or f > n:
        raise ValueError(f"alie_z needs 0 <= f <= n and n >= 1, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    if s <= 0:
        raise ValueError(
            f"alie_z: f={f} Byzantine of n={n} is a majority (s = ⌊n/2+1⌋ − f = {s} <= 0); "
            "the formula gives z = ∞, pass z explicitly"
        )
    if s >= n:
        raise ValueError(f"alie_z: n={n}, f={f} gives s = {s} >= n and z = −∞; pass z explicitly")
    return NormalDist().inv_cdf((n - s) / n)


def alie(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    z: float | None = None,
    num_clients: int | None = None,
    key: Key | None = None,
) -> torch.Tensor:
    """Every Byzantine row is ``μ − z·σ`` (coordinate-wise honest mean and unbiased standard
    deviation). Without ``z``, ``z = alie_z(n, f)`` with ``n = num_clients`` (default:
    ``h + num_byzantine``, i.e. the honest rows are the other clients) and ``f =
    num_byzantine``.

    Baruch et al. 2019, A Little Is Enough: Circumventing Defenses For Distributed Learning
    (NeurIPS).
    """
    b = check_honest(honest, num_byzantine, "alie", min_rows=2)
    if b == 0:
        return honest.new_zeros(0, honest.shape[1])
    if z is None:
        n = honest.shape[0] + b if num_clients is None else num_clients
        z = alie_z(n, b)
    return repeat_row(honest_mean(honest) - float(z) * honest_std(honest, "alie"), b)


@attrs.frozen
class ALIE(Attack):
    """Attack value for :func:`alie`; the adversary passes the round's ``num_clients``."""

    kernel = staticmethod(alie)
    context = ("num_clients",)
    z: float | None = None
