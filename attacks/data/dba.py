"""Distributed backdoor attack (DBA): a global trigger made of ``parts`` local patterns; each
Byzantine client stamps only its own local pattern on its poisoned examples, and the
backdoor is tested with the whole global trigger.

Layout. The local patterns are ``height × width`` rectangles on a grid of ``columns``
columns (part ``i`` in grid row ``i // columns`` and grid column ``i % columns``) with
``gap`` pixels between neighbours; the grid's bounding box sits in ``corner``, ``margin``
pixels from the image's edges (as :class:`~attacks.data.backdoor.PixelTrigger`'s square).

Assignment. The client of rank ``r`` among the controlled ids (sorted) stamps part
``r mod parts``, so ``parts`` attackers together cover the global trigger and each keeps
the same part for the whole run.
"""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch

from attacks.data.backdoor import CORNERS, backdoor
from fedkit.core.keys import Key

_positive = [attrs.validators.instance_of(int), attrs.validators.ge(1)]


@attrs.frozen
class DistributedTrigger:
    """The global trigger (module doc). ``mask`` is the whole trigger (the global one, used
    for evaluation); ``part(i)`` is local pattern ``i``. Both work with
    :func:`~attacks.data.backdoor.stamp` and :func:`~attacks.data.backdoor.backdoor`."""

    parts: int = attrs.field(default=4, validator=_positive)
    height: int = attrs.field(default=1, validator=_positive)
    width: int = attrs.field(default=3, validator=_positive)
    gap: int = attrs.field(
        default=1, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)]
    )
    columns: int = attrs.field(default=2, validator=_positive)
    value: float = 1.0
    corner: str = attrs.field(default="top_left", validator=attrs.validators.in_(CORNERS))
    margin: int = attrs.field(
        default=0, validator=[attrs.validators.instance_of(int), attrs.validators.ge(0)]
    )

    def boxes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(top, left)`` of each part's rectangle in a ``height × width`` image."""
        cols = min(self.columns, self.parts)
        rows = math.ceil(self.parts / cols)
        span_h = rows * self.height + (rows - 1) * self.gap
        span_w = cols * self.width + (cols - 1) * self.gap
        if span_h + self.margin > height or span_w + self.margin > width:
            raise ValueError(
                f"DBA trigger ({self.parts} parts of {self.height}x{self.width}, gap "
                f"{self.gap}, {cols} columns: {span_h}x{span_w}) with margin {self.margin} "
                f"does not fit in a {height}x{width} image"
            )
        top = self.margin if self.corner.startswith("top") else height - self.margin - span_h
        left = self.margin if self.corner.endswith("left") else width - self.margin - span_w
        return [
            (
                top + (i // cols) * (self.height + self.gap),
                left + (i % cols) * (self.width + self.gap),
            )
            for i in range(self.parts)
        ]

    def part_mask(
        self, index: int | None, height: int, width: int, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """BoolTensor ``[height, width]``: part ``index``, or every part when None."""
        boxes = self.boxes(height, width)
        chosen = range(self.parts) if index is None else [index]
        rows = torch.arange(height, device=device)[:, None]
        cols = torch.arange(width, device=device)[None, :]
        out = torch.zeros(height, width, dtype=torch.bool, device=device)
        for i in chosen:
            top, left = boxes[i]
            in_rows = (rows >= top) & (rows < top + self.height)
            in_cols = (cols >= left) & (cols < left + self.width)
            out |= in_rows & in_cols
        return out

    def mask(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The global trigger's pixels."""
        return self.part_mask(None, height, width, device)

    def part(self, index: int) -> LocalTrigger:
        """Local pattern ``index`` (``0 <= index < parts``)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.parts:
            raise ValueError(f"part index must be an int in [0, {self.parts}), got {index!r}")
        return LocalTrigger(self, index)


@attrs.frozen
class LocalTrigger:
    """One local pattern of a :class:`DistributedTrigger` (a trigger for ``stamp``)."""

    whole: DistributedTrigger
    index: int

    @property
    def value(self) -> float:
        return self.whole.value

    def mask(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.whole.part_mask(self.index, height, width, device)


@attrs.frozen
class DBA:
    """Data poison of the distributed backdoor attack: ``poison(x, y, key, rank=r)`` is
    :func:`~attacks.data.backdoor.backdoor` with local pattern ``r mod parts``; without a
    rank, the global trigger (a plain backdoor). The adversary passes each client's rank
    among the controlled ids (``per_client``); the attack success rate uses the global
    trigger (``trigger``).

    Xie et al. 2020, DBA: Distributed Backdoor Attacks against Federated Learning (ICLR).
    """

    per_client: ClassVar[bool] = True

    target: int
    trigger: DistributedTrigger = attrs.field(factory=DistributedTrigger)
    fraction_poisoned: float = 0.5

    def local(self, rank: int) -> LocalTrigger:
        """The local pattern of the client of rank ``rank`` among the controlled ids."""
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank must be an int >= 0, got {rank!r}")
        return self.trigger.part(rank % self.trigger.parts)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, key: Key | None = None, *, rank: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        trigger = self.trigger if rank is None else self.local(rank)
        return backdoor(
            x,
            y,
            target=self.target,
            trigger=trigger,
            fraction_poisoned=self.fraction_poisoned,
            key=key,
        )
