"""Synthetic(α, β) of FedProx: the recipe (users, sizes, dims, split) and its skew."""

import functools

import numpy as np
import pytest
import torch

import fedkit
from fedkit.tasks import synthetic
from fedkit.tasks.data.synthetic import per_user_split, synthetic_users, user_sizes

SEEDS = range(4)


@functools.cache
def users(alpha, beta, iid=False, seed=0):
    return synthetic_users(alpha, beta, iid=iid, key=fedkit.key(seed))


def mean_user_label_entropy(users):
    counts = torch.zeros(users.sizes.numel(), 10, dtype=torch.float64)
    ones = torch.ones(users.y.numel(), dtype=torch.float64)
    counts.index_put_((users.user, users.y), ones, accumulate=True)
    p = counts / counts.sum(1, keepdim=True)
    return float(-(p * p.clamp_min(1e-300).log()).sum(1).mean())


def skew(alpha, beta, iid=False):
    """Mean per-user label entropy over fixed keys (lower = more skewed)."""
    return np.mean([mean_user_label_entropy(users(alpha, beta, iid, s)) for s in SEEDS])


def test_recipe_shapes_sizes_and_split():
    task = synthetic(1.0, 1.0, key=fedkit.key(0))
    sizes = task.meta["user_sizes"]
    assert task.num_clients == 30 and sizes.shape == (30,) and bool((sizes >= 50).all())
    assert task.num_classes == 10 and task.spec.size == 60 * 10 + 10
    train = torch.tensor([task.client_size(i) for i in range(30)])
    assert torch.equal(train, torch.floor(sizes * 0.9).to(torch.int64))
    test_per_user = torch.bincount(task.meta["test_users"], minlength=30)
    assert torch.equal(train + test_per_user, sizes)
    for x, y in zip(task.client_x, task.client_y):
        assert x.dtype == torch.float32 and x.shape[1] == 60
        assert y.dtype == torch.int64 and bool(((y >= 0) & (y < 10)).all())
    assert task.test_x.shape == (int(test_per_user.sum()), 60)
    logits = task.apply(task.init(fedkit.key(1)), task.test_x)
    assert logits.shape == (task.test_x.shape[0], 10)


def test_same_key_same_tensors_other_key_other_tensors():
    a, b = synthetic(0.5, 0.5, key=fedkit.key(4)), synthetic(0.5, 0.5, key=4)
    assert all(torch.equal(x, y) for x, y in zip(a.client_x, b.client_x))
    assert torch.equal(a.test_y, b.test_y)
    c = synthetic(0.5, 0.5, key=fedkit.key(5))
    assert not torch.equal(a.meta["user_sizes"], c.meta["user_sizes"])


def test_sizes_follow_int_lognormal_4_2_plus_50():
    draws = user_sizes(fedkit.key(100), 4000).sub(50)
    assert int(draws.min()) >= 0
    # int() floors, so log(n - 50 + 0.5) is a fair stand-in for the log-normal draw
    log_n = (draws.double() + 0.5).log()
    assert log_n.median().item() == pytest.approx(4.0, abs=0.1)
    iqr = (log_n.quantile(0.75) - log_n.quantile(0.25)).item()
    assert iqr == pytest.approx(2 * 1.349, rel=0.06)
    generated = users(1.0, 1.0)
    assert generated.sizes.shape == (30,)
    assert torch.equal(torch.bincount(generated.user, minlength=30), generated.sizes)


def test_input_covariance_is_diag_j_pow_minus_1_2_around_the_user_mean():
    x = users(0.0, 0.0, iid=True).x.double()
    var = x.var(0)
    expected = torch.arange(1, 61, dtype=torch.float64).pow(-1.2)
    torch.testing.assert_close(var, expected, rtol=0.1, atol=0)
    assert x.mean(0).abs().max().item() < 0.1  # IID: v = 0


@pytest.mark.slow
def test_iid_variant_shares_one_model_and_has_little_skew():
    iid, non_iid = skew(0.0, 0.0, iid=True), skew(0.0, 0.0)
    assert iid > non_iid + 1.0, (iid, non_iid)
    task = synthetic(iid=True, key=fedkit.key(3))
    assert task.name == "synthetic_iid"


@pytest.mark.slow
def test_label_skew_grows_with_beta():
    stats = [skew(0.0, b) for b in (0.0, 0.5, 1.0, 2.0)]
    assert stats == sorted(stats, reverse=True), stats


def test_alpha_shifts_every_logit_equally_so_labels_do_not_move():
    """u_k is added to every entry of W_k and b_k, so x W_k + b_k moves by the same amount
    in every class and the argmax (the label) is unchanged: in the exact recipe α changes
    the local models' parameters, not the labels."""
    for seed in SEEDS[:2]:
        base = users(0.0, 1.0, seed=seed)
        for alpha in (0.5, 2.0):
            other = users(alpha, 1.0, seed=seed)
            assert torch.equal(other.x, base.x)
            assert (other.y == base.y).double().mean().item() > 0.999


def test_per_user_split_is_floor_of_ninety_percent():
    generated = synthetic_users(1, 1, key=fedkit.key(0), num_users=5)
    train = per_user_split(generated)
    counts = torch.bincount(generated.user[train], minlength=5)
    assert counts.tolist() == [int(0.9 * int(n)) for n in generated.sizes]


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        synthetic(-1.0, 1.0, key=fedkit.key(0))
    with pytest.raises(ValueError, match="train_fraction"):
        synthetic(1.0, 1.0, train_fraction=1.0, key=fedkit.key(0))
    with pytest.raises(TypeError, match="key"):
        synthetic(1.0, 1.0, key="0")
