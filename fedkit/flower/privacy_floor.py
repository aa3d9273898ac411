"""A client's privacy floor: the least privacy a node accepts, checked on every request.

A node operator sets it in the node config (``privacy-floor``, a JSON object); the server
can ask for more privacy, never less. For client DP-SGD (Abadi et al. 2016) the ε of one
round falls as the noise multiplier ``z`` grows and grows with the Poisson rate ``q`` and
the number of steps ``T`` (for fixed δ, the subsampled-Gaussian RDP bound is monotone in
each). A request meeting every bound of the floor — DP-SGD on, ``z ≥ min_noise_multiplier``,
``q ≤ max_sample_rate``, ``T ≤ max_steps`` — is therefore at least as private as the floor,
whatever accountant is used; one that misses any bound is refused with the reason, and the
server counts the refusal (``lost["refused"]``, ``refusals`` by reason).
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from fedkit.client import ClientConfig, num_steps

REASONS = ("no_dp_sgd", "noise_below_floor", "sample_rate_above_floor", "steps_above_floor")


class FloorError(ValueError):
    """The node's ``privacy-floor`` setting is malformed."""


@attrs.frozen
class PrivacyFloor:
    """Bounds a DP-SGD request must meet (module doc); ``None`` leaves a bound open."""

    min_noise_multiplier: float = 0.0
    max_sample_rate: float | None = None
    max_steps: int | None = None

    def __attrs_post_init__(self) -> None:
        if not (self.min_noise_multiplier >= 0 and math.isfinite(self.min_noise_multiplier)):
            raise FloorError(f"min_noise_multiplier must be >= 0, got {self.min_noise_multiplier}")
        if self.max_sample_rate is not None and not 0 < self.max_sample_rate <= 1:
            raise FloorError(f"max_sample_rate must lie in (0, 1], got {self.max_sample_rate}")
        if self.max_steps is not None and self.max_steps < 1:
            raise FloorError(f"max_steps must be >= 1, got {self.max_steps}")

    @classmethod
    def from_node_config(cls, value: Any) -> PrivacyFloor | None:
        """The floor a node config value describes (``None``/``""``: no floor)."""
        if value is None or value == "":
            return None
        try:
            fields = json.loads(value) if isinstance(value, str) else dict(value)
        except (TypeError, ValueError) as exc:
            raise FloorError(f"privacy-floor is not a JSON object: {exc}") from None
        if not isinstance(fields, dict):
            raise FloorError(f"privacy-floor must be a JSON object, got {value!r}")
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise FloorError(f"privacy-floor has unknown fields {unknown}; known: {sorted(known)}")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise FloorError(f"privacy-floor: {exc}") from None

    def refusal(self, cfg: ClientConfig, examples: int, work: int) -> str | None:
        """Why a request for ``work`` units with ``cfg`` on ``examples`` local examples
        falls below the floor (one of :data:`REASONS`, with the numbers), or ``None``."""
        setting = cfg.dp_sgd
        if setting is None:
            return "no_dp_sgd: this node trains only with DP-SGD"
        z = float(setting.noise_multiplier)
        if z < self.min_noise_multiplier:
            return f"noise_below_floor: noise multiplier {z} < {self.min_noise_multiplier}"
        q = float(setting.sample_rate(max(examples, 1)))
        if self.max_sample_rate is not None and q > self.max_sample_rate:
            return f"sample_rate_above_floor: sample rate {q:.4g} > {self.max_sample_rate}"
        steps = num_steps(examples, work, cfg)
        if self.max_steps is not None and steps > self.max_steps:
            return f"steps_above_floor: {steps} local steps > {self.max_steps}"
        return None
