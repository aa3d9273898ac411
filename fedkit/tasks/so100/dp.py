"""Episode-level DP-SGD for the SO-100 task: the privacy unit is one robot demonstration.

Step ``t`` of a client with ``E`` training episodes Poisson-samples episodes, each with
probability ``q = setting.sample_rate(E)`` (``min(1, batch_size / E)``: the setting's
``batch_size`` counts *episodes*), drawn from ``fold_in(k_batches, t)``
(:func:`fedkit.client_dp.poisson_schedule`). Each sampled episode ``e`` gives one gradient
``g_e``, of the policy's mean loss over (up to ``frames_per_episode``) of its frames; each is
clipped to L2 norm ``C`` over all trainable parameters jointly; the step's gradient is
``(Σ_e clip_C(g_e) + N(0, (z·C)² I)) / (q·E)``.

Why this is episode-level DP: every frame of an episode reaches the step only through that
episode's one clipped term, so adding or removing a whole episode changes the sum by at most
``C`` in L2 norm — a Gaussian mechanism of sensitivity ``C`` and noise ``z·C``, applied to an
episode set sampled independently at rate ``q``. That is the subsampled Gaussian the
DP-SGD accountants analyse, with the rate over episodes: ``dpsgd_event(z, batch_size, E,
steps)`` (``E`` episodes, not frames) gives the client's ε. Frames of one episode are
strongly correlated; example-level DP over frames would not protect a demonstration.

(Abadi et al. 2016, Deep Learning with Differential Privacy; McMahan et al. 2018, Learning
Differentially Private Recurrent Language Models, for DP over groups of examples.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedkit.client_dp import clipped_grad_sum
from fedkit.core.keys import Key, permutation


def frames_by_episode(frame_episode: torch.Tensor, episodes: Sequence[int]) -> list[torch.Tensor]:
    """The frame indices (increasing) of each of ``episodes``, given the episode id of every
    frame (``frame_episode[i]``); an error naming an episode without frames."""
    out = []
    for e in episodes:
        rows = torch.nonzero(frame_episode == int(e)).flatten()
        if rows.numel() == 0:
            raise ValueError(f"episode {e} has no frames in this client's data")
        out.append(rows)
    return out


def episode_subset(frames: torch.Tensor, cap: int | None, key: Key) -> torch.Tensor:
    """All of an episode's ``frames``, or ``cap`` of them drawn without replacement from
    ``key`` (kept in frame order)."""
    if cap is None or cap >= frames.numel():
        return frames
    if cap < 1:
        raise ValueError(f"frames_per_episode must be >= 1, got {cap}")
    pick = permutation(key, frames.numel())[:cap].sort().values
    return frames[pick]


def episode_dp_gradient(
    grads: torch.Tensor,
    max_grad_norm: float,
    noise: torch.Tensor,
    expected_batch: float,
) -> torch.Tensor:
    """``(Σ_e clip_C(g_e) + noise) / expected_batch`` for the per-episode gradients
    ``grads [k, d]`` (``k`` may be 0: an empty Poisson batch releases noise alone).

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """
    if not expected_batch > 0:
        raise ValueError(f"expected_batch must be positive, got {expected_batch!r}")
    if grads.ndim != 2 or grads.shape[1] != noise.numel():
        raise ValueError(
            f"need per-episode gradients [k, {noise.numel()}], got {tuple(grads.shape)}"
        )
    if grads.shape[0] == 0:
        total = torch.zeros_like(noise)
    else:
        ones = torch.ones(grads.shape[0], dtype=grads.dtype, device=grads.device)
        total = clipped_grad_sum(grads, ones, max_grad_norm)
    return (total + noise) / expected_batch


__all__ = ["episode_dp_gradient", "episode_subset", "frames_by_episode"]
