"""Data poisoning: what the controlled clients train on (label flipping, backdoor triggers)
and the metrics that measure it (clean accuracy, backdoor success rate)."""

from attacks.data.backdoor import Backdoor, PixelTrigger, backdoor, num_poisoned, stamp
from attacks.data.label_flip import LabelFlip, label_flip
from attacks.data.metrics import backdoor_success_rate, clean_accuracy, predict_labels

__all__ = [
    "Backdoor",
    "LabelFlip",
    "PixelTrigger",
    "backdoor",
    "backdoor_success_rate",
    "clean_accuracy",
    "label_flip",
    "num_poisoned",
    "predict_labels",
    "stamp",
]
