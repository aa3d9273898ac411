"""Partitioners: pure functions from labels (or sizes, or user ids) and a key to one index
tensor per client. Every example lands in exactly one client; each client's indices are
returned in increasing order; the same key gives the same partition."""

from __future__ import annotations

import torch

from fedkit.core.keys import Key, fold_in, permutation, split
from fedkit.tasks.sampling import dirichlet as sample_dirichlet

__all__ = ["dirichlet", "group", "iid", "natural", "shards"]


def group(assignment: torch.Tensor, num_groups: int) -> list[torch.Tensor]:
    """Indices of ``assignment == g`` for each ``g`` in ``range(num_groups)`` (increasing)."""
    assignment = torch.as_tensor(assignment)
    if assignment.ndim != 1:
        raise ValueError(f"assignment must be 1-D, got shape {tuple(assignment.shape)}")
    if assignment.numel() and (assignment.min() < 0 or assignment.max() >= num_groups):
        raise ValueError(f"assignment values must lie in [0, {num_groups})")
    order = torch.argsort(assignment, stable=True)
    counts = torch.bincount(assignment, minlength=num_groups)
    return list(torch.split(order, counts.tolist()))


def _balanced(n: int, parts: int) -> torch.Tensor:
    """``parts`` sizes summing to ``n`` that differ by at most one (larger ones first)."""
    sizes = torch.full((parts,), n // parts, dtype=torch.int64)
    sizes[: n % parts] += 1
    return sizes


def _labels(labels: torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    return labels


def _check_clients(n: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if n < num_clients:
        raise ValueError(f"cannot give {num_clients} clients one example each out of {n}")


def iid(n_examples: int, num_clients: int, key: Key) -> list[torch.Tensor]:
    """A uniformly random split of ``range(n_examples)`` into ``num_clients`` parts whose
    sizes differ by at most one."""
    _check_clients(n_examples, num_clients)
    slots = torch.repeat_interleave(torch.arange(num_clients), _balanced(n_examples, num_clients))
    assignment = torch.empty(n_examples, dtype=torch.int64)
    assignment[permutation(key, n_examples)] = slots
    return group(assignment, num_clients)


def dirichlet(
    labels: torch.Tensor,
    num_clients: int,
    alpha: float,
    key: Key,
    *,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[torch.Tensor]:
    """Label-skewed split: for every class, the share each client gets is drawn from a
    symmetric Dirichlet(α); the class's examples (in random order) are cut at the floors
    of the cumulative shares. Small α gives each client few classes; large α tends to IID.

    A draw in which some client gets fewer than ``min_size`` examples is rejected and the
    proportions are drawn again (from ``fold_in(key, try)``), as in the usual recipe; after
    ``max_tries`` rejections a ``ValueError`` asks for a larger α or a smaller ``min_size``.
    Rejection keeps the kept draws exactly Dirichlet conditioned on the minimum size.

    Hsu et al. 2019, Measuring the effects of non-identical data distribution for
    federated visual classification.
    """
    labels = _labels(labels)
    n = labels.numel()
    _check_clients(n, num_clients)
    if not alpha > 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    if min_size * num_clients > n:
        raise ValueError(f"min_size={min_size} for {num_clients} clients needs > {n} examples")
    classes, cls = torch.unique(labels, return_inverse=True)
    class_counts = torch.bincount(cls, minlength=classes.numel())
    k_order, k_draws = split(key, 2)
    concentration = torch.full((classes.numel(), num_clients), float(alpha), dtype=torch.float64)
    for attempt in range(max_tries):
        shares = sample_dirichlet(fold_in(k_draws, attempt), concentration)
        cum = torch.floor(torch.cumsum(shares, dim=1) * class_counts[:, None]).to(torch.int64)
        cum = cum.clamp_max(class_counts[:, None])
        cum[:, -1] = class_counts  # the last client closes the class exactly
        per_client = torch.diff(cum, dim=1, prepend=torch.zeros_like(cum[:, :1])).sum(0)
        if int(per_client.min()) >= min_size:
            break
    else:
        raise ValueError(
            f"no Dirichlet({alpha}) draw in {max_tries} tries gave every one of {num_clients} "
            f"clients >= {min_size} examples; raise alpha or lower min_size"
        )
    # Examples grouped by class (random order within a class). Class c occupies positions
    # [start_c, start_c + n_c) and client j its slice [start_c + cum[c, j-1], start_c +
    # cum[c, j]); the boundaries of all classes form one sorted vector, so one searchsorted
    # finds every position's (class, client) cell.
    perm = permutation(k_order, n)
    by_class = perm[torch.argsort(cls[perm], stable=True)]
    starts = torch.cumsum(class_counts, 0) - class_counts
    boundaries = (starts[:, None] + cum).reshape(-1)
    cell = torch.searchsorted(boundaries, torch.arange(n), right=True)
    client = cell - cls[by_class] * num_clients
    assignment = torch.empty(n, dtype=torch.int64)
    assignment[by_class] = client
    return group(assignment, num_clients)


def shards(
    labels: torch.Tensor, num_clients: int, shards_per_client: int, key: Key
) -> list[torch.Tensor]:
    """Pathological non-IID split: examples sorted by label (random order among equal
    labels) are cut into ``num_clients · shards_per_client`` contiguous shards of equal
    size (±1), and each client is dealt ``shards_per_client`` random shards. A shard no
    longer than the smallest class spans at most two labels.

    McMahan et al. 2017, Communication-efficient learning of deep networks from
    decentralized data.
    """
    labels = _labels(labels)
    n = labels.numel()
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    _check_clients(n, num_clients)
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise ValueError(f"{num_shards} shards need at least {num_shards} examples, got {n}")
    k_order, k_deal = split(key, 2)
    perm = permutation(k_order, n)
    by_label = perm[torch.argsort(labels[perm], stable=True)]
    shard_of_position = torch.repeat_interleave(torch.arange(num_shards), _balanced(n, num_shards))
    client_of_shard = torch.empty(num_shards, dtype=torch.int64)
    client_of_shard[permutation(k_deal, num_shards)] = torch.arange(num_shards) // shards_per_client
    assignment = torch.empty(n, dtype=torch.int64)
    assignment[by_label] = client_of_shard[shard_of_position]
    return group(assignment, num_clients)


def natural(groups: torch.Tensor) -> list[torch.Tensor]:
    """One client per distinct value of ``groups`` (a user, writer or robot id per
    example), in increasing order of the id."""
    groups = _labels(groups)
    if groups.numel() == 0:
        raise ValueError("natural partition of zero examples")
    ids, inverse = torch.unique(groups, return_inverse=True)
    return group(inverse, ids.numel())
