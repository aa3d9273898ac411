"""A PNG grid of original images (top row) above their reconstructions (one row per
attack), drawn with matplotlib's Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def _images(t: torch.Tensor, name: str) -> torch.Tensor:
    """``[B, H, W]`` or ``[B, 1|3, H, W]`` as ``[B, H, W]`` / ``[B, H, W, 3]``."""
    t = torch.as_tensor(t).detach().to(torch.float32).cpu()
    if t.ndim == 4 and t.shape[1] == 1:
        return t[:, 0]
    if t.ndim == 4 and t.shape[1] == 3:
        return t.permute(0, 2, 3, 1)
    if t.ndim == 3:
        return t
    raise ValueError(f"{name} must be images [B, H, W] or [B, 1|3, H, W], got {tuple(t.shape)}")


def save_grid(
    originals: torch.Tensor,
    reconstructions: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    row_labels: Sequence[str] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    cell_inches: float = 1.0,
) -> Path:
    """Write ``originals`` (first row) and each tensor of ``reconstructions`` (one row
    each, same shape as ``originals``, column ``i`` = example ``i``) as a PNG at ``path``
    (parent folders created). Pixels are shown in grey (or RGB) over ``value_range``;
    ``row_labels`` names the rows (default "original", "reconstruction", ...).
    Returns the path written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported on use: slow
    from matplotlib.figure import Figure

    rows = [reconstructions] if isinstance(reconstructions, torch.Tensor) else list(reconstructions)
    top = _images(originals, "originals")
    grid = [top] + [_images(r, f"reconstructions[{i}]") for i, r in enumerate(rows)]
    for i, r in enumerate(grid[1:]):
        if r.shape != top.shape:
            raise ValueError(
                f"reconstructions[{i}] has shape {tuple(r.shape)}, originals {tuple(top.shape)}"
            )
    if row_labels is None:
        row_labels = ["original"] + (
            ["reconstruction"]
            if len(rows) == 1
            else [f"reconstruction {i}" for i in range(len(rows))]
        )
    if len(row_labels) != len(grid):
        raise ValueError(f"row_labels needs {len(grid)} names, got {len(row_labels)}")
    lo, hi = value_range
    n_rows, n_cols = len(grid), top.shape[0]
    fig = Figure(figsize=(cell_inches * n_cols + 1.2, cell_inches * n_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (images, label) in enumerate(zip(grid, row_labels)):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(images[c].clamp(lo, hi).numpy(), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)
    return path
