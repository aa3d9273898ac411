"""attacks suite (docs/architecture.md, docs/attacks.md): adversaries that control client ids
and poison their data (label flipping, backdoor triggers, distributed backdoor triggers) or
their updates (sign flip, Gaussian, scaling, ALIE, IPM, min-max / min-sum, Fang et al.'s
attacks, mimic, non-finite rows, optimal ALIE / IPM, Neurotoxin, attacks adapted to FLAME and
FoolsGold), and gradient inversion
(:mod:`attacks.inversion`: DLG, iDLG, Inverting Gradients)."""

from attacks import inversion
from attacks.adversary import (
    CombinedPoisoning,
    DataPoisoning,
    ModelPoisoning,
    check_clients,
    choose_controlled,
    num_controlled,
)
from attacks.data import *  # noqa: F403
from attacks.data import __all__ as _data_all
from attacks.knowledge import (
    KNOWLEDGE_LEVELS,
    Knowledge,
    claimed_examples,
    poison_rows,
    visible_rows,
)
from attacks.poisoning import *  # noqa: F403
from attacks.poisoning import __all__ as _poisoning_all

__all__ = [
    "KNOWLEDGE_LEVELS",
    "CombinedPoisoning",
    "DataPoisoning",
    "Knowledge",
    "ModelPoisoning",
    "check_clients",
    "choose_controlled",
    "claimed_examples",
    "inversion",
    "num_controlled",
    "poison_rows",
    "visible_rows",
    *_data_all,
    *_poisoning_all,
]
