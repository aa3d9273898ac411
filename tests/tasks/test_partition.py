"""Partitioners: exact cover, determinism under keys, the skew each one promises."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import fedkit
from fedkit.tasks import partition


@st.composite
def label_vectors(draw, max_n=300, max_classes=12):
    n = draw(st.integers(1, max_n))
    classes = draw(st.integers(1, max_classes))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.as_tensor(np.random.default_rng(seed).integers(0, classes, n), dtype=torch.int64)


def assert_exact_cover(parts, n, num_clients):
    assert len(parts) == num_clients
    assert all(p.dtype == torch.int64 and p.ndim == 1 for p in parts)
    assert all(bool((p[1:] > p[:-1]).all()) for p in parts), "indices sorted and unique"
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(n))


def entropy(labels, num_classes):
    p = torch.bincount(labels, minlength=num_classes).double()
    p = p / p.sum()
    return float(-(p * p.clamp_min(1e-300).log()).sum())


def mean_client_entropy(parts, labels, num_classes=10):
    return sum(entropy(labels[p], num_classes) for p in parts) / len(parts)


@given(st.integers(1, 400), st.integers(1, 40), keys)
def test_iid_covers_once_balanced_and_deterministic(n, num_clients, k):
    num_clients = min(num_clients, n)
    parts = partition.iid(n, num_clients, k)
    assert_exact_cover(parts, n, num_clients)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(torch.equal(a, b) for a, b in zip(parts, partition.iid(n, num_clients, k)))


@given(label_vectors(), st.integers(1, 10), st.floats(0.05, 100.0), keys)
def test_dirichlet_covers_once_nonempty_and_deterministic(labels, num_clients, alpha, k):
    num_clients = min(num_clients, labels.numel())
    try:
        parts = partition.dirichlet(labels, num_clients, alpha, k)
    except ValueError as err:  # tiny alpha, many clients: rejection gave up, by contract
        assert "raise alpha" in str(err)
        return
    assert_exact_cover(parts, labels.numel(), num_clients)
    assert min(len(p) for p in parts) >= 1
    again = partition.dirichlet(labels, num_clients, alpha, k)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))


def test_dirichlet_min_size_is_respected():
    labels = torch.arange(1000) % 10
    parts = partition.dirichlet(labels, 8, 0.5, fedkit.key(3), min_size=40)
    assert min(len(p) for p in parts) >= 40


def test_dirichlet_skew_grows_as_alpha_falls():
    labels = torch.arange(2000) % 10
    ks = [fedkit.key(s) for s in range(5)]
    stat = [
        np.mean([mean_client_entropy(partition.dirichlet(labels, 10, a, k), labels) for k in ks])
        for a in (0.05, 0.3, 2.0, 100.0)
    ]
    assert stat == sorted(stat), stat
    assert stat[0] < 1.0 < np.log(10) - 0.05 < stat[-1]


def test_dirichlet_keeps_label_proportions_with_huge_alpha():
    labels = torch.arange(5000) % 5
    for p in partition.dirichlet(labels, 5, 1e4, fedkit.key(1)):
        counts = torch.bincount(labels[p], minlength=5)
        assert int(counts.max() - counts.min()) <= 30


def test_dirichlet_rejects_impossible_requests():
    labels = torch.arange(20) % 2
    with pytest.raises(ValueError, match="alpha"):
        partition.dirichlet(labels, 4, 0.0, fedkit.key(0))
    with pytest.raises(ValueError, match="min_size"):
        partition.dirichlet(labels, 4, 1.0, fedkit.key(0), min_size=6)
    with pytest.raises(ValueError, match="raise alpha"):
        partition.dirichlet(
            torch.zeros(20, dtype=torch.int64), 10, 1e-3, fedkit.key(0), min_size=2, max_tries=3
        )
    with pytest.raises(TypeError, match="integers"):
        partition.dirichlet(torch.zeros(20), 2, 1.0, fedkit.key(0))


@given(label_vectors(), st.integers(1, 10), st.integers(1, 4), keys)
def test_shards_cover_once_and_limit_labels(labels, num_clients, spc, k):
    n = labels.numel()
    num_clients = max(1, min(num_clients, n // spc))
    if num_clients * spc > n:
        return
    parts = partition.shards(labels, num_clients, spc, k)
    assert_exact_cover(parts, n, num_clients)
    again = partition.shards(labels, num_clients, spc, k)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    shard_size = -(-n // (num_clients * spc))  # the largest shard
    if shard_size <= int(torch.bincount(labels)[torch.unique(labels)].min()):
        # a shard no longer than the smallest class spans at most two labels
        assert all(torch.unique(labels[p]).numel() <= 2 * spc for p in parts)


def test_shards_pathological_split_gives_each_client_its_shard_labels():
    # 10 classes × 60 examples, 20 clients × 3 shards of 10: every shard is one label.
    labels = torch.arange(600) // 60
    parts = partition.shards(labels, 20, 3, fedkit.key(7))
    assert [len(p) for p in parts] == [30] * 20
    for p in parts:
        counts = torch.bincount(labels[p], minlength=10)
        assert int((counts > 0).sum()) <= 3
        assert bool((counts % 10 == 0).all()), "clients hold whole single-label shards"


def test_shards_and_iid_reject_too_many_clients():
    with pytest.raises(ValueError, match="shards"):
        partition.shards(torch.arange(10), 4, 3, fedkit.key(0))
    with pytest.raises(ValueError, match="clients"):
        partition.iid(3, 4, fedkit.key(0))


def test_natural_groups_by_user_in_id_order():
    groups = torch.tensor([7, 2, 7, 9, 2, 2])
    parts = partition.natural(groups)
    assert [p.tolist() for p in parts] == [[1, 4, 5], [0, 2], [3]]


@given(label_vectors(max_classes=30))
def test_natural_covers_once(groups):
    parts = partition.natural(groups)
    assert_exact_cover(parts, groups.numel(), torch.unique(groups).numel())
    assert all(torch.unique(groups[p]).numel() == 1 for p in parts)


def test_different_keys_give_different_partitions():
    labels = torch.arange(500) % 10
    a = partition.dirichlet(labels, 5, 0.5, fedkit.key(0))
    b = partition.dirichlet(labels, 5, 0.5, fedkit.key(1))
    assert any(not torch.equal(x, y) for x, y in zip(a, b))
