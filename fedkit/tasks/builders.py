"""The built-in tasks: ``digits``, ``fashion_mnist`` and ``synthetic`` build a
:class:`SupervisedTask` from a key. Every random choice (test split, subsampling,
partition, generation) is drawn from ``key``; the same key gives identical tensors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from fedkit.core.keys import Key, permutation, split
from fedkit.core.keys import key as root_key
from fedkit.tasks import models, partition
from fedkit.tasks.base import SupervisedTask
from fedkit.tasks.data.digits import load_digits_tensors
from fedkit.tasks.data.fashion_mnist import DEFAULT_ROOT, read_fashion_mnist
from fedkit.tasks.data.synthetic import per_user_split, synthetic_users

Partition = Literal["iid", "dirichlet", "shards"]


def _as_key(key: Key | int) -> Key:
    if isinstance(key, Key):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return root_key(key)
    raise TypeError(f"key must be a fedkit Key or an int seed, got {type(key).__name__}")


def split_clients(
    labels: torch.Tensor,
    num_clients: int,
    kind: Partition,
    key: Key,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[torch.Tensor]:
    """Indices into ``labels`` for each client under the partition ``kind``."""
    if kind == "iid":
        return partition.iid(labels.numel(), num_clients, key)
    if kind == "dirichlet":
        return partition.dirichlet(labels, num_clients, alpha, key)
    if kind == "shards":
        return partition.shards(labels, num_clients, shards_per_client, key)
    raise ValueError(f"unknown partition {kind!r}; choose 'iid', 'dirichlet' or 'shards'")


def _subset(n: int, limit: int | None, key: Key) -> torch.Tensor:
    """All of ``range(n)``, or ``limit`` of them drawn without replacement (sorted)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    if limit < 1:
        raise ValueError(f"a subset size must be >= 1 or None, got {limit}")
    return permutation(key, n)[:limit].sort().values


def _image_model(
    model: str, side: int, num_classes: int, hidden: Sequence[int]
) -> Callable[[], nn.Module]:
    if model == "mlp":
        return functools.partial(models.mlp, side * side, tuple(hidden), num_classes)
    if model == "cnn":
        cnn = models.digits_cnn if side == 8 else models.fmnist_cnn
        return functools.partial(cnn, num_classes=num_classes)
    raise ValueError(f"unknown model {model!r}; choose 'mlp' or 'cnn'")


def _partition_meta(kind: str, alpha: float, shards_per_client: int) -> dict:
    meta: dict = {"partition": kind}
    if kind == "dirichlet":
        meta["alpha"] = alpha
    if kind == "shards":
        meta["shards_per_client"] = shards_per_client
    return meta


def digits(
    num_clients: int = 10,
    *,
    partition: Partition = "iid",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    model: Literal["mlp", "cnn"] = "mlp",
    hidden: Sequence[int] = (64,),
    test_fraction: float = 0.2,
    key: Key | int,
) -> SupervisedTask:
    """scikit-learn's handwritten digits: a random ``test_fraction`` held out as the test
    set, the rest split over ``num_clients`` clients. Inputs ``float32[N, 1, 8, 8]`` in
    [0, 1] (the MLP flattens them), labels ``int64`` in 0..9.

    ``meta`` holds the indices into scikit-learn's order: ``client_indices`` (one tensor
    per client) and ``test_indices``.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    k_test, k_part = split(_as_key(key), 2)
    x, y = load_digits_tensors()
    order = permutation(k_test, y.numel())
    n_test = max(1, round(test_fraction * y.numel()))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    parts = split_clients(
        y[train_idx],
        num_clients,
        partition,
        k_part,
        alpha=alpha,
        shards_per_client=shards_per_client,
    )
    client_idx = tuple(train_idx[p] for p in parts)
    return SupervisedTask(
        name="digits",
        model_fn=_image_model(model, 8, 10, hidden),
        client_x=[x[i] for i in client_idx],
        client_y=[y[i] for i in client_idx],
        test_x=x[test_idx],
        test_y=y[test_idx],
        num_classes=10,
        meta={
            "dataset": "digits",
            "model": model,
            **_partition_meta(partition, alpha, shards_per_client),
            "client_indices": client_idx,
            "test_indices": test_idx,
        },
    )


def fashion_mnist(
    num_clients: int = 100,
    *,
    partition: Partition = "iid",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    model: Literal["cnn", "mlp"] = "cnn",
    hidden: Sequence[int] = (128,),
    root: str | Path = DEFAULT_ROOT,
    max_train: int | None = None,
    max_test: int | None = None,
    key: Key | int,
) -> SupervisedTask:
    """Fashion-MNIST read from local IDX files (by default Debian's
    ``dataset-fashion-mnist``; a missing file raises ``FileNotFoundError`` naming it).
    The 60000 training images (or a random ``max_train`` of them) are split over the
    clients; the 10000 test images (or a random ``max_test``) are the test set. Inputs
    ``float32[N, 1, 28, 28]`` in [0, 1], labels ``int64`` in 0..9.

    ``meta`` holds ``client_indices`` (into the training file) and ``test_indices`` (into
    the test file).
    """
    k_train, k_test, k_part = split(_as_key(key), 3)
    train_images, train_labels = read_fashion_mnist("train", root)
    test_images, test_labels = read_fashion_mnist("test", root)
    train_idx = _subset(train_labels.numel(), max_train, k_train)
    test_idx = _subset(test_labels.numel(), max_test, k_test)
    parts = split_clients(
        train_labels[train_idx],
        num_clients,
        partition,
        k_part,
        alpha=alpha,
        shards_per_client=shards_per_client,
    )
    client_idx = tuple(train_idx[p] for p in parts)

    def images(source: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return source[idx].unsqueeze(1).to(torch.float32).div(255.0)

    return SupervisedTask(
        name="fashion_mnist",
        model_fn=_image_model(model, 28, 10, hidden),
        client_x=[images(train_images, i) for i in client_idx],
        client_y=[train_labels[i] for i in client_idx],
        test_x=images(test_images, test_idx),
        test_y=test_labels[test_idx],
        num_classes=10,
        meta={
            "dataset": "fashion_mnist",
            "model": model,
            "root": str(root),
            **_partition_meta(partition, alpha, shards_per_client),
            "client_indices": client_idx,
            "test_indices": test_idx,
        },
    )


def synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    *,
    iid: bool = False,
    num_users: int = 30,
    train_fraction: float = 0.9,
    max_samples_per_client: int | None = None,
    data_seed: Key | int | None = None,
    key: Key | int,
) -> SupervisedTask:
    """The FedProx paper's Synthetic(α, β) (or Synthetic-IID with ``iid=True``; α and β
    are then unused) with multinomial logistic regression: one client per user holding
    the first ``train_fraction`` of that user's examples; the test set is the union of
    the users' remaining examples, ``meta["test_users"]`` naming each row's user.
    Inputs ``float32[N, 60]``, labels ``int64`` in 0..9.

    ``max_samples_per_client``: at most this many examples per user (client) before the
    split, so at most ``floor(train_fraction · cap)`` training examples per client
    (``None``: the paper's uncapped sizes). ``data_seed``: draws the data set, so runs
    with different ``key`` (the run's seed) share one data set; ``None`` draws it from
    ``key`` as before. The partition is the natural one (nothing else here is random).

    Li et al. 2020, Federated optimization in heterogeneous networks.
    """
    cap = max_samples_per_client
    if cap is not None and (
        not isinstance(cap, int) or isinstance(cap, bool) or int(cap * train_fraction) < 1
    ):
        raise ValueError(
            f"max_samples_per_client={cap!r}: needs an int with at least one training "
            f"example per client, i.e. floor(train_fraction · cap) >= 1 "
            f"(train_fraction={train_fraction}), or None for no cap"
        )
    data_key = _as_key(key if data_seed is None else data_seed)
    users = synthetic_users(
        alpha, beta, iid=iid, num_users=num_users, max_samples=cap, key=data_key
    )
    train = per_user_split(users, train_fraction)
    parts = partition.natural(users.user[train])
    x_train, y_train = users.x[train], users.y[train]
    dim, classes = users.x.shape[1], 10
    return SupervisedTask(
        name="synthetic_iid" if iid else f"synthetic_{alpha:g}_{beta:g}",
        model_fn=functools.partial(models.logistic_regression, dim, classes),
        client_x=[x_train[p] for p in parts],
        client_y=[y_train[p] for p in parts],
        test_x=users.x[~train],
        test_y=users.y[~train],
        num_classes=classes,
        meta={
            "dataset": "synthetic",
            "alpha": alpha,
            "beta": beta,
            "iid": iid,
            "partition": "natural",
            "user_sizes": users.sizes,
            "test_users": users.user[~train],
            # only when set, so the meta (and run fingerprints) of default tasks stay as they were
            **({} if cap is None else {"max_samples_per_client": cap}),
            **({} if data_seed is None else {"data_seed": data_key.to_hex()}),
        },
    )
