"""Differential-privacy mechanisms as fedkit components (usable in ``fedkit.chain``).

* Central DP-FedAvg with fixed clipping: ``chain(*dp_fedavg(C, z, m))`` =
  :class:`ClipUpdates` → :class:`UniformWeights` → :class:`FixedMean` → :class:`GaussianNoise`.
* Adaptive clipping: :class:`AdaptiveClipMean` (the whole DP algorithm as one reducer, clip
  norm in its state) or :class:`AdaptiveClip` (the clipping transform alone).
* Local DP: :class:`LocalDP` (each row clipped and noised, Gaussian or Laplace).
* CRFL (certifiably robust FL by model clipping and smoothing, not a DP guarantee):
  :class:`CRFL` and :func:`crfl_certify` (:mod:`privacy.mechanisms.crfl`).
* DP-FTRL (tree aggregation, no sampling needed): ``chain(*dp_ftrl(C, z, m))`` =
  clip → uniform weights → fixed mean → :class:`TreeNoise` (:mod:`privacy.tree_accounting`).

Composing with robust aggregation: the order is the user's choice, and it decides what is
protected.

**DP before robust aggregation** — ``chain(LocalDP(C, z), <robust reducer>)``: each update
is private *before* anything else touches it, so the guarantee holds against the server
and against anyone who sees individual updates, and whatever the robust aggregator and the
server transforms do afterwards is post-processing (it cannot weaken it). The price: the
robust aggregator sees rows carrying noise ``z·C`` per coordinate, so honest updates look
far apart and a robust rule with variance-dependent error (Krum, median, trimmed mean)
degrades and separates Byzantine rows less well.

**Robust then DP (central DP)** — ``chain(ClipUpdates(C), <Byzantine filter>,
UniformWeights(), FixedMean(m), GaussianNoise(z, C, m))`` or with :class:`AdaptiveClipMean`
as the reducer: the server is trusted to see raw updates; the noise protects the *released
model* against other clients and the public. The filter works on clean rows, so it keeps
its robustness. The accounting (multiplier ``z``, sample rate ``m/N``) is exact when the
noisy reducer has sensitivity ``C/m`` — true for the fixed-denominator mean of clipped rows
with weights ≤ 1 after a filter that decides per row (a sanitiser, a norm threshold). A
filter whose decision for one client depends on the others (Krum, outlier scores) lets one
client change which *other* rows are kept, and a robust reducer (median, trimmed mean)
used in place of :class:`FixedMean` has its own, larger sensitivity; ``GaussianNoise`` still
adds ``z·C/m`` but the stated ε then does not follow from this argument. Clipping first is
always advisable: it bounds every client's influence on both the filter and the noise.
"""

from privacy.mechanisms.adaptive import (
    AdaptiveClip,
    AdaptiveClipMean,
    adaptive_clip,
    adaptive_clip_mean,
    next_clip_norm,
    split_noise_multiplier,
    unclipped_fraction,
)
from privacy.mechanisms.clipping import ClipUpdates, clip_rows, clip_scales_l1
from privacy.mechanisms.crfl import CRFL, CRFLBound, crfl_certify, crfl_step
from privacy.mechanisms.dp_fedavg import dp_fedavg
from privacy.mechanisms.fixed_mean import FixedMean, fixed_denominator_mean
from privacy.mechanisms.gaussian import GaussianNoise, gaussian_noise, gaussian_noise_std
from privacy.mechanisms.local import LocalDP, laplace, local_dp, local_dp_epsilon
from privacy.mechanisms.tree import TreeNoise, TreeState, dp_ftrl, prefix_noise, tree_noise_step
from privacy.mechanisms.weights import CapWeights, UniformWeights, cap_weights, uniform_weights

__all__ = [
    "CRFL",
    "AdaptiveClip",
    "AdaptiveClipMean",
    "CRFLBound",
    "CapWeights",
    "ClipUpdates",
    "FixedMean",
    "GaussianNoise",
    "LocalDP",
    "TreeNoise",
    "TreeState",
    "UniformWeights",
    "adaptive_clip",
    "adaptive_clip_mean",
    "cap_weights",
    "clip_rows",
    "clip_scales_l1",
    "crfl_certify",
    "crfl_step",
    "dp_fedavg",
    "dp_ftrl",
    "fixed_denominator_mean",
    "gaussian_noise",
    "gaussian_noise_std",
    "laplace",
    "local_dp",
    "local_dp_epsilon",
    "next_clip_norm",
    "prefix_noise",
    "split_noise_multiplier",
    "tree_noise_step",
    "unclipped_fraction",
    "uniform_weights",
]
