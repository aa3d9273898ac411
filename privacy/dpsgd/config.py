"""The client DP-SGD setting carried by ``ClientConfig(dp_sgd=DPSGD(...))``."""

from __future__ import annotations

import math
from typing import Any

import attrs

from fedkit.client_dp import TorchFuncBackend
from privacy.accounting import PrivacyEvent, dpsgd_event

BACKENDS = ("torch.func", "opacus")


def _positive(name):
    def check(_, __, value):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be finite and positive, got {value!r}")

    return check


def _non_negative(_, __, value):
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"noise_multiplier must be finite and non-negative, got {value!r}")


def _backend(_, __, value):
    if value not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")


@attrs.frozen
class DPSGD:
    """Client-side DP-SGD: per-example clipping to ``max_grad_norm``, Gaussian noise with
    multiplier ``noise_multiplier``, Poisson-sampled batches of expected size
    ``batch_size`` (rate ``q = batch_size / local examples``); ``backend`` picks how the
    per-example gradients are taken: ``"torch.func"`` (vmappable over clients) or
    ``"opacus"`` (Opacus's ``GradSampleModule``); :meth:`grad_backend` gives the engines'
    :class:`fedkit.client_dp.DPSGDBackend` for it. Batches, noise and accounting do not
    depend on the backend.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """

    max_grad_norm: float = attrs.field(converter=float, validator=_positive("max_grad_norm"))
    noise_multiplier: float = attrs.field(converter=float, validator=_non_negative)
    batch_size: int = attrs.field(converter=int, validator=_positive("batch_size"))
    backend: str = attrs.field(default="torch.func", validator=_backend)

    def grad_backend(self) -> Any:
        """The :class:`fedkit.client_dp.DPSGDBackend` of ``backend`` (Opacus imported only
        when asked for)."""
        if self.backend == "opacus":
            from privacy.dpsgd.opacus_backend import OpacusBackend

            return OpacusBackend()
        return TorchFuncBackend()

    def sample_rate(self, local_examples: int) -> float:
        """Poisson rate ``min(1, batch_size / local_examples)``."""
        if local_examples <= 0:
            raise ValueError(f"local_examples must be positive, got {local_examples}")
        return min(1.0, self.batch_size / local_examples)

    def expected_batch_size(self, local_examples: int) -> float:
        """``q · n``, the denominator of the DP-SGD gradient."""
        return self.sample_rate(local_examples) * local_examples

    def steps_per_epoch(self, local_examples: int) -> int:
        """``ceil(n / batch_size)``: as many steps as a non-private epoch has batches."""
        if local_examples <= 0:
            raise ValueError(f"local_examples must be positive, got {local_examples}")
        return math.ceil(local_examples / self.batch_size)

    def event(self, local_examples: int, steps: int) -> PrivacyEvent:
        """What ``steps`` local steps cost this client (for its ledger)."""
        return dpsgd_event(
            noise_multiplier=self.noise_multiplier,
            batch_size=self.batch_size,
            local_examples=local_examples,
            steps=steps,
        )
