"""The paper's figures (PDF and PNG, matplotlib's Agg backend, no display needed):

* ``accuracy_rounds_<task>_<faults>``: test accuracy per round, one panel per attack, one
  line per defense (mean over seeds, band ± std);
* ``heatmap_<task>_<faults>``: final test accuracy (%) of each defense under each attack;
* ``epsilon_accuracy``: final test accuracy against ε (log scale) for the runs with DP, one
  line per defense and attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from paper.records import Run
from paper.tables import Order, defense_rows, group_by, ordered

FORMATS = ("pdf", "png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(
            path,
            dpi=150,
            bbox_inches="tight",
            metadata={"CreationDate": None} if ext == "pdf" else None,
        )
        paths.append(path)
    return paths


def _mean_curve(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds present in every run's curve, the mean accuracy and its std over runs."""
    curves = [dict(r.curve) for r in runs if r.curve]
    if not curves:
        return np.array([]), np.array([]), np.array([])
    rounds = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.array([[c[t] for t in rounds] for c in curves], dtype=float)
    std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(rounds))
    return np.array(rounds), values.mean(axis=0), std


def accuracy_rounds(runs: Sequence[Run], out_dir: Path, order: Order | None = None) -> list[Path]:
    """One figure per (task, fault setting)."""
    plt, order, paths = _pyplot(), order or {}, []
    for (task, chaos), group in sorted(group_by(runs, lambda r: (r.task, r.chaos)).items()):
        attacks = ordered({r.attack for r in group}, order.get("attack", ()))
        cols = min(3, len(attacks))
        nrows = math.ceil(len(attacks) / cols)
        fig, axes = plt.subplots(
            nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False, sharey=True
        )
        rows = defense_rows(group, order)
        for k, attack in enumerate(attacks):
            ax = axes[k // cols][k % cols]
            for d, z, label in rows:
                members = [
                    r for r in group if (r.defense, r.noise_multiplier, r.attack) == (d, z, attack)
                ]
                x, mean, std = _mean_curve(members)
                if x.size:
                    (line,) = ax.plot(x, 100 * mean, label=label)
                    ax.fill_between(
                        x,
                        100 * (mean - std),
                        100 * (mean + std),
                        color=line.get_color(),
                        alpha=0.15,
                    )
            ax.set_title(f"attack: {attack}")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        for k in range(len(attacks), nrows * cols):
            axes[k // cols][k % cols].axis("off")
        for r in range(nrows):
            axes[r][0].set_ylabel("test accuracy (%)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(4, max(1, len(labels))),
            bbox_to_anchor=(0.5, -0.02 - 0.04 * math.ceil(len(labels) / 4)),
        )
        fig.suptitle(f"{task}, faults: {chaos}")
        fig.tight_layout()
        paths += _save(fig, out_dir, f"accuracy_rounds_{task}_{chaos}")
        plt.close(fig)
    return paths


def heatmaps(runs: Sequence[Run], out_dir: Path, order: Order | None = None) -> list[Path]:
    """One attack × defense heatmap per (task, fault setting)."""
    plt, order, paths = _pyplot(), order or {}, []
    for (task, chaos), group in sorted(group_by(runs, lambda r: (r.task, r.chaos)).items()):
        attacks = ordered({r.attack for r in group}, order.get("attack", ()))
        rows = defense_rows(group, order)
        grid = np.full((len(rows), len(attacks)), np.nan)
        for i, (d, z, _) in enumerate(rows):
            for j, a in enumerate(attacks):
                accs = [
                    r.accuracy
                    for r in group
                    if (r.defense, r.noise_multiplier, r.attack) == (d, z, a)
                    and r.accuracy is not None
                ]
                if accs:
                    grid[i, j] = 100 * float(np.mean(accs))
        fig, ax = plt.subplots(figsize=(1.1 * len(attacks) + 2.5, 0.45 * len(rows) + 1.5))
        low = float(np.nanmin(grid)) if np.isfinite(grid).any() else 0.0
        vmin = max(0.0, 10.0 * math.floor(low / 10.0) - 10.0)  # contrast where the values are
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=100, aspect="auto")
        ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), [label for _, _, label in rows])
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.1f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if grid[i, j] < (vmin + 100) / 2 else "black",
                    )
        fig.colorbar(im, ax=ax, label="test accuracy (%)")
        ax.set_title(f"{task}, faults: {chaos}")
        fig.tight_layout()
        paths += _save(fig, out_dir, f"heatmap_{task}_{chaos}")
        plt.close(fig)
    return paths


def epsilon_accuracy(runs: Sequence[Run], out_dir: Path, order: Order | None = None) -> list[Path]:
    """ε vs accuracy for the runs with DP (no figure when there is none)."""
    private = [r for r in runs if r.epsilon is not None and r.accuracy is not None]
    if not private:
        return []
    plt, order = _pyplot(), order or {}
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    groups = group_by(private, lambda r: (r.task, r.chaos, r.defense, r.attack))
    rank = {
        field: {
            v: i
            for i, v in enumerate(
                ordered({getattr(r, field) for r in private}, order.get(field, ()))
            )
        }
        for field in ("chaos", "defense", "attack")
    }
    keys = sorted(
        groups,
        key=lambda k: (k[0], rank["chaos"][k[1]], rank["defense"][k[2]], rank["attack"][k[3]]),
    )
    for task, chaos, d, a in keys:
        levels = group_by(groups[(task, chaos, d, a)], lambda r: r.noise_multiplier)
        pts = sorted(
            (float(np.mean([r.epsilon for r in g])), 100 * float(np.mean([r.accuracy for r in g])))
            for g in levels.values()
        )
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", label=f"{d} / {a}" + (f" / {chaos}" if chaos != "none" else ""))
    ax.set_xscale("log")
    ax.set_xlabel("ε")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    paths = _save(fig, out_dir, "epsilon_accuracy")
    plt.close(fig)
    return paths


def all_figures(runs: Sequence[Run], out_dir: Path, order: Order | None = None) -> list[Path]:
    """Every figure for ``runs`` into ``out_dir``."""
    return [
        *accuracy_rounds(runs, out_dir, order),
        *heatmaps(runs, out_dir, order),
        *epsilon_accuracy(runs, out_dir, order),
    ]
