"""The global training loss (fedkit.tasks.global_loss) is the example-weighted mean of the
clients' mean losses, i.e. the mean loss over the union of their training sets."""

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import fedkit
from fedkit.core.keys import normal, randint, split
from fedkit.tasks import SupervisedTask, models
from fedkit.tasks.global_loss import client_train_losses, global_train_loss

DIM, CLASSES = 5, 3


def make_task(sizes, seed):
    """A logistic-regression task whose client k holds ``sizes[k]`` random examples."""
    keys = split(fedkit.key(seed), 2 * len(sizes) + 1)
    xs = [normal(keys[2 * k], (n, DIM)) * 3 for k, n in enumerate(sizes)]
    ys = [randint(keys[2 * k + 1], 0, CLASSES, n) for k, n in enumerate(sizes)]
    return SupervisedTask(
        name="toy",
        model_fn=functools.partial(models.logistic_regression, DIM, CLASSES),
        client_x=xs,
        client_y=ys,
        test_x=torch.zeros(0, DIM),
        test_y=torch.zeros(0, dtype=torch.int64),
        num_classes=CLASSES,
    )


def params_of(task, seed):
    return normal(fedkit.key(10_000 + seed), task.spec.size) * 2


def reference_client_loss(task, params, k):
    """Client k's mean cross-entropy in float64, written out independently."""
    w, b = params[: DIM * CLASSES].reshape(CLASSES, DIM), params[DIM * CLASSES :]
    logits = task.client_x[k].double() @ w.double().T + b.double()
    return nn.functional.cross_entropy(logits, task.client_y[k])


sizes_st = st.lists(st.integers(0, 40), min_size=1, max_size=8).filter(lambda s: sum(s) > 0)


@given(sizes=sizes_st, seed=st.integers(0, 10_000))
def test_global_loss_is_the_example_weighted_mean_of_client_losses(sizes, seed):
    task = make_task(sizes, seed)
    params = params_of(task, seed)
    per_client = [float(reference_client_loss(task, params, k)) for k, n in enumerate(sizes) if n]
    held = [n for n in sizes if n]
    weighted = sum(n * f for n, f in zip(held, per_client)) / sum(held)
    assert global_train_loss(task, params) == pytest.approx(weighted, rel=1e-5, abs=1e-6)
    # ... which is the mean loss over the union of every client's training set
    union = nn.functional.cross_entropy(
        task.apply(params, torch.cat(task.client_x)), torch.cat(task.client_y)
    )
    assert global_train_loss(task, params) == pytest.approx(float(union), rel=1e-5, abs=1e-6)
    losses, counts = client_train_losses(task, params)
    assert counts.tolist() == list(sizes)
    assert torch.isnan(losses[counts == 0]).all()
    torch.testing.assert_close(
        losses[counts > 0], torch.tensor(per_client, dtype=torch.float64), rtol=1e-5, atol=1e-6
    )


@given(sizes=sizes_st, seed=st.integers(0, 10_000), batch=st.integers(1, 7))
def test_chunking_and_client_order_do_not_matter(sizes, seed, batch):
    task = make_task(sizes, seed)
    params = params_of(task, seed)
    flipped = SupervisedTask(
        name="toy",
        model_fn=task.model_fn,
        client_x=task.client_x[::-1],
        client_y=task.client_y[::-1],
        test_x=task.test_x,
        test_y=task.test_y,
        num_classes=CLASSES,
    )
    whole = global_train_loss(task, params)
    assert global_train_loss(task, params, batch=batch) == pytest.approx(whole, rel=1e-6)
    assert global_train_loss(flipped, params) == pytest.approx(whole, rel=1e-6)


def test_a_big_client_weighs_more_than_a_small_one():
    """Example weighting, not a plain mean over clients: 90 examples against 10."""
    task = make_task([90, 10], seed=3)
    params = params_of(task, 3)
    f = [float(reference_client_loss(task, params, k)) for k in range(2)]
    assert f[0] != pytest.approx(f[1], rel=1e-3)  # else the test could not tell them apart
    got = global_train_loss(task, params)
    assert got == pytest.approx(0.9 * f[0] + 0.1 * f[1], rel=1e-5)
    assert got != pytest.approx((f[0] + f[1]) / 2, rel=1e-3)


def test_no_training_examples_and_a_bad_batch_are_refused():
    empty = make_task([0, 0], seed=0)
    with pytest.raises(ValueError, match="hold no training examples"):
        global_train_loss(empty, params_of(empty, 0))
    task = make_task([4], seed=0)
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        global_train_loss(task, params_of(task, 0), batch=0)


def test_on_synthetic_it_matches_the_union_of_the_training_sets():
    task = fedkit.tasks.synthetic(0.5, 0.5, num_users=6, key=0)
    params = task.init(fedkit.key(1))
    union = nn.functional.cross_entropy(
        task.apply(params, torch.cat(task.client_x)).double(), torch.cat(task.client_y)
    )
    assert global_train_loss(task, params) == pytest.approx(float(union), rel=1e-6)
