"""Label flipping: train the controlled clients on wrong labels."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from attacks.data._common import check_class, check_labels
from fedkit.core.keys import Key


def label_flip(
    y: torch.Tensor,
    *,
    num_classes: int,
    permutation: Sequence[int] | None = None,
    target: int | None = None,
    source: int | None = None,
) -> torch.Tensor:
    """New labels (``y`` is not modified):

    * ``permutation``: every label ``c`` becomes ``permutation[c]`` (a permutation of
      ``range(num_classes)``);
    * ``target``: every label becomes ``target`` or, with ``source``, only labels equal to
      ``source`` do (the targeted source → target flip);
    * neither: the fixed permutation ``c → num_classes − 1 − c``.

    Tolpegin et al. 2020, Data Poisoning Attacks Against Federated Learning Systems (ESORICS);
    Fang et al. 2020, Local Model Poisoning Attacks to Byzantine-Robust Federated Learning
    (USENIX Security).
    """
    y = check_labels(y, "label_flip")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"label_flip: num_classes must be a positive int, got {num_classes!r}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"label_flip: labels must lie in [0, {num_classes}), "
            f"got min {int(y.min())}, max {int(y.max())}"
        )
    if permutation is not None and target is not None:
        raise ValueError("label_flip: give a permutation or a target, not both")
    if source is not None and target is None:
        raise ValueError("label_flip: source needs a target")
    if target is not None:
        target = check_class(target, num_classes, "label_flip: target")
        if source is None:
            return torch.full_like(y, target)
        source = check_class(source, num_classes, "label_flip: source")
        return torch.where(y == source, torch.full_like(y, target), y)
    if permutation is None:
        table = torch.arange(num_classes - 1, -1, -1, dtype=y.dtype, device=y.device)
    else:
        table = torch.as_tensor(list(permutation), dtype=y.dtype, device=y.device)
        if table.shape != (num_classes,) or not torch.equal(
            torch.sort(table).values, torch.arange(num_classes, dtype=y.dtype, device=y.device)
        ):
            raise ValueError(
                f"label_flip: permutation must be a permutation of range({num_classes}), "
                f"got {list(permutation)}"
            )
    return table[y]


def _optional_ints(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


@attrs.frozen
class LabelFlip:
    """Data poison for :func:`label_flip`: ``poison(x, y, key) -> (x, flipped y)``."""

    num_classes: int
    permutation: tuple[int, ...] | None = attrs.field(default=None, converter=_optional_ints)
    target: int | None = None
    source: int | None = None

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, key: Key | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, label_flip(
            y,
            num_classes=self.num_classes,
            permutation=self.permutation,
            target=self.target,
            source=self.source,
        )
