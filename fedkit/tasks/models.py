"""Small classification models for the built-in tasks.

All take image-shaped or flat inputs (a leading ``Flatten`` where needed), use no
BatchNorm (the vectorised engine vmaps over clients) and name their layers, so flat
parameter names read like ``conv1.weight``. Store them in a task as zero-argument
factories, e.g. ``functools.partial(mlp, 64, hidden=(32,), num_classes=10)``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def mlp(in_features: int, hidden: Sequence[int] = (64,), num_classes: int = 10) -> nn.Module:
    """Flatten, then Linear-ReLU layers of widths ``hidden``, then a Linear to the logits."""
    _positive(in_features=in_features, num_classes=num_classes)
    _positive(**{f"hidden[{i}]": h for i, h in enumerate(hidden)})
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = in_features
    for i, h in enumerate(hidden):
        layers += [(f"fc{i + 1}", nn.Linear(width, h)), (f"relu{i + 1}", nn.ReLU())]
        width = h
    layers.append(("out", nn.Linear(width, num_classes)))
    return nn.Sequential(OrderedDict(layers))


def logistic_regression(in_features: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one Linear layer to the logits (softmax is in the
    loss)."""
    _positive(in_features=in_features, num_classes=num_classes)
    return nn.Sequential(
        OrderedDict([("flatten", nn.Flatten()), ("linear", nn.Linear(in_features, num_classes))])
    )


def _conv_block(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]


def _cnn(channels: tuple[int, int], kernel: int, side: int, num_classes: int) -> nn.Module:
    c1, c2 = channels
    _positive(c1=c1, c2=c2, num_classes=num_classes)
    conv1, relu1, pool1 = _conv_block(1, c1, kernel)
    conv2, relu2, pool2 = _conv_block(c1, c2, kernel)
    flat = c2 * (side // 4) ** 2
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", conv1),
                ("relu1", relu1),
                ("pool1", pool1),
                ("conv2", conv2),
                ("relu2", relu2),
                ("pool2", pool2),
                ("flatten", nn.Flatten()),
                ("out", nn.Linear(flat, num_classes)),
            ]
        )
    )


def digits_cnn(channels: tuple[int, int] = (16, 32), num_classes: int = 10) -> nn.Module:
    """CNN for 1x8x8 digits: two 3x3 conv + ReLU + 2x2 max-pool blocks, then a Linear."""
    return _cnn(channels, 3, 8, num_classes)


def fmnist_cnn(channels: tuple[int, int] = (16, 32), num_classes: int = 10) -> nn.Module:
    """CNN for 1x28x28 images: two 5x5 conv + ReLU + 2x2 max-pool blocks, then a Linear
    (about 29k parameters with the default channels)."""
    return _cnn(channels, 5, 28, num_classes)
