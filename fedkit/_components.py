"""Every component class at the top level: ``fedkit.Krum`` is ``fedkit.aggregators.Krum``.

Components are exported under their class name (``fedkit.Krum``, also the name to use as a
Hydra ``_target_``); their kernels, the plain functions, are in :mod:`fedkit.kernels`
(``fedkit.kernels.krum``). The lowercase aliases of the classes (``fedkit.krum``) are
deprecated: ``fedkit.__getattr__`` still serves them from :data:`DEPRECATED_ALIASES`, with a
``DeprecationWarning``, until 0.3.
"""

from fedkit.aggregators import (
    CAF,
    FLAME,
    MDA,
    RLR,
    SMEA,
    Bulyan,
    CenteredClipping,
    ClippedClustering,
    DnC,
    FLTrust,
    GeometricMedian,
    Krum,
    MeaMed,
    Mean,
    Median,
    MoNNA,
    MultiKrum,
    SignGuard,
    TrimmedMean,
)
from fedkit.filters import ARC, NNM, Bucketing, Clip, FLDetector, FoolsGold, KrumSelect, Sanitize
from fedkit.optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi, ServerLR

# Deprecated lowercase aliases of the classes (until 0.3): ``fedkit.krum`` is ``fedkit.Krum``,
# served with a warning by ``fedkit.__getattr__``. Each maps to (class, name of its kernel in
# fedkit.kernels).
DEPRECATED_ALIASES: dict[str, tuple[type, str]] = {
    "mean": (Mean, "mean"),
    "median": (Median, "median"),
    "trimmed_mean": (TrimmedMean, "trimmed_mean"),
    "meamed": (MeaMed, "meamed"),
    "geometric_median": (GeometricMedian, "geometric_median"),
    "krum": (Krum, "krum"),
    "multi_krum": (MultiKrum, "multi_krum"),
    "bulyan": (Bulyan, "bulyan"),
    "centered_clipping": (CenteredClipping, "centered_clipping"),
    "mda": (MDA, "mda"),
    "monna": (MoNNA, "monna"),
    "caf": (CAF, "caf"),
    "smea": (SMEA, "smea"),
    "dnc": (DnC, "dnc"),
    "clipped_clustering": (ClippedClustering, "clipped_clustering"),
    "sign_guard": (SignGuard, "sign_guard"),
    "fltrust": (FLTrust, "fltrust"),
    "flame": (FLAME, "flame"),
    "rlr": (RLR, "rlr"),
    "clip": (Clip, "clip"),
    "arc": (ARC, "arc"),
    "nnm": (NNM, "nnm"),
    "bucketing": (Bucketing, "bucketing"),
    "sanitize": (Sanitize, "sanitize"),
    "krum_select": (KrumSelect, "krum_select"),
    "foolsgold": (FoolsGold, "foolsgold"),
    "fldetector": (FLDetector, "fldetector_outliers"),
    "server_lr": (ServerLR, "server_lr_step"),
    "fedavgm": (FedAvgM, "momentum_step"),
    "fedadam": (FedAdam, "adam_step"),
    "fedyogi": (FedYogi, "yogi_step"),
    "fedadagrad": (FedAdagrad, "adagrad_step"),
}

REDUCERS = (
    Mean,
    Median,
    TrimmedMean,
    MeaMed,
    GeometricMedian,
    Krum,
    MultiKrum,
    Bulyan,
    CenteredClipping,
    MDA,
    MoNNA,
    CAF,
    SMEA,
    DnC,
    ClippedClustering,
    SignGuard,
    FLTrust,
    FLAME,
    RLR,
)
TRANSFORMS = (Clip, ARC, NNM, Bucketing, Sanitize, KrumSelect, FoolsGold, FLDetector)
SERVER_TRANSFORMS = (ServerLR, FedAvgM, FedAdam, FedYogi, FedAdagrad)

__all__ = [
    *(cls.__name__ for cls in (*REDUCERS, *TRANSFORMS, *SERVER_TRANSFORMS)),
    "REDUCERS",
    "SERVER_TRANSFORMS",
    "TRANSFORMS",
]
