"""The Synthetic(α, β) federated data set of the FedProx paper, generated from a key.

For user k (of ``num_users``), with d = 60 features and 10 classes:
``n_k = int(LogNormal(4, 2)) + 50`` examples; ``u_k ~ N(0, α)``, ``B_k ~ N(0, β)``;
``W_k ∈ R^{d×10}`` and ``b_k ∈ R^{10}`` with entries ``~ N(u_k, 1)``; ``v_k ∈ R^d`` with
entries ``~ N(B_k, 1)``; ``x ~ N(v_k, Σ)`` with ``Σ = diag(j^-1.2)``, j = 1..d; and
``y = argmax softmax(x W_k + b_k)``. α controls how much the local models differ, β how
much the local inputs differ. As in the authors' generator, α and β are the *standard
deviations* of ``u_k`` and ``B_k`` (the paper writes N(0, α)). Because ``u_k`` shifts
every entry of ``W_k`` and ``b_k`` alike, it adds ``u_k (1 + Σ_j x_j)`` to every class's
logit and never changes a label: the labels' skew across users comes from β and from the
per-user draws of ``W_k``, ``b_k`` and ``v_k``, not from α.

The IID variant (the paper's "Synthetic-IID") uses one ``W, b ~ N(0, 1)`` for every user
and ``v_k = 0``; user sizes are drawn as above.

``max_samples`` caps every ``n_k`` (an option of this library, not of the paper: the
log-normal sizes have a heavy tail and the largest user dominates a round's run time). The
capped data set is the uncapped one with each user's rows beyond the cap removed, so a cap
changes how much data a user holds and nothing else.

Li et al. 2020, Federated optimization in heterogeneous networks (FedProx).
"""

from __future__ import annotations

import attrs
import torch

from fedkit.core.keys import Key, normal, split
from fedkit.tasks.sampling import lognormal

DIM = 60
NUM_CLASSES = 10


@attrs.frozen(eq=False)
class SyntheticUsers:
    """All users' examples back to back: user k's rows are
    ``offsets[k] : offsets[k] + sizes[k]`` and ``user`` names each row's user."""

    x: torch.Tensor  # float32[N, d]
    y: torch.Tensor  # int64[N]
    user: torch.Tensor  # int64[N]
    sizes: torch.Tensor  # int64[num_users]

    @property
    def offsets(self) -> torch.Tensor:
        return torch.cumsum(self.sizes, 0) - self.sizes


def _local_logits(
    x: torch.Tensor, sizes: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """``x_i W_k + b_k`` for every row i of user k (users' rows are contiguous blocks).

    One matmul per user's block: torch has no segmented matmul, and gathering ``W`` per
    row (``einsum("nd,ndc->nc", x, w[user])``) moves ``N·d·classes`` numbers and measured
    15x slower."""
    blocks = torch.split(x, sizes.tolist())
    return torch.cat([blk @ w[k] + b[k] for k, blk in enumerate(blocks)])


def user_sizes(k: Key, num_users: int) -> torch.Tensor:
    """Examples per user: ``int(LogNormal(4, 2)) + 50`` (int64, so always >= 50)."""
    return lognormal(k, num_users, mean=4.0, sigma=2.0).floor().to(torch.int64) + 50


def synthetic_users(
    alpha: float,
    beta: float,
    *,
    iid: bool = False,
    num_users: int = 30,
    dim: int = DIM,
    num_classes: int = NUM_CLASSES,
    max_samples: int | None = None,
    key: Key,
) -> SyntheticUsers:
    """Every user's examples of Synthetic(α, β) (or Synthetic-IID with ``iid=True``),
    drawn in float64 from ``key`` and returned as float32 inputs and int64 labels.

    ``max_samples``: keep at most this many examples of each user (its first ones; rows are
    i.i.d. within a user), ``None`` for the paper's uncapped sizes. Every draw is the same
    with or without the cap, so the capped users are a prefix of the uncapped ones.

    Li et al. 2020, Federated optimization in heterogeneous networks."""
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    if num_users < 1 or dim < 1 or num_classes < 2:
        raise ValueError(
            f"need num_users >= 1, dim >= 1, num_classes >= 2; got {num_users}, {dim}, "
            f"{num_classes}"
        )
    if max_samples is not None and (
        not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be None or an int >= 1, got {max_samples!r}")
    k_n, k_u, k_b_mean, k_v, k_w, k_b, k_x = split(key, 7)
    f64 = torch.float64
    sizes = user_sizes(k_n, num_users)
    if iid:
        w = normal(k_w, (dim, num_classes), dtype=f64).expand(num_users, dim, num_classes)
        b = normal(k_b, num_classes, dtype=f64).expand(num_users, num_classes)
        v = torch.zeros(num_users, dim, dtype=f64)
    else:
        u = normal(k_u, num_users, std=alpha, dtype=f64)
        b_mean = normal(k_b_mean, num_users, std=beta, dtype=f64)
        w = u[:, None, None] + normal(k_w, (num_users, dim, num_classes), dtype=f64)
        b = u[:, None] + normal(k_b, (num_users, num_classes), dtype=f64)
        v = b_mean[:, None] + normal(k_v, (num_users, dim), dtype=f64)
    user = torch.repeat_interleave(torch.arange(num_users), sizes)
    std = torch.arange(1, dim + 1, dtype=f64).pow(-0.6)  # sqrt of Σ_jj = j^-1.2
    x = v[user] + normal(k_x, (user.numel(), dim), dtype=f64) * std
    if max_samples is not None:  # drop each user's rows past the cap, after every draw
        rank = torch.arange(user.numel()) - (torch.cumsum(sizes, 0) - sizes)[user]
        keep = rank < max_samples
        x, user, sizes = x[keep], user[keep], sizes.clamp(max=max_samples)
    y = _local_logits(x, sizes, w, b).argmax(dim=1)
    return SyntheticUsers(x=x.to(torch.float32), y=y, user=user, sizes=sizes)


def per_user_split(users: SyntheticUsers, train_fraction: float = 0.9) -> torch.Tensor:
    """Boolean mask of the training rows: the first ``int(train_fraction · n_k)`` rows of
    each user (rows are i.i.d. within a user, so no shuffle is needed); the rest is that
    user's test split."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    n_train = (users.sizes.to(torch.float64) * train_fraction).floor().to(torch.int64)
    rank = torch.arange(users.user.numel()) - users.offsets[users.user]
    return rank < n_train[users.user]
