"""Exclude clients whose update holds NaN or Inf."""

from __future__ import annotations

import attrs
import torch

from fedkit.core.components import KernelFilter
from fedkit.core.keys import Key
from fedkit.filters._common import check_rows, finite_rows


def sanitize(
    updates: torch.Tensor, weights: torch.Tensor | None = None, *, key: Key | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows holding a NaN or an Inf get weight 0 and are replaced by zeros, so that later
    arithmetic on all rows stays finite; other rows and weights are unchanged. When every
    row is finite the input tensor itself is returned (no copy).

    A guard against corrupted payloads (no paper: a standard input check).
    """
    updates, w = check_rows(updates, weights, "sanitize")
    ok = finite_rows(updates)
    new_w = torch.where(ok, w, torch.zeros_like(w))
    if bool(ok.all()):
        return updates, new_w
    return updates.masked_fill(~ok[:, None], 0.0), new_w


@attrs.frozen
class Sanitize(KernelFilter):
    """Component for :func:`sanitize`; rejected rows carry the reason ``"nonfinite"``."""

    kernel = staticmethod(sanitize)
    reason = "nonfinite"
