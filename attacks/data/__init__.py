"""Data poisoning: what the controlled clients train on (label flipping, backdoor triggers,
distributed backdoor triggers) and the metrics that measure it (clean accuracy, attack
success rates)."""

from attacks.data.backdoor import Backdoor, PixelTrigger, backdoor, num_poisoned, stamp
from attacks.data.dba import DBA, DistributedTrigger, LocalTrigger
from attacks.data.label_flip import LabelFlip, label_flip
from attacks.data.metrics import (
    attack_success_rate,
    backdoor_success_rate,
    clean_accuracy,
    label_flip_success_rate,
    predict_labels,
)

__all__ = [
    "DBA",
    "Backdoor",
    "DistributedTrigger",
    "LabelFlip",
    "LocalTrigger",
    "PixelTrigger",
    "attack_success_rate",
    "backdoor",
    "backdoor_success_rate",
    "clean_accuracy",
    "label_flip",
    "label_flip_success_rate",
    "num_poisoned",
    "predict_labels",
    "stamp",
]
