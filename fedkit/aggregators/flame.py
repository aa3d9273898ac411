"""FLAME: keep the majority cosine cluster (HDBSCAN), clip to the median norm, add noise."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import torch

from fedkit.core.checks import require_number
from fedkit.core.components import Reducer, RoundContext, as_weights, require_context
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key, normal
from fedkit.core.rows import (
    active_index,
    check_updates,
    coordinate_chunks,
    gather_chunk,
    gram,
    weighted_rows,
)

SPACES = ("updates", "models")
ABSENT = -2  # cluster label of a row of weight 0 (HDBSCAN's own labels: -1 noise, 0, 1, ...)


@attrs.frozen(eq=False)
class FlameRound:
    """Everything one FLAME aggregation decided.

    ``aggregate`` (``Tensor[d]``, the updates' dtype, noise included); ``labels`` (int64
    ``[n]``: HDBSCAN's cluster of each active row, ``-1`` for its noise points, ``-2`` for
    rows of weight 0); ``admitted`` (bool ``[n]``: the rows of the majority cluster);
    ``clipped`` (bool ``[n]``: admitted rows scaled down to ``clip_norm``); ``norms``
    (float64 ``[n]``: each row's Euclidean norm, NaN for rows of weight 0); ``clip_norm``
    (``S_t``, the median active norm) and ``noise_std`` (``λ·S_t``).
    """

    aggregate: torch.Tensor
    labels: torch.Tensor
    admitted: torch.Tensor
    clipped: torch.Tensor
    norms: torch.Tensor
    clip_norm: float
    noise_std: float


@renamed_arguments(lam="noise_multiplier")
def flame_round(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    noise_multiplier: float = 0.001,
    space: str = "models",
    params: torch.Tensor | None = None,
    key: Key | None = None,
) -> FlameRound:
    """One FLAME aggregation with its decisions (see :func:`flame`)."""
    updates, w = check_updates(updates, weights)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    space = check_space(space)
    n, d = updates.shape
    index = active_index(w)
    rows = None if index.numel() == n else index  # all active: no gather copy
    inner = gram(updates, rows, center="none", dtype=torch.float64).cpu()
    inner = (inner + inner.T) / 2
    sq = torch.diagonal(inner).clamp(min=0.0)
    if not bool(torch.isfinite(inner).all()):
        raise ValueError("flame: active rows hold NaN/Inf (or values too large)")
    norms = sq.sqrt()
    if space == "models":
        inner = _model_inner(updates, rows, inner, params)
    member, labels = _majority(_cosine_distances(inner))
    clip_norm = float(torch.quantile(norms, 0.5))
    scale = torch.where(norms > clip_norm, clip_norm / norms, torch.ones_like(norms))
    mass = w.index_select(0, index).cpu().to(torch.float64) * member
    coeffs = torch.zeros(n, dtype=torch.float64, device=updates.device)
    if bool(mass.sum() > 0):
        coeffs[index] = (mass * scale / mass.sum()).to(coeffs.device)
    aggregate = weighted_rows(updates, coeffs, finite=rows is None)
    noise_std = noise_multiplier * clip_norm
    if noise_std > 0.0:
        if key is None:
            raise ValueError(
                "flame: adding noise (noise_multiplier > 0 and a nonzero median norm) needs a key"
            )
        noise = normal(key, d, std=noise_std, dtype=torch.float64, device=updates.device)
        aggregate = (aggregate.to(torch.float64) + noise).to(updates.dtype)
    full_labels = torch.full((n,), ABSENT, dtype=torch.int64)
    full_labels[index.cpu()] = labels
    admitted = torch.zeros(n, dtype=torch.bool)
    admitted[index.cpu()] = member
    clipped = torch.zeros(n, dtype=torch.bool)
    clipped[index.cpu()] = member & (norms > clip_norm)
    full_norms = torch.full((n,), float("nan"), dtype=torch.float64)
    full_norms[index.cpu()] = norms
    device = w.device
    return FlameRound(
        aggregate=aggregate,
        labels=full_labels.to(device),
        admitted=admitted.to(device),
        clipped=clipped.to(device),
        norms=full_norms.to(device),
        clip_norm=clip_norm,
        noise_std=noise_std,
    )


@renamed_arguments(lam="noise_multiplier")
def flame(
    updates: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    noise_multiplier: float = 0.001,
    space: str = "models",
    params: torch.Tensor | None = None,
    key: Key | None = None,
) -> torch.Tensor:
    """FLAME's aggregate (``Tensor[d]``): filter by clustering, clip, average, add noise.

    1. *Filter.* Cosine distances ``1 − cos`` between the active rows (one float64 Gram
       matrix; a zero row has cosine 0 with every row) go, as a precomputed ``m × m``
       matrix, to scikit-learn's HDBSCAN with ``min_cluster_size = ⌊m/2⌋ + 1``,
       ``min_samples = 1`` (the paper's settings) and ``allow_single_cluster=True`` (with
       ``min_cluster_size`` above ``m/2`` at most one cluster can exist, and HDBSCAN reports
       a lone cluster only with that flag; without it every row is noise). The rows of the
       largest cluster are admitted; every other row, HDBSCAN's noise points included, is
       rejected. HDBSCAN labels only the core of a single cluster, so in a round without
       attackers it too rejects some honest rows (FLAME's false positives).
    2. *Clip.* ``S_t`` is the median Euclidean norm of all active rows (``‖W_i − G_{t−1}‖``
       in the paper); each admitted row is scaled by ``min(1, S_t / ‖x_i‖)``.
    3. *Average* the clipped admitted rows, weighted by ``weights`` (the paper's plain
       average ``1/L`` when the weights are equal, e.g. under ``weighting="uniform"``).
    4. *Noise.* Add ``N(0, σ² I)`` with ``σ = noise_multiplier · S_t`` (the paper's λ;
       default 0.001, the paper's value for image classification), drawn with ``key``.

    What is clustered (``space``). Algorithm 1 of the paper takes cosine distances between
    the local *models* ``W_i = G_{t−1} + Δ_i``; so does the default ``space="models"``, with
    ``params`` the global model ``G_{t−1}`` (``Tensor[d]``; the component reads it from the
    round's context). Inner products ``⟨G + Δ_i, G + Δ_j⟩`` come from the updates' Gram
    matrix plus ``⟨G, Δ_i⟩`` and ``‖G‖²``, all in float64, so the tiny model-space distances
    keep their precision. Note what they measure: with ``‖Δ_i‖ ≪ ‖G‖``,
    ``1 − cos(W_i, W_j) ≈ ‖P(Δ_i − Δ_j)‖² / (2‖G‖²)`` (``P`` projects out the direction of
    ``G``), a Euclidean distance between updates rather than an angle between them (a
    boosted update is far from the rest). ``space="updates"`` clusters the updates ``Δ_i``
    themselves: an angle between update directions, blind to their scale (which the
    clipping step then bounds), and no global model needed. On digits (10 clients, 2 IPM
    attackers, 3 rounds) both rejected every attacker; ``"models"`` rejected fewer honest
    clients (4 of 24 against 6).

    No admitted row (every row noise; not seen with ``allow_single_cluster``) gives the
    zero vector plus noise. One active row is its own majority. Rows of weight 0
    are absent (they may hold NaN/Inf). Deterministic but for the noise: same key, same
    output; ``noise_multiplier = 0`` needs no key.

    Extra memory: one coordinate chunk (``_common``), ``O(m²)`` numbers (NumPy holds the
    distance matrix for HDBSCAN), the ``[d]`` output.

    Nguyen, Rieger, Chen, Yalame, Möllering, Fereidooni, Marchal, Miettinen, Mirhoseini,
    Zeitouni, Koushanfar, Sadeghi, Schneider 2022, "FLAME: Taming Backdoors in Federated
    Learning" (USENIX Security).
    """
    return flame_round(
        updates, weights, noise_multiplier=noise_multiplier, space=space, params=params, key=key
    ).aggregate


def check_noise_multiplier(z: object) -> float:
    """``noise_multiplier`` as a finite float ``>= 0`` (noise σ = noise_multiplier · S_t), or
    an error naming it (:func:`fedkit.core.checks.require_number`)."""
    return require_number(z, "flame: noise_multiplier", low=0.0)


def check_lam(lam: object) -> float:
    """Deprecated spelling of :func:`check_noise_multiplier` (removed in 0.3)."""
    warnings.warn(
        "fedkit.aggregators.flame.check_lam is renamed check_noise_multiplier; check_lam will "
        "be removed in 0.3",
        DeprecationWarning,
        stacklevel=2,
    )
    return check_noise_multiplier(lam)


def check_space(space: object) -> str:
    """``space`` as one of :data:`SPACES` or a ``ValueError`` naming it."""
    if space not in SPACES:
        raise ValueError(f"flame: space must be one of {SPACES}, got {space!r}")
    return str(space)


def _model_inner(
    updates: torch.Tensor,
    rows: torch.Tensor | None,
    inner: torch.Tensor,
    params: torch.Tensor | None,
) -> torch.Tensor:
    """Inner products ``⟨G + Δ_i, G + Δ_j⟩`` (float64, CPU) from the updates' Gram matrix
    ``inner`` and the global model ``G = params``."""
    d = updates.shape[1]
    if not isinstance(params, torch.Tensor) or tuple(params.shape) != (d,):
        shape = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(
            f"flame: space='models' needs the global parameters params as a Tensor of shape "
            f"({d},), got {shape}"
        )
    if not bool(torch.isfinite(params).all()):
        raise ValueError("flame: params (the global model) hold NaN/Inf")
    g = params.to(device=updates.device, dtype=torch.float64)
    m = inner.shape[0]
    cross = torch.zeros(m, dtype=torch.float64, device=updates.device)
    for cols in coordinate_chunks(m, d):
        cross += gather_chunk(updates, rows, cols).to(torch.float64) @ g[cols]
    cross = cross.cpu()
    return inner + cross[:, None] + cross[None, :] + float(g @ g)


def _cosine_distances(inner: torch.Tensor) -> torch.Tensor:
    """``1 − cos`` (float64, in ``[0, 2]``, zero diagonal) from a Gram matrix; a zero row
    has cosine 0 with every other row."""
    norms = torch.diagonal(inner).clamp(min=0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, inner / denom, torch.zeros_like(inner)).clamp(-1.0, 1.0)
    dist = (1.0 - cos).clamp(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def _majority(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HDBSCAN on the precomputed distances: (mask of the largest cluster, labels int64)."""
    m = dist.shape[0]
    if m == 1:
        return torch.ones(1, dtype=torch.bool), torch.zeros(1, dtype=torch.int64)
    try:
        from sklearn.cluster import HDBSCAN  # an extra, and a slow import: only when used
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "FLAME clusters with scikit-learn's HDBSCAN (scikit-learn >= 1.3): "
            "pip install 'fedkit[experiments]'"
        ) from err
    labels = (
        HDBSCAN(
            min_cluster_size=m // 2 + 1,
            min_samples=1,
            metric="precomputed",
            allow_single_cluster=True,
            copy=True,
        )
        .fit(np.ascontiguousarray(dist.numpy()))
        .labels_
    )
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    clustered = labels[labels >= 0]
    if clustered.numel() == 0:
        return torch.zeros(m, dtype=torch.bool), labels
    counts = torch.bincount(clustered)
    return labels == int(torch.argmax(counts)), labels  # ties: the lowest label


@renamed_arguments(lam="noise_multiplier")
@attrs.frozen
class FLAME(Reducer):
    """Reducer for :func:`flame`. ``info``: ``rejected["flame"]`` (active rows outside the
    majority cluster), ``clipped`` (admitted rows scaled down), ``clusters`` (int64 ``[n]``
    labels as in :class:`FlameRound`), ``clip_norm`` (``S_t``) and ``noise_std``.
    ``space="models"`` (the default) reads the global model from the round's context."""

    uses_context: ClassVar[bool] = True

    noise_multiplier: float = attrs.field(default=0.001, converter=float)
    space: str = attrs.field(default="models")

    def __attrs_post_init__(self) -> None:
        check_noise_multiplier(self.noise_multiplier)
        check_space(self.space)

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        params = None
        if self.space == "models":
            params = require_context(context, "FLAME(space='models')").params
        w = as_weights(weights, updates.shape[0], updates)
        out = flame_round(
            updates,
            w,
            noise_multiplier=self.noise_multiplier,
            space=self.space,
            params=params,
            key=key,
        )
        info = {
            "rejected": {"flame": (w > 0) & ~out.admitted},
            "clipped": out.clipped,
            "clusters": out.labels,
            "clip_norm": out.clip_norm,
            "noise_std": out.noise_std,
        }
        return out.aggregate, state, info
