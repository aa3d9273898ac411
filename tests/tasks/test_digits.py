"""The digits task: shapes, dtypes, labels, a disjoint test split, partitions, models."""

import pytest
import torch

import fedkit
from fedkit.tasks import SupervisedTask, digits


@pytest.fixture(scope="module")
def task() -> SupervisedTask:
    return digits(10, key=fedkit.key(0))


def test_shapes_dtypes_and_labels(task):
    assert task.num_clients == 10 and task.num_classes == 10
    for x, y in zip(task.client_x, task.client_y):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64 and x.shape[0] == y.shape[0] > 0
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    labels = torch.cat([*task.client_y, task.test_y])
    assert torch.equal(torch.unique(labels), torch.arange(10))
    assert labels.numel() == 1797
    assert task.test_x.shape == (round(0.2 * 1797), 1, 8, 8)


def test_test_split_is_disjoint_and_everything_is_used_once(task):
    train = torch.cat(task.meta["client_indices"])
    test = task.meta["test_indices"]
    assert not bool(torch.isin(test, train).any())
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(1797))


def test_meta_indices_point_at_the_stored_examples(task):
    from fedkit.tasks.data.digits import load_digits_tensors

    x, y = load_digits_tensors()
    assert torch.equal(x[task.meta["test_indices"]], task.test_x)
    assert torch.equal(y[task.meta["client_indices"][3]], task.client_y[3])


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_forward_gives_logits_for_every_example(task, model):
    t = digits(4, model=model, key=fedkit.key(1))
    flat = t.init(fedkit.key(2))
    assert flat.ndim == 1 and flat.numel() == t.spec.size
    logits = t.apply(flat, t.test_x)
    assert logits.shape == (t.test_x.shape[0], 10) and bool(torch.isfinite(logits).all())
    assert torch.equal(flat, t.init(fedkit.key(2)))
    assert t.loss(logits, t.test_y).ndim == 0


def test_same_key_same_tensors(task):
    again = digits(10, key=0)
    assert all(torch.equal(a, b) for a, b in zip(task.client_x, again.client_x))
    assert torch.equal(task.test_y, again.test_y)
    other = digits(10, key=fedkit.key(1))
    assert not torch.equal(task.meta["test_indices"], other.meta["test_indices"])


def test_non_iid_partitions_are_skewed():
    def distinct_labels(t):
        return sum(torch.unique(y).numel() for y in t.client_y) / t.num_clients

    iid = digits(10, key=fedkit.key(3))
    skewed = digits(10, partition="dirichlet", alpha=0.05, key=fedkit.key(3))
    shards = digits(10, partition="shards", shards_per_client=2, key=fedkit.key(3))
    assert distinct_labels(iid) == 10
    assert distinct_labels(skewed) < 6
    assert distinct_labels(shards) <= 4
    assert shards.meta["partition"] == "shards" and skewed.meta["alpha"] == 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="partition"):
        digits(4, partition="weird", key=fedkit.key(0))
    with pytest.raises(ValueError, match="model"):
        digits(4, model="resnet", key=fedkit.key(0))
    with pytest.raises(ValueError, match="test_fraction"):
        digits(4, test_fraction=1.5, key=fedkit.key(0))


@pytest.mark.slow
def test_reader_matches_scikit_learns_load_digits():
    from sklearn.datasets import load_digits

    from fedkit.tasks.data.digits import load_digits_tensors

    x, y = load_digits_tensors()
    bunch = load_digits()
    assert torch.equal(x, torch.as_tensor(bunch.images, dtype=torch.float32).div(16).unsqueeze(1))
    assert torch.equal(y, torch.as_tensor(bunch.target))
