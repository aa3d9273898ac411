"""Mimic: every Byzantine client copies one honest client's update."""

from __future__ import annotations

import attrs
import torch

from attacks.poisoning._common import Attack, check_honest, repeat_row, require_key
from fedkit.core.keys import Key, randint
from fedkit.core.rows import gram


def mimic_target(honest: torch.Tensor, index: int | str = "pca", key: Key | None = None) -> int:
    """The honest row to copy.

    * ``"pca"`` (the paper's heuristic, computed on this round's rows): the row whose
      centred update has the largest projection on the top principal direction of the honest
      rows. The projections are ``√λ₁ · v₁`` with ``(λ₁, v₁)`` the top eigenpair of the
      centred Gram matrix, so no ``d × d`` matrix is formed; ties go to the lower index.
    * ``"random"``: a row drawn uniformly from ``key``;
    * an int: that row.
    """
    h = honest.shape[0]
    if isinstance(index, int) and not isinstance(index, bool):
        if not 0 <= index < h:
            raise ValueError(f"mimic: index {index} is out of range for {h} honest rows")
        return index
    if index == "random":
        return int(randint(require_key(key, "mimic with index='random'"), 0, h, ()))
    if index == "pca":
        if h == 1:
            return 0
        _, vectors = torch.linalg.eigh(gram(honest))
        return int(torch.argmax(vectors[:, -1].abs()))
    raise ValueError(f"mimic: index must be an int, 'pca' or 'random', got {index!r}")


def mimic(
    honest: torch.Tensor,
    *,
    num_byzantine: int,
    index: int | str = "pca",
    key: Key | None = None,
) -> torch.Tensor:
    """Every Byzantine row is a copy of the honest row :func:`mimic_target` picks, which
    over-represents that client (harmful under heterogeneous data) while looking honest.

    In the paper the target is fixed after an initial phase that estimates the principal
    direction over rounds; here it is chosen from each round's rows (kernels are stateless).

    Karimireddy et al. 2022, Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing (ICLR).
    """
    b = check_honest(honest, num_byzantine, "mimic")
    return repeat_row(honest[mimic_target(honest, index, key)], b)


@attrs.frozen
class Mimic(Attack):
    """Attack value for :func:`mimic`."""

    kernel = staticmethod(mimic)
    index: int | str = "pca"
