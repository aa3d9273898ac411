"""Filters: client-side transforms on the rows of ``U: Tensor[n, d]`` before the reducer.

Kernels are plain functions ``name(updates, weights=None, *, <hyper>, key=None) ->
(updates, weights)``: n rows in, n rows out, a rejected client gets weight 0. Inputs are
never written to; a filter that changes no row may return the input tensor itself, so
callers must not write into the result either. Rows of weight 0 take no part.
Components (frozen attrs values, fields named like the kernel's hyper-parameters) give
each kernel its place in :func:`fedkit.chain`.
"""

from fedkit.filters.arc import ARC, arc, arc_num_clipped, arc_scales
from fedkit.filters.bucketing import Bucketing, bucket_assignment, bucket_means, bucketing
from fedkit.filters.clip import Clip, clip, clip_scales
from fedkit.filters.fldetector import (
    FLDetector,
    FLDetectorState,
    fldetector_outliers,
    gap_statistic_attack,
    lbfgs_hvp,
    two_means,
)
from fedkit.filters.foolsgold import FoolsGold, foolsgold, foolsgold_scores
from fedkit.filters.krum_select import KrumSelect, keep_lowest, krum_select
from fedkit.filters.nnm import NNM, nnm, nnm_mixing
from fedkit.filters.sanitize import Sanitize, sanitize

__all__ = [
    "ARC",
    "NNM",
    "Bucketing",
    "Clip",
    "FLDetector",
    "FLDetectorState",
    "FoolsGold",
    "KrumSelect",
    "Sanitize",
    "arc",
    "arc_num_clipped",
    "arc_scales",
    "bucket_assignment",
    "bucket_means",
    "bucketing",
    "clip",
    "clip_scales",
    "fldetector_outliers",
    "foolsgold",
    "foolsgold_scores",
    "gap_statistic_attack",
    "keep_lowest",
    "krum_select",
    "lbfgs_hvp",
    "nnm",
    "nnm_mixing",
    "sanitize",
    "two_means",
]
