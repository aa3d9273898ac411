"""What an adversary sees in a round, and how its Byzantine rows replace the honest ones.

Knowledge levels (``updates: Tensor[n, d]`` holds every sampled client's honest update,
``byzantine: BoolTensor[n]`` marks the adversary's clients, ``weights: Tensor[n]`` is 0 for
clients that take no part):

* ``"omniscient"``: the honest updates of the other participating clients
  (``~byzantine & weights > 0``), i.e. exactly the rows the server aggregates next to the
  Byzantine ones; when there is none, its own clients' honest updates;
* ``"partial"``: only its own clients' honest updates (``updates[byzantine]``), which it uses as
  stand-ins for the others'.

The rows are sliced *before* the attack kernel is called, so a kernel cannot read more than
its adversary may know. The kernel also receives ``num_clients``, the number of clients the
server aggregates (participating or Byzantine): a count, not a value it could not know; and,
when it asks for them (``own`` in its ``context``), its own clients' honest updates, which
the adversary always knows.

Data. An omniscient attack that does not read its own rows needs no update of its own, so
its clients do not train (:attr:`attacks.ModelPoisoning.needs_training`) and may hold no
data at all; then, with no honest participant either, the fallback rows are zeros.

Claimed sizes. Every Byzantine row claims the mean example count of the honest rows the
adversary reads (:func:`claimed_examples`, rounded half up, at least 1), so it weighs like a
typical client under FedAvg's example weighting, whatever its own data.
"""

from __future__ import annotations

from typing import Literal

import torch

from attacks.poisoning import Attack
from fedkit.core.components import as_weights
from fedkit.core.keys import Key

Knowledge = Literal["omniscient", "partial"]
KNOWLEDGE_LEVELS: tuple[str, ...] = ("omniscient", "partial")


def check_round(
    updates: torch.Tensor, byzantine: torch.Tensor, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one round's inputs; return ``(byzantine as bool, weights as float [n])``."""
    if not isinstance(updates, torch.Tensor) or updates.ndim != 2:
        shape = (
            tuple(updates.shape) if isinstance(updates, torch.Tensor) else type(updates).__name__
        )
        raise ValueError(f"updates must be a tensor of shape [n, d], got {shape}")
    if not torch.is_floating_point(updates):
        raise TypeError(f"updates must be floating point, got {updates.dtype}")
    n = updates.shape[0]
    byzantine = torch.as_tensor(byzantine, device=updates.device)
    if byzantine.shape != (n,) or byzantine.dtype != torch.bool:
        raise ValueError(
            f"byzantine must be a bool tensor of shape ({n},), "
            f"got {byzantine.dtype} {tuple(byzantine.shape)}"
        )
    return byzantine, as_weights(weights, n, updates)


def visible_rows(
    updates: torch.Tensor,
    byzantine: torch.Tensor,
    weights: torch.Tensor | None,
    knowledge: Knowledge,
) -> torch.Tensor:
    """The honest rows an adversary with ``knowledge`` may read (module doc); a copy."""
    byzantine, w = check_round(updates, byzantine, weights)
    return updates.index_select(0, visible_index(byzantine, w, knowledge))


def visible_index(byzantine: torch.Tensor, w: torch.Tensor, knowledge: Knowledge) -> torch.Tensor:
    """Indices of the rows :func:`visible_rows` returns (increasing)."""
    if knowledge not in KNOWLEDGE_LEVELS:
        raise ValueError(f"knowledge must be one of {KNOWLEDGE_LEVELS}, got {knowledge!r}")
    if knowledge == "omniscient":
        others = torch.nonzero(~byzantine & (w > 0)).flatten()
        if others.numel():
            return others
    return torch.nonzero(byzantine).flatten()


def claimed_examples(
    num_examples: torch.Tensor, byzantine: torch.Tensor, knowledge: Knowledge
) -> torch.Tensor:
    """``num_examples`` (``[n]``, the clients' true counts) with each Byzantine entry replaced
    by what a Byzantine client claims: ``max(1, ⌊m̄ + 1/2⌋)`` with ``m̄`` the mean count of
    the rows the adversary reads under ``knowledge`` (module doc). A new int64 tensor."""
    counts = torch.as_tensor(num_examples).to(torch.int64)
    byzantine = torch.as_tensor(byzantine, device=counts.device)
    if counts.ndim != 1 or byzantine.shape != counts.shape or byzantine.dtype != torch.bool:
        raise ValueError(
            f"claimed_examples: num_examples [n] and a bool byzantine mask [n] are needed, got "
            f"{tuple(counts.shape)} and {byzantine.dtype} {tuple(byzantine.shape)}"
        )
    if not bool(byzantine.any()):
        return counts.clone()
    seen = counts.index_select(0, visible_index(byzantine, counts.double(), knowledge))
    claim = max(1, int(seen.double().mean() + 0.5)) if seen.numel() else 1
    return torch.where(byzantine, torch.full_like(counts, claim), counts)


def poison_rows(
    attack: Attack,
    updates: torch.Tensor,
    byzantine: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    knowledge: Knowledge,
    key: Key | None,
) -> torch.Tensor:
    """``updates`` with the rows where ``byzantine`` is True replaced by
    ``attack(visible_rows(...), num_byzantine=b, num_clients=m, own=updates[byzantine],
    key=key)`` (in increasing row order; ``own`` reaches only kernels that ask for it). A new
    tensor; with no Byzantine row, ``updates`` itself is returned."""
    byzantine, w = check_round(updates, byzantine, weights)
    own = torch.nonzero(byzantine).flatten()
    b = own.numel()
    if b == 0:
        return updates
    honest = visible_rows(updates, byzantine, w, knowledge)
    num_clients = int(((w > 0) | byzantine).sum())
    extra = {"own": updates.index_select(0, own)} if getattr(attack, "reads_own", False) else {}
    rows = attack(honest, num_byzantine=b, num_clients=num_clients, key=key, **extra)
    expected = (b, updates.shape[1])
    if tuple(rows.shape) != expected:
        raise ValueError(
            f"attack {type(attack).__name__} returned shape {tuple(rows.shape)}, expected {expected}"
        )
    return updates.index_copy(0, own, rows.to(dtype=updates.dtype, device=updates.device))
