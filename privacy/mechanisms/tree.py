"""DP-FTRL: tree-aggregation noise on the running sum of the (clipped, fixed-denominator)
aggregates, so the released models need no sampling or shuffling to be private.

The tree. Rounds are the leaves ``1..T`` of a binary tree (restarted every
``restart_every`` rounds when set). The prefix ``t = 2^{h_1} + 2^{h_2} + …`` (binary
digits, largest first) is the sum of the dyadic blocks of sizes ``2^{h_1}, 2^{h_2}, …``;
each block is a tree node carrying its own noise ``N(0, σ²)`` per coordinate, drawn once
when the node completes (at the round that ends it) and reused by every later prefix.
Round ``t`` completes exactly one node, ``(t − lowbit(t), t]``, and the nodes of the prefix
``t − 1`` smaller than ``lowbit(t)`` merge into it. The tree noise of prefix ``t`` is
``N_t`` = the sum of the noises of its blocks: ``popcount(t)`` independent nodes, variance
``popcount(t)·σ²``.

The release. :class:`TreeNoise` is a server transform that turns the aggregate ``x̄_t``
into ``x̄_t + N_t − N_{t−1}``; fedkit's server adds it to the model, so the model after
round ``t`` is exactly ``θ_0 + Σ_{s≤t} x̄_s + N_t``: the noisy prefix sums of DP-FTRL (with
server learning rate 1 it is FedAvg on the tree-noised sums; a server optimizer with
momentum after it is post-processing of the same releases). At a restart the finished
tree's noise stays in the model and a new tree starts from ``N = 0``. The state keeps the
round counter and the noises of the open blocks: ``O(log T · d)`` memory.

What is private (user level, zero-out/add-remove of one client, with a participation
schedule fixed independently of the data): the sequence of node values released, hence
every model. With rows clipped to ``C``, weights ≤ 1 and the denominator ``m``, one client
moves a node by at most ``c·C/m`` where ``c`` is the number of rounds of the node it took
part in; node noise ``σ = z·C/m`` makes the whole release a Gaussian mechanism (composed
adaptively, which Gaussian DP allows) with ``Δ²/σ² = Σ_nodes c² / z²``. One participation
per tree touches at most ``⌈log₂(T+1)⌉`` nodes; every-round participation touches all.
:mod:`privacy.tree_accounting` computes ``Σ c²`` and ε.

(Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, Practical and Private (Deep) Learning
without Sampling or Shuffling; Dwork, Naor, Pitassi, Rothblum 2010 and Chan, Shi, Song 2011
for the tree/binary mechanism.)
"""

from __future__ import annotations

import math
import numbers

import attrs
import torch

from fedkit.core.components import Component, ServerTransform
from fedkit.core.keys import Key, normal
from privacy.mechanisms.clipping import ClipUpdates, check_non_negative, check_positive
from privacy.mechanisms.fixed_mean import FixedMean
from privacy.mechanisms.gaussian import gaussian_noise_std
from privacy.mechanisms.weights import UniformWeights


def lowbit(t: int) -> int:
    """The largest power of two dividing ``t`` (``t ≥ 1``): the size of the node round
    ``t`` completes."""
    if t < 1:
        raise ValueError(f"lowbit needs a round t >= 1, got {t!r}")
    return t & -t


def _check_restart(value: int | None) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or int(value) != value
        or value < 1
    ):
        raise ValueError(f"restart_every must be None or an integer >= 1, got {value!r}")


@attrs.frozen(eq=False)
class TreeState:
    """The state of :class:`TreeNoise`: ``step`` rounds done in the current tree, ``tree``
    trees finished before it, ``noises`` the float64 noises of the open blocks of the
    prefix ``step`` (largest block first; one per set bit of ``step``)."""

    step: int = 0
    tree: int = 0
    noises: tuple[torch.Tensor, ...] = ()


def tree_noise_step(
    state: TreeState,
    d: int,
    *,
    std: float,
    restart_every: int | None,
    key: Key | None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, TreeState]:
    """One round of the tree: ``(N_t − N_{t−1}, new_state)`` (float64 ``[d]``).

    Starts a new tree first when the current one has ``restart_every`` rounds (the old
    tree's noise is then kept in the model: the difference is the new node's noise alone).

    (Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling or
    Shuffling.)
    """
    _check_restart(restart_every)
    step, tree, open_noises = state.step, state.tree, state.noises
    if len(open_noises) != bin(step).count("1"):
        raise ValueError(
            f"tree state holds {len(open_noises)} open noises for step {step} "
            f"(needs popcount(step) = {bin(step).count('1')})"
        )
    if restart_every is not None and step >= restart_every:
        step, tree, open_noises = 0, tree + 1, ()
    t = step + 1
    merged = (lowbit(t)).bit_length() - 1  # the open blocks of sizes 1, 2, …, lowbit(t)/2
    kept, absorbed = (
        open_noises[: len(open_noises) - merged],
        open_noises[len(open_noises) - merged :],
    )
    if std == 0.0:
        fresh = torch.zeros(d, dtype=torch.float64, device=device)
    else:
        if key is None:
            raise ValueError("tree noise needs a key: DP noise cannot be drawn without one")
        fresh = normal(key, (d,), std=std, dtype=torch.float64, device=device)
    delta = fresh.clone()
    for old in absorbed:
        delta = delta - old
    return delta, TreeState(step=t, tree=tree, noises=(*kept, fresh))


def prefix_noise(state: TreeState, d: int) -> torch.Tensor:
    """``N_t`` of the current tree: the sum of its open blocks' noises (float64 ``[d]``)."""
    total = torch.zeros(d, dtype=torch.float64)
    for n in state.noises:
        total = total + n.to(total.device)
    return total


@attrs.frozen
class TreeNoise(ServerTransform):
    """Server transform of DP-FTRL: the aggregate plus the change of the tree noise,
    ``x̄_t + N_t − N_{t−1}``, node noise ``σ = z·C/m`` (``expected_clients`` = m, the
    fixed denominator); ``restart_every``: start a new tree every that many rounds (e.g.
    an epoch). ``info``: ``noise_std`` (per node), ``tree_step``, ``tree_index``,
    ``open_nodes``.

    (Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling or
    Shuffling.)
    """

    noise_multiplier: float = attrs.field(converter=float)
    clip_norm: float = attrs.field(converter=float)
    expected_clients: float = attrs.field(converter=float)
    restart_every: int | None = None

    def __attrs_post_init__(self) -> None:
        check_non_negative("noise_multiplier", self.noise_multiplier)
        check_positive("clip_norm", self.clip_norm)
        check_positive("expected_clients", self.expected_clients)
        _check_restart(self.restart_every)

    @property
    def std(self) -> float:
        return gaussian_noise_std(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            expected_clients=self.expected_clients,
        )

    def init(self, d: int) -> TreeState:
        return TreeState()

    def __call__(self, updates, weights, state, key):
        if not isinstance(updates, torch.Tensor) or not torch.is_floating_point(updates):
            raise TypeError("TreeNoise expects a floating-point aggregate tensor")
        if updates.ndim != 1:
            raise ValueError(
                f"TreeNoise expects an aggregate of shape [d], got {tuple(updates.shape)}"
            )
        if not isinstance(state, TreeState):
            raise TypeError(f"TreeNoise state must be a TreeState, got {type(state).__name__}")
        std = self.std
        delta, new = tree_noise_step(
            state,
            updates.numel(),
            std=std,
            restart_every=self.restart_every,
            key=key,
            device=updates.device,
        )
        if std == 0.0:
            out = updates.clone()
        else:
            out = (updates.to(torch.float64) + delta).to(updates.dtype)
        info = {
            "noise_std": std,
            "tree_step": new.step,
            "tree_index": new.tree,
            "open_nodes": len(new.noises),
        }
        return out, new, info


def dp_ftrl(
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    *,
    restart_every: int | None = None,
) -> tuple[Component, ...]:
    """The components of DP-FTRL with tree aggregation, in chain order: clip to ``C`` →
    weights to 1 → fixed-denominator mean over ``expected_clients`` → :class:`TreeNoise`.
    Account with :class:`privacy.tree_accounting.TreeAccountant` (same ``noise_multiplier``
    and ``restart_every``).

    (Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling or
    Shuffling.)
    """
    return (
        ClipUpdates(clip_norm=clip_norm),
        UniformWeights(),
        FixedMean(expected_weight=expected_clients),
        TreeNoise(
            noise_multiplier=noise_multiplier,
            clip_norm=clip_norm,
            expected_clients=expected_clients,
            restart_every=restart_every,
        ),
    )
