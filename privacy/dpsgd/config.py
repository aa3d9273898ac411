"""The client DP-SGD setting carried by ``ClientConfig(dp_sgd=DPSGD(...))``."""

from __future__ import annotations

import math

import attrs

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
    ``batch_size`` (rate ``q = batch_size / local examples``); ``backend`` picks the
    ``torch.func`` fast path or the Opacus path.

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """

    max_grad_norm: float = attrs.field(converter=float, validator=_positive("max_grad_norm"))
    noise_multiplier: float = attrs.field(converter=float, validator=_non_negative)
    batch_size: int = attrs.field(converter=int, validator=_positive("batch_size"))
    backend: str = attrs.field(default="torch.func", validator=_backend)

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
