"""Models: output shapes, no BatchNorm, keyed init, vmap over stacked parameters."""

import functools

import pytest
import torch

import fedkit
from fedkit.tasks import SupervisedTask, models


def task_for(model_fn, x):
    y = torch.zeros(x.shape[0], dtype=torch.int64)
    return SupervisedTask("t", model_fn, [x], [y], x, y, num_classes=10)


CASES = [
    (functools.partial(models.mlp, 64, (32, 16), 10), (5, 1, 8, 8)),
    (models.digits_cnn, (5, 1, 8, 8)),
    (models.fmnist_cnn, (3, 1, 28, 28)),
    (functools.partial(models.logistic_regression, 60, 10), (7, 60)),
]


@pytest.mark.parametrize(("model_fn", "shape"), CASES)
def test_logits_shape_no_batchnorm_and_vmap(model_fn, shape):
    x = torch.linspace(0, 1, torch.Size(shape).numel()).reshape(shape)
    task = task_for(model_fn, x)
    batchnorm = torch.nn.modules.batchnorm._BatchNorm
    assert not any(isinstance(m, batchnorm) for m in task.module.modules())
    flats = torch.stack([task.init(k) for k in fedkit.split(fedkit.key(0), 3)])
    out = torch.func.vmap(task.apply, in_dims=(0, None))(flats, x)
    assert out.shape == (3, shape[0], 10)
    torch.testing.assert_close(out[1], task.apply(flats[1], x))


def test_logistic_regression_is_affine():
    task = task_for(functools.partial(models.logistic_regression, 3, 10), torch.zeros(1, 3))
    flat = task.init(fedkit.key(1))
    w = flat[:30].reshape(10, 3)
    b = flat[30:]
    x = torch.tensor([[1.0, -2.0, 0.5]])
    torch.testing.assert_close(task.apply(flat, x), x @ w.T + b)
    assert task.spec.names == ("linear.weight", "linear.bias")


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="in_features"):
        models.mlp(0)
    with pytest.raises(ValueError, match="hidden"):
        models.mlp(4, hidden=(8, -1))
