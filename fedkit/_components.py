"""Every component at the top level: ``fedkit.krum(f=2)`` is ``fedkit.aggregators.Krum(f=2)``.

Each component is exported twice: under its class name (``fedkit.Krum``, the name to use as a
Hydra ``_target_``) and under the kernel's lowercase name (``fedkit.krum``), so a chain reads
like the algorithms it composes. The kernels themselves live in ``fedkit.aggregators``,
``fedkit.filters`` and ``fedkit.optimizers``.
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

# reducers
mean = Mean
median = Median
trimmed_mean = TrimmedMean
meamed = MeaMed
geometric_median = GeometricMedian
krum = Krum
multi_krum = MultiKrum
bulyan = Bulyan
centered_clipping = CenteredClipping
mda = MDA
monna = MoNNA
caf = CAF
smea = SMEA
dnc = DnC
clipped_clustering = ClippedClustering
sign_guard = SignGuard
fltrust = FLTrust
flame = FLAME
rlr = RLR
# transforms
clip = Clip
arc = ARC
nnm = NNM
bucketing = Bucketing
sanitize = Sanitize
krum_select = KrumSelect
foolsgold = FoolsGold
fldetector = FLDetector
# server transforms
server_lr = ServerLR
fedavgm = FedAvgM
fedadam = FedAdam
fedyogi = FedYogi
fedadagrad = FedAdagrad

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

__all__ = [name for name in dir() if not name.startswith("_") and name not in ("annotations",)]
