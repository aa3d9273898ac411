"""Every kernel in one place: the plain functions behind the components.

A component (``fedkit.Krum``, ``fedkit.Clip``, ``fedkit.FedAdam``) is a frozen value that a
:func:`fedkit.chain` composes; its kernel is the pure function it calls, named in lowercase:

* reducers ``name(updates, weights=None, *, <hyper>, key=None) -> Tensor[d]``
  (``fedkit.kernels.krum``, ``multi_krum``, ``trimmed_mean``, ...);
* filters ``name(updates, weights=None, *, <hyper>, key=None) -> (updates, weights)``
  (``clip``, ``arc``, ``nnm``, ``bucketing``, ...);
* server optimizers ``name_step(delta, state, *, <hyper>) -> (step, state)``
  (``adam_step``, ``yogi_step``, ...), with their state constructors.

Helpers that a kernel is built from (``krum_scores``, ``clip_scales``, ``flame_round``, ...)
are here too. The names are the same as in ``fedkit.aggregators``, ``fedkit.filters`` and
``fedkit.optimizers``; this module only gathers them.
"""

from fedkit.aggregators import (
    bulyan,
    caf,
    centered_clipping,
    clipped_clustering,
    dnc,
    flame,
    flame_round,
    fltrust,
    geometric_median,
    krum,
    krum_scores,
    mda,
    meamed,
    mean,
    median,
    monna,
    multi_krum,
    rlr,
    rlr_round,
    sign_guard,
    smea,
    trimmed_mean,
)
from fedkit.aggregators.fltrust import fltrust_trust
from fedkit.aggregators.geometric_median import weiszfeld_coefficients
from fedkit.filters import (
    arc,
    arc_num_clipped,
    arc_scales,
    bucket_assignment,
    bucket_means,
    bucketing,
    clip,
    clip_scales,
    fldetector_outliers,
    foolsgold,
    foolsgold_scores,
    gap_statistic_attack,
    keep_lowest,
    krum_select,
    lbfgs_hvp,
    nnm,
    nnm_mixing,
    sanitize,
    two_means,
)
from fedkit.optimizers import (
    adagrad_step,
    adam_step,
    adaptive_init,
    momentum_init,
    momentum_step,
    server_lr_step,
    yogi_step,
)

__all__ = [
    # server optimizers
    "adagrad_step",
    "adam_step",
    "adaptive_init",
    # filters
    "arc",
    "arc_num_clipped",
    "arc_scales",
    "bucket_assignment",
    "bucket_means",
    "bucketing",
    # reducers
    "bulyan",
    "caf",
    "centered_clipping",
    "clip",
    "clip_scales",
    "clipped_clustering",
    "dnc",
    "flame",
    "flame_round",
    "fldetector_outliers",
    "fltrust",
    "fltrust_trust",
    "foolsgold",
    "foolsgold_scores",
    "gap_statistic_attack",
    "geometric_median",
    "keep_lowest",
    "krum",
    "krum_scores",
    "krum_select",
    "lbfgs_hvp",
    "mda",
    "meamed",
    "mean",
    "median",
    "momentum_init",
    "momentum_step",
    "monna",
    "multi_krum",
    "nnm",
    "nnm_mixing",
    "rlr",
    "rlr_round",
    "sanitize",
    "server_lr_step",
    "sign_guard",
    "smea",
    "trimmed_mean",
    "two_means",
    "weiszfeld_coefficients",
    "yogi_step",
]
