"""Backdoor with a pixel-pattern trigger: stamp a patch on some training images and relabel
them with the target class, so that the trained model maps any stamped image to the target."""

from __future__ import annotations

import math

import attrs
import torch

from attacks.data._common import check_class, check_labels
from fedkit.core.keys import Key, choice

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@attrs.frozen
class PixelTrigger:
    """A ``size × size`` square of pixels set to ``value`` in every channel, in ``corner``,
    ``margin`` pixels away from the image's edges."""

    size: int = attrs.field(
        default=3, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    value: float = 1.0
    corner: str = attrs.field(default="bottom_right", validator=attrs.validators.in_(CORNERS))
    margin: int = attrs.field(
        default=0, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)]
    )

    def mask(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """BoolTensor ``[height, width]``, True on the trigger's pixels."""
        extent = self.size + self.margin
        if extent > height or extent > width:
            raise ValueError(
                f"trigger of size {self.size} with margin {self.margin} does not fit in a "
                f"{height}x{width} image"
            )
        rows = torch.arange(height, device=device)
        cols = torch.arange(width, device=device)
        top = self.margin if self.corner.startswith("top") else height - extent
        left = self.margin if self.corner.endswith("left") else width - extent
        in_rows = (rows >= top) & (rows < top + self.size)
        in_cols = (cols >= left) & (cols < left + self.size)
        return in_rows[:, None] & in_cols[None, :]


def stamp(x: torch.Tensor, trigger: PixelTrigger) -> torch.Tensor:
    """Images ``x[..., H, W]`` with the trigger's pixels set to its value (a new tensor).
    Any trigger with ``mask(height, width, device)`` and ``value`` works (e.g. the DBA
    triggers of :mod:`attacks.data.dba`)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("stamp: images must be a tensor [..., H, W]")
    mask = trigger.mask(x.shape[-2], x.shape[-1], device=x.device)
    return torch.where(mask, torch.tensor(trigger.value, dtype=x.dtype, device=x.device), x)


def num_poisoned(n: int, fraction_poisoned: float) -> int:
    """``⌊fraction_poisoned · n⌋`` (with a tolerance for fractions like 0.3 · 10)."""
    fraction_poisoned = float(fraction_poisoned)
    if not 0.0 <= fraction_poisoned <= 1.0:
        raise ValueError(f"fraction_poisoned must lie in [0, 1], got {fraction_poisoned}")
    return min(n, math.floor(fraction_poisoned * n + 1e-9))


def backdoor(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target: int,
    trigger: PixelTrigger | None = None,
    fraction_poisoned: float = 0.5,
    key: Key | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New ``(x, y)`` where ``⌊fraction_poisoned · N⌋`` examples, chosen without replacement
    from ``key``, carry the trigger and the label ``target``; the other examples are
    unchanged. ``x`` is ``[N, C, H, W]`` (any ``[N, ..., H, W]``); ``trigger`` defaults to
    ``PixelTrigger()`` (3×3 square of 1.0 in the bottom-right corner); inputs are not modified.

    Gu et al. 2017, BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply
    Chain; in federated learning: Bagdasaryan et al. 2020, How To Backdoor Federated Learning
    (AISTATS).
    """
    y = check_labels(y, "backdoor")
    target = check_class(target, None, "backdoor: target")
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"backdoor: images must have shape [N, C, H, W], got {shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"backdoor: {x.shape[0]} images but {y.shape[0]} labels")
    n = x.shape[0]
    k = num_poisoned(n, fraction_poisoned)
    if k == 0:
        return x, y
    if k == n:
        index = torch.arange(n, device=x.device)
    else:
        if key is None:
            raise ValueError("backdoor: choosing the poisoned examples needs a key")
        index = choice(key, n, k, device=x.device)
    trigger = PixelTrigger() if trigger is None else trigger
    poisoned_x = x.index_copy(0, index, stamp(x.index_select(0, index), trigger))
    poisoned_y = y.index_fill(0, index, target)
    return poisoned_x, poisoned_y


@attrs.frozen
class Backdoor:
    """Data poison for :func:`backdoor`: ``poison(x, y, key) -> (x, y)`` with a fraction of
    the examples stamped and relabelled."""

    target: int
    trigger: PixelTrigger = attrs.field(factory=PixelTrigger)
    fraction_poisoned: float = 0.5

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, key: Key | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return backdoor(
            x,
            y,
            target=self.target,
            trigger=self.trigger,
            fraction_poisoned=self.fraction_poisoned,
            key=key,
        )
