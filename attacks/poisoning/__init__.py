"""Model poisoning: kernels ``attack(honest: Tensor[h, d], *, num_byzantine, <params>,
key=None) -> Tensor[b, d]`` that build the Byzantine rows from the honest rows the adversary
may see, and attack values (frozen attrs classes, fields named like the kernel's parameters)
that :class:`attacks.ModelPoisoning` calls."""

from attacks.poisoning._common import Attack, aggregate_fn
from attacks.poisoning.adaptive import (
    AdaptiveFlame,
    AdaptiveFoolsGold,
    adaptive_flame,
    adaptive_foolsgold,
    attack_directions,
    benign_spread,
    sybil_directions,
)
from attacks.poisoning.alie import ALIE, alie, alie_z
from attacks.poisoning.fang import (
    FangKrum,
    FangTrimmedMean,
    fang_krum,
    fang_krum_bound,
    fang_trimmed_mean,
)
from attacks.poisoning.gaussian import Gaussian, gaussian
from attacks.poisoning.ipm import IPM, ipm
from attacks.poisoning.mimic import Mimic, mimic, mimic_target
from attacks.poisoning.min_max import (
    MinMax,
    MinSum,
    largest_feasible,
    min_max,
    min_max_gamma,
    min_sum,
    min_sum_gamma,
    perturbation_vector,
)
from attacks.poisoning.neurotoxin import Neurotoxin, neurotoxin, top_coordinates
from attacks.poisoning.non_finite import NonFinite, non_finite
from attacks.poisoning.optimal import (
    OptimalALIE,
    OptimalIPM,
    best_factor,
    damage,
    optimal_alie,
    optimal_ipm,
)
from attacks.poisoning.scaling import Scaling, scaling
from attacks.poisoning.sign_flip import SignFlip, sign_flip

__all__ = [
    "ALIE",
    "IPM",
    "AdaptiveFlame",
    "AdaptiveFoolsGold",
    "Attack",
    "FangKrum",
    "FangTrimmedMean",
    "Gaussian",
    "Mimic",
    "MinMax",
    "MinSum",
    "Neurotoxin",
    "NonFinite",
    "OptimalALIE",
    "OptimalIPM",
    "Scaling",
    "SignFlip",
    "adaptive_flame",
    "adaptive_foolsgold",
    "aggregate_fn",
    "alie",
    "alie_z",
    "attack_directions",
    "benign_spread",
    "best_factor",
    "damage",
    "fang_krum",
    "fang_krum_bound",
    "fang_trimmed_mean",
    "gaussian",
    "ipm",
    "largest_feasible",
    "mimic",
    "mimic_target",
    "min_max",
    "min_max_gamma",
    "min_sum",
    "min_sum_gamma",
    "neurotoxin",
    "non_finite",
    "optimal_alie",
    "optimal_ipm",
    "perturbation_vector",
    "scaling",
    "sign_flip",
    "sybil_directions",
    "top_coordinates",
]
