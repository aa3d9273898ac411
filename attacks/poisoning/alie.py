"""A little is enough (ALIE): shift the mean by a few standard deviations.

The default ``z`` is the paper's (Baruch et al. 2019): with ``n`` clients, ``b`` of them
Byzantine, the attacker needs ``s = ⌊n/2 + 1⌋ − b`` honest "supporters" and takes
``z = Φ⁻¹((n − s) / n)``, the largest shift such that, for normally distributed honest
values, ``s`` honest clients are further from the mean than the Byzantine value. Here
``n = num_clients`` is what :func:`attacks.knowledge.poison_rows` passes: the number of
clients the server aggregates this round (participating honest clients and the Byzantine
ones), not the population size; e.g. ``n = 20, b = 4``: ``s = 7``, ``z = Φ⁻¹(0.65) ≈ 0.385``.

fedkit applies it to what clients send, the model update after local training
(``u ≈ −η·g`` for one SGD step), so ``μ − zσ`` on updates is ``μ_g + zσ_g`` in gradient
terms: the same attack with the shift's sign convention mirrored (``σ ≥ 0`` carries no
sign of the gradient). See docs/attacks.md.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, honest_mean, honest_std, repeat_row
from fedkit.core.keys import Key


def alie_z(num_clients: int, num_byzantine: int) -> float:
    """The paper's ``z_max``: with ``s = ⌊n/2 + 1⌋ − f`` supporters needed,
    ``z = Φ⁻¹((n − s) / n)`` (``n`` clients in all, ``f`` Byzantine; ``Φ⁻¹`` the standard
    normal quantile). Errors when ``s <= 0`` (a Byzantine majority: ``z = ∞``) or ``s >= n``.

    Baruch et al. 2019, A Little Is Enough: Circumventing Defenses For Distributed Learning
    (NeurIPS)."""
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
    """Every Byzantine row is ``μ − z·σ`` (coordinate-wise mean of the ``h`` honest rows and
    their unbiased standard deviation, divisor ``h − 1``). Without ``z``,
    ``z = alie_z(n, f) = Φ⁻¹((n − s)/n)``, ``s = ⌊n/2 + 1⌋ − f``, with ``n = num_clients``
    (default: ``h + num_byzantine``, i.e. the honest rows are the other clients) and
    ``f = num_byzantine`` (module doc).

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
