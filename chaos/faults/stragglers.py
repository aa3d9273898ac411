"""Stragglers: slow clients whose replies may miss the strategy's deadline."""

from __future__ import annotations

import math

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan

DISTRIBUTIONS = ("lognormal", "exponential", "uniform")


def _non_negative(instance, attribute, value) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"Stragglers.{attribute.name} must be a finite number >= 0, got {value!r}")


def straggler_latency(u: torch.Tensor, latency: str, scale: float, shape: float) -> torch.Tensor:
    """Latencies (seconds) from uniforms ``u`` on [0, 1) by inverse transform:
    ``lognormal``: ``scale · exp(shape · Φ⁻¹(u))`` (median ``scale``, log-std ``shape``);
    ``exponential``: ``−scale · log(1 − u)`` (mean ``scale``);
    ``uniform``: ``scale · u`` (on [0, scale))."""
    if latency == "lognormal":
        return scale * torch.exp(shape * torch.special.ndtri(u))
    if latency == "exponential":
        return -scale * torch.log1p(-u)
    if latency == "uniform":
        return scale * u
    raise ValueError(f"latency must be one of {DISTRIBUTIONS}, got {latency!r}")


@attrs.frozen
class Stragglers:
    """Each sampled client is, with probability ``fraction``, a straggler (``LATE``, reason
    ``"straggler"``) whose reply takes ``base`` + a latency drawn from ``latency`` (see
    :func:`straggler_latency` for ``scale`` and ``shape``); the others take ``base`` seconds
    (kind ``NONE``). The engine loses any reply whose latency exceeds the strategy's
    ``deadline`` (as ``late``) and delivers a ``LATE`` reply under the deadline normally, in
    latency order; without a deadline nothing is lost. Membership is a keyed coin per client
    and round (a pure function of the client, not an exact count of the sampled ones).

    Not to be confused with :class:`fedkit.PartialWork`, which models FedProx's partial work.
    """

    fraction: float = attrs.field(default=0.1, validator=check_probability)
    latency: str = attrs.field(default="lognormal", validator=attrs.validators.in_(DISTRIBUTIONS))
    scale: float = attrs.field(default=1.0, validator=_non_negative)
    shape: float = attrs.field(default=1.0, validator=_non_negative)
    base: float = attrs.field(default=0.0, validator=_non_negative)

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        u = round_uniforms(key, round, clients, 2)
        slow = u[:, 0] < self.fraction
        extra = straggler_latency(u[:, 1], self.latency, self.scale, self.shape)
        latency = self.base + torch.where(slow, extra, torch.zeros_like(extra))
        return plan_where(slow, FaultKind.LATE, "straggler", latency=latency)
