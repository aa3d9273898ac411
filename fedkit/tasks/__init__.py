"""Tasks: a model as a pure function of flat parameters plus each client's data.

Built in: :func:`digits` (scikit-learn's handwritten digits), :func:`fashion_mnist` (local
IDX files, Debian's ``dataset-fashion-mnist``) and :func:`synthetic` (FedProx's
Synthetic(α, β)); partitioners in :mod:`fedkit.tasks.partition`, models in
:mod:`fedkit.tasks.models`.
"""

from fedkit.tasks import models, partition
from fedkit.tasks.base import SupervisedTask, keyed_init
from fedkit.tasks.builders import digits, fashion_mnist, split_clients, synthetic

__all__ = [
    "SupervisedTask",
    "digits",
    "fashion_mnist",
    "keyed_init",
    "models",
    "partition",
    "split_clients",
    "synthetic",
]
