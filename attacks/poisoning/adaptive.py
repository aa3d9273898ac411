"""Attacks adapted to a defense: rows that FLAME's clustering admits, and sybils whose update
histories FoolsGold cannot tell apart.

Both attacks start from the same malicious row. With ``μ`` the mean of the honest rows and
``ρ`` their *spread* (:func:`benign_spread`, the median distance of an honest row to ``μ``),
Byzantine row ``j`` is displaced from ``μ`` along a unit direction ``u_j``
(:func:`attack_directions`) by ``strength · ρ``:

* ``"ipm"``: ``u = −μ/‖μ‖``, against the benign mean (inner-product manipulation);
* ``"alie"``: ``u = −σ/‖σ‖`` (``σ`` the coordinate-wise standard deviation), ALIE's shift;
  as ``‖σ‖`` is close to the root-mean-square distance to ``μ``, ``strength`` plays the part
  of ALIE's ``z``;
* ``"own"``: ``u_j = (o_j − μ)/‖o_j − μ‖`` towards the adversary's own update ``o_j``, e.g.
  one trained on backdoored data (:class:`attacks.CombinedPoisoning` with a
  :class:`attacks.Backdoor`).

Strength in units of the spread. A displacement of ``strength · ρ`` means the same thing on
IID data (honest rows close together, small ``ρ``) and on label-skewed data (e.g.
Dirichlet(0.5): far apart, large ``ρ``): the row lies as far outside the benign crowd, in
units of its own width, whatever the heterogeneity. A fixed displacement (IPM's ``−ε μ``,
a fixed ALIE ``z`` in the units of another data split) is conspicuous on one split and
harmless on the other (docs/attacks.md: on digits, IPM's ``−0.1 μ`` lies 1.1-1.4 ``ρ`` from
``μ`` with IID clients and 0.5-0.8 ``ρ`` with Dirichlet(0.5) ones). Benchmarks that
compare attacks across data splits, such as BackFed (Dao, Nguyen, Doan, Wong 2025,
arXiv:2507.04903), need settings that keep their meaning; this is the one used here.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import attrs
import torch

from attacks.poisoning._common import (
    Attack,
    check_honest,
    honest_mean,
    honest_std,
)
from fedkit.core.keys import Key, fold_in, normal
from fedkit.core.keys import key as root_key
from fedkit.core.rows import coordinate_chunks

DIRECTIONS = ("ipm", "alie", "own")
#: candidate mixing factors λ in [0, 1] that :func:`adaptive_flame` tries
GRID = 257


# ---------------------------------------------------------------- shared pieces


def check_direction(direction: object, name: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"{name}: direction must be one of {DIRECTIONS}, got {direction!r}")
    return str(direction)


def check_unit_interval(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_strength(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ bᵀ`` (float64, ``[a_rows, b_rows]``), accumulated over coordinate chunks."""
    acc = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for cols in coordinate_chunks(a.shape[0] + b.shape[0], a.shape[1]):
        acc += a[:, cols].double() @ b[:, cols].double().T
    return acc


def _unit_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` scaled to unit norm (float64 norms); a zero row stays zero."""
    norms = torch.diagonal(_inner(rows, rows)).sqrt()
    scale = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    return rows * scale.to(rows.dtype)[:, None]


def benign_spread(honest: torch.Tensor) -> float:
    """``ρ = median_i ‖h_i − μ‖``: how far an honest row typically lies from the honest mean
    ``μ`` (the lower median for an even count). The unit of the adaptive attacks'
    ``strength``; 0 for one row or identical rows."""
    if honest.ndim != 2 or honest.shape[0] == 0:
        raise ValueError(f"benign_spread: needs honest rows [h >= 1, d], got {tuple(honest.shape)}")
    centred = honest - honest_mean(honest)
    return float(torch.diagonal(_inner(centred, centred)).clamp(min=0.0).sqrt().median())


def attack_directions(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    direction: str,
    own: torch.Tensor | None = None,
    name: str = "attack_directions",
) -> torch.Tensor:
    """The unit directions ``u_j`` (``Tensor[b, d]``, ``honest``'s dtype) along which the
    adaptive attacks displace their rows from ``μ`` (module doc); a direction that is not
    defined (``μ = 0`` for ``"ipm"``, ``σ = 0`` for ``"alie"``, ``o_j = μ`` for ``"own"``)
    is the zero row."""
    b = num_byzantine
    check_direction(direction, name)
    if direction == "own":
        if not isinstance(own, torch.Tensor) or tuple(own.shape) != (b, honest.shape[1]):
            shape = tuple(own.shape) if isinstance(own, torch.Tensor) else type(own).__name__
            raise ValueError(
                f"{name}: direction='own' needs own, the adversary's {b} update(s) of "
                f"dimension {honest.shape[1]}, got {shape}"
            )
        return _unit_rows(own.to(honest.dtype) - honest_mean(honest))
    if direction == "ipm":
        base = -honest_mean(honest)
    else:
        base = -honest_std(honest, name)
    return _unit_rows(base.unsqueeze(0)).expand(b, -1).clone()


# ---------------------------------------------------------------- FLAME


def adaptive_flame(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    direction: str = "ipm",
    strength: float = 2.0,
    quantile: float = 0.25,
    own: torch.Tensor | None = None,
    key: Key | None = None,
) -> torch.Tensor:
    """Byzantine row ``j`` is the malicious row ``μ + strength·ρ·u_j`` (module doc) pulled
    back towards the honest mean until FLAME would admit it, and no longer than the median
    honest row, so that FLAME's clipping leaves it whole (constrain and scale).

    The row is ``c · (μ + λ_j · strength·ρ·u_j)`` with ``c = min(1, S / ‖·‖)``, ``S`` the
    median Euclidean norm of the honest rows, and ``λ_j`` the largest of :data:`GRID`
    evenly spaced values in ``[0, 1]`` for which the row lies no farther from ``μ`` than
    the ``quantile``-quantile of the honest rows do, by both distances FLAME may cluster
    with:

    * by angle, ``1 − cos(row, μ)`` (FLAME's ``space="updates"``);
    * by Euclidean distance ``‖row − μ‖`` (FLAME's default ``space="models"`` clusters the
      local models ``G + Δ``, whose cosine distances are nearly squared Euclidean distances
      between the updates ``Δ``; see :func:`fedkit.aggregators.flame`).

    ``λ = 0`` (the clipped mean) is the fallback when no other value passes. A smaller
    ``quantile`` keeps the rows deeper inside the benign cluster (safer, weaker). This rule
    stands in for FLAME's HDBSCAN, which admits the densest ``⌊m/2⌋ + 1`` or so rows. On
    digits (the 16 honest rows of each of 10 rounds, 4 identical Byzantine rows), FLAME
    admitted displacements up to 0.7-1.2 ``ρ`` depending on the direction and the space;
    with ``quantile=0.25`` the rows moved 0.7-0.9 ``ρ`` and FLAME admitted all 120 of them
    in ``space="models"`` and 96 of 120 in ``space="updates"``. FLAME's clipping norm is the
    median over all rows, Byzantine ones included; rows no longer than the honest median
    can lower it only slightly. The distances come in closed form from inner products with
    ``μ``, so no candidate row is built. ``key`` is unused.

    Needs the honest rows (knowledge ``"omniscient"``) and at least two of them.

    Nguyen et al. 2022, FLAME: Taming Backdoors in Federated Learning (USENIX Security) (the
    defense); Bagdasaryan et al. 2020, How To Backdoor Federated Learning (AISTATS) (the
    constrain-and-scale idea).
    """
    name = "adaptive_flame"
    b = check_honest(honest, num_byzantine, name, min_rows=2)
    direction = check_direction(direction, name)
    strength = check_strength(strength, f"{name}: strength")
    quantile = check_unit_interval(quantile, f"{name}: quantile")
    if b == 0:
        return honest.new_zeros(0, honest.shape[1])
    mu = honest_mean(honest)
    shift = attack_directions(honest, num_byzantine=b, direction=direction, own=own, name=name)
    shift = shift * (strength * benign_spread(honest))

    # honest rows: norms, distances and angles to μ
    mm = float(_inner(mu.unsqueeze(0), mu.unsqueeze(0)))
    mn = math.sqrt(max(mm, 0.0))
    sq = torch.diagonal(_inner(honest, honest)).clamp(min=0.0)
    hm = _inner(honest, mu.unsqueeze(0))[:, 0]
    euc_budget = torch.quantile((sq - 2.0 * hm + mm).clamp(min=0.0).sqrt(), quantile)
    cos_budget = torch.quantile(1.0 - _cosine(hm, sq.sqrt(), mn), quantile)
    clip = sq.sqrt().median()

    # candidates r = μ + λ·shift_j, clipped to c·r: [b, K]
    mv = _inner(shift, mu.unsqueeze(0))[:, 0]
    vv = torch.diagonal(_inner(shift, shift))
    lam = torch.linspace(0.0, 1.0, GRID, dtype=torch.float64, device=sq.device)
    rr = (mm + 2.0 * lam * mv[:, None] + lam**2 * vv[:, None]).clamp(min=0.0)  # ‖r‖²
    rm = mm + lam * mv[:, None]  # ⟨r, μ⟩
    rn = rr.sqrt()
    c = torch.where(rn > clip, clip / torch.where(rn > 0, rn, 1.0), 1.0)
    euc = (c**2 * rr - 2.0 * c * rm + mm).clamp(min=0.0).sqrt()
    ok = (euc <= euc_budget) & (1.0 - _cosine(rm, rn, mn) <= cos_budget)
    ok[:, 0] = True
    last = GRID - 1 - torch.flip(ok, dims=[1]).to(torch.int64).argmax(dim=1)  # [b]
    scale = c[torch.arange(b, device=c.device), last]
    rows = mu.unsqueeze(0) + lam[last].to(honest.dtype)[:, None] * shift
    return rows * scale.to(honest.dtype)[:, None]


def _cosine(inner: torch.Tensor, norms: torch.Tensor, other: float) -> torch.Tensor:
    """``inner / (norms · other)`` clamped to ``[-1, 1]``; 1 where a norm is 0 (a zero
    vector counts as pointing along ``μ``: it moves nothing)."""
    denom = norms * other
    return torch.where(denom > 0, inner / torch.where(denom > 0, denom, 1.0), 1.0).clamp(-1, 1)


# ---------------------------------------------------------------- FoolsGold


def sybil_directions(
    seed: int,
    num_byzantine: int,
    d: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``Tensor[b, d]`` of orthonormal rows, row ``j`` a function of ``seed`` and ``j`` only:
    float32 Gaussian draws from ``fold_in(key(seed), j)``, orthonormalised in row order
    (Gram-Schmidt through the Cholesky factor ``L`` of their ``[b, b]`` Gram matrix, rows
    ``L⁻¹ · draws``: row ``j`` depends on draws ``0..j`` only and has a positive inner
    product with draw ``j``). Needs ``b <= d``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"sybil_directions: seed must be an int, got {seed!r}")
    b = num_byzantine
    if b > d:
        raise ValueError(
            f"sybil_directions: {b} mutually orthogonal directions need num_byzantine <= d, "
            f"got num_byzantine={b}, d={d}"
        )
    if b == 0:
        return torch.zeros(0, d, dtype=dtype, device=device)
    root = root_key(seed)
    draws = torch.stack([normal(fold_in(root, j), d, device=device or "cpu") for j in range(b)])
    draws = draws.to(dtype)
    lower = torch.linalg.cholesky(_inner(draws, draws).cpu())
    mix = torch.linalg.inv(lower).to(device=draws.device, dtype=dtype)
    return mix @ draws


def adaptive_foolsgold(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    direction: str = "ipm",
    strength: float = 2.0,
    diversity: float = 0.5,
    seed: int = 0,
    own: torch.Tensor | None = None,
    key: Key | None = None,
) -> torch.Tensor:
    """Byzantine row ``j`` is ``μ + strength·ρ·(√(1 − β²)·u_j + β·p_j)``: the malicious
    displacement of the module doc with a share ``β = diversity`` of its length turned into
    a direction ``p_j`` of sybil ``j``'s own.

    The ``p_j`` are orthonormal (:func:`sybil_directions`) and, being a function of
    ``seed`` and of ``j`` (the row's rank among the Byzantine rows) only, the same in every
    round. FoolsGold scores the cosine similarity of each client's *sum* of updates; the
    common part of the sybils' rows adds up the same way in each history, but so does each
    one's own ``p_j``, which grows linearly in the number of rounds while honest clients'
    deviations from the mean add up partly at random. The histories stay apart and the
    sybils keep a positive FoolsGold weight, where identical sybils (``β = 0``, e.g. plain
    ALIE or IPM) get weight 0. ``β`` trades attack strength (``√(1 − β²)`` of the
    displacement is malicious) for diversity; ``β = 1`` is keyed noise around ``μ``.

    The per-round ``key`` is unused: the adversaries fold the round into it, and the sybil
    directions must not change between rounds; ``seed`` picks them (the configs pass the
    run's seed). A client keeps its direction while its rank among the Byzantine rows
    does, i.e. when every controlled client takes part in every round (full participation).
    Needs ``num_byzantine <= d``. Reads the honest rows for ``μ`` and ``ρ``; under
    ``knowledge="partial"`` those are the adversary's own updates.

    Fung, Yoon, Beschastnikh 2020, The Limitations of Federated Learning in Sybil Settings
    (RAID): the defense, and its discussion of adaptive sybils that add diversity to their
    updates.
    """
    name = "adaptive_foolsgold"
    b = check_honest(honest, num_byzantine, name, min_rows=1 if direction != "alie" else 2)
    direction = check_direction(direction, name)
    strength = check_strength(strength, f"{name}: strength")
    beta = check_unit_interval(diversity, f"{name}: diversity")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name}: seed must be an int, got {seed!r}")
    if b == 0:
        return honest.new_zeros(0, honest.shape[1])
    d = honest.shape[1]
    u = attack_directions(honest, num_byzantine=b, direction=direction, own=own, name=name)
    p = sybil_directions(seed, b, d, dtype=honest.dtype, device=honest.device)
    length = strength * benign_spread(honest)
    shift = (math.sqrt(1.0 - beta**2) * length) * u + (beta * length) * p
    return honest_mean(honest).unsqueeze(0) + shift


# ---------------------------------------------------------------- attack values


def _direction_field() -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: object) -> None:
        check_direction(value, f"{type(instance).__name__}: {attribute.name}")

    return attrs.field(default="ipm", validator=check)


def _strength_field() -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: object) -> None:
        check_strength(value, f"{type(instance).__name__}: {attribute.name}")

    return attrs.field(default=2.0, validator=check)


def _unit_field(default: float) -> Any:
    def check(instance: Any, attribute: attrs.Attribute, value: object) -> None:
        check_unit_interval(value, f"{type(instance).__name__}: {attribute.name}")

    return attrs.field(default=default, validator=check)


class _ReadsOwnIfAsked(Attack):
    """Adaptive attacks read their own updates only for ``direction="own"``."""

    context: ClassVar[tuple[str, ...]] = ("own",)

    @property
    def reads_own(self) -> bool:
        return self.direction == "own"


@attrs.frozen
class AdaptiveFlame(_ReadsOwnIfAsked):
    """Attack value for :func:`adaptive_flame`: rows inside FLAME's benign cluster, at most
    the median honest norm. Needs ``knowledge="omniscient"`` (it measures the honest rows'
    distances); with ``direction="own"`` it reads its own (e.g. backdoored) updates, with
    :class:`attacks.CombinedPoisoning`."""

    kernel = staticmethod(adaptive_flame)
    knowledge_levels: ClassVar[tuple[str, ...]] = ("omniscient",)
    direction: str = _direction_field()
    strength: float = _strength_field()
    quantile: float = _unit_field(0.25)


@attrs.frozen
class AdaptiveFoolsGold(_ReadsOwnIfAsked):
    """Attack value for :func:`adaptive_foolsgold`: sybils with keyed, mutually orthogonal
    directions of their own that keep their update histories apart."""

    kernel = staticmethod(adaptive_foolsgold)
    direction: str = _direction_field()
    strength: float = _strength_field()
    diversity: float = _unit_field(0.5)
    seed: int = attrs.field(default=0)

    @seed.validator
    def _check_seed(self, attribute: attrs.Attribute, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"AdaptiveFoolsGold: seed must be an int, got {value!r}")
