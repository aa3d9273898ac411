"""Privacy accounting: ε of a history of subsampled Gaussian steps, and a budget ledger.

A *history* is a sequence of :class:`PrivacyEvent` ``(noise_multiplier, sample_rate,
steps)``: ``steps`` applications of the Poisson-subsampled Gaussian mechanism with sampling
probability ``sample_rate`` and noise multiplier ``noise_multiplier``. ε is computed by
Opacus's accountants (``"rdp"``: Rényi DP, Mironov 2017 with Balle et al. 2020's
conversion; ``"prv"``: numerical composition of privacy loss random variables, Gopi et al.
2021) or Google's ``dp-accounting`` (``"pld"``: privacy loss distributions, Koskela et al.
2020 and Doroshenko et al. 2022, pessimistic discretisation), fed the history directly; for RDP the per-step curve of each ``(z, q)`` is cached
and composed by addition (what Opacus's RDP accountant computes, so a run's ledger costs one
curve per distinct step, not one per round).

What a step is:

* central DP (DP-FedAvg): one step per round, ``sample_rate = clients per round / total
  clients`` (:func:`central_dp_event`); the guarantee is per client (user level);
* client DP-SGD: per client, ``sample_rate = batch size / local examples`` and one step per
  local batch (:func:`dpsgd_event`); the guarantee is per example of that client, and the
  run's ε is the largest over clients (:class:`ClientLedgers`). Amplification by sampling
  the client itself is not counted (conservative).

:class:`BudgetLedger` is a frozen value: ``ledger.step(event)`` returns a new ledger; an
engine calls ``ledger.would_exceed(next_event, target_epsilon=..., delta=...)`` *before* a
round and stops cleanly when it is True, so the target is never exceeded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import attrs
import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

ACCOUNTANTS = ("rdp", "prv", "pld")
RDP_ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS)


def _check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return accountant


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    return d


def _non_negative_float(name: str):
    def convert(value) -> float:
        v = float(value)
        if not (v >= 0.0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        return v

    return convert


def _sample_rate(value) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"sample_rate must lie in [0, 1], got {value!r}")
    return v


def _steps(value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 0:
        raise ValueError(f"steps must be a non-negative integer, got {value!r}")
    return int(value)


@attrs.frozen
class PrivacyEvent:
    """``steps`` Poisson-subsampled Gaussian steps with one noise multiplier and rate."""

    noise_multiplier: float = attrs.field(converter=_non_negative_float("noise_multiplier"))
    sample_rate: float = attrs.field(converter=_sample_rate)
    steps: int = attrs.field(default=1, converter=_steps)

    def as_tuple(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def central_dp_event(
    *, noise_multiplier: float, clients_per_round: float, total_clients: int
) -> PrivacyEvent:
    """One round of central DP-FedAvg: rate ``clients_per_round / total_clients``, one step."""
    if total_clients <= 0 or clients_per_round <= 0 or clients_per_round > total_clients:
        raise ValueError(
            f"need 0 < clients_per_round <= total_clients, got {clients_per_round} and {total_clients}"
        )
    return PrivacyEvent(noise_multiplier, clients_per_round / total_clients, 1)


def dpsgd_event(
    *, noise_multiplier: float, batch_size: float, local_examples: int, steps: int
) -> PrivacyEvent:
    """One client's local DP-SGD in a round: rate ``batch_size / local_examples``, ``steps``."""
    if local_examples <= 0 or batch_size <= 0:
        raise ValueError(
            f"need positive batch_size and local_examples, got {batch_size}, {local_examples}"
        )
    return PrivacyEvent(noise_multiplier, min(1.0, batch_size / local_examples), steps)


def _normalise(history: Iterable[PrivacyEvent | tuple]) -> tuple[tuple[float, float, int], ...]:
    """Events as ``(z, q, steps)`` tuples, free steps dropped, equal neighbours merged."""
    out: list[tuple[float, float, int]] = []
    for item in history:
        ev = item if isinstance(item, PrivacyEvent) else PrivacyEvent(*item)
        if ev.steps == 0 or ev.sample_rate == 0.0:
            continue
        if out and out[-1][:2] == (ev.noise_multiplier, ev.sample_rate):
            out[-1] = (*out[-1][:2], out[-1][2] + ev.steps)
        else:
            out.append(ev.as_tuple())
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _epsilon_cached(
    history: tuple[tuple[float, float, int], ...], delta: float, accountant: str
) -> float:
    if not history:
        return 0.0
    if any(z == 0.0 for z, _, _ in history):
        return math.inf
    if accountant == "rdp":
        # RDP composes by addition: Opacus's per-step RDP curve of each (z, q), cached,
        # times its steps, then Opacus's conversion to (ε, δ) -- what its RDPAccountant
        # computes, without recomputing the curve of every (z, q) each round.
        rdp = sum(steps * _rdp_curve(z, q) for z, q, steps in history)
        eps, _ = rdp_analysis.get_privacy_spent(orders=RDP_ORDERS, rdp=rdp, delta=delta)
        return float(eps)
    if accountant == "pld":
        return _pld_epsilon(history, delta)
    acc = create_accountant(mechanism=accountant)
    acc.load_state_dict({"history": list(history), "mechanism": accountant})
    with np.errstate(divide="ignore"):  # PRV takes log(1 - q), -inf at q = 1 (harmless)
        return float(acc.get_epsilon(delta=delta))


def _pld_epsilon(history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """ε of the history by ``dp_accounting``'s PLD accountant (each event a self-composed
    Poisson-subsampled Gaussian)."""
    import dp_accounting
    from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

    acc = PLDAccountant()
    for z, q, steps in history:
        step = dp_accounting.GaussianDpEvent(z)
        if q < 1.0:
            step = dp_accounting.PoissonSampledDpEvent(q, step)
        acc.compose(dp_accounting.SelfComposedDpEvent(step, steps))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=1024)
def _rdp_curve(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP of one subsampled Gaussian step at every order of :data:`RDP_ORDERS`."""
    curve = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDP_ORDERS
    )
    curve.setflags(write=False)
    return curve


def epsilon_of_history(
    history: Iterable[PrivacyEvent | tuple[float, float, int]],
    *,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε spent by a history of events at ``delta`` (0 for an empty history, inf when a step
    has no noise). Opacus's accountant ``accountant`` is fed the history as is."""
    return _epsilon_cached(_normalise(history), _check_delta(delta), _check_accountant(accountant))


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps (Opacus's RDP or PRV accountant,
    or dp-accounting's PLD accountant).

    (Mironov et al. 2019, Rényi Differential Privacy of the Sampled Gaussian Mechanism;
    Gopi et al. 2021, Numerical Composition of Differential Privacy; Doroshenko et al.
    2022, Connect the Dots: Tighter Discrete Approximations of Privacy Loss Distributions.)
    """
    event = PrivacyEvent(noise_multiplier, sample_rate, steps)
    return epsilon_of_history([event], delta=delta, accountant=accountant)


def calibrate(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    epsilon_tolerance: float = 0.01,
) -> float:
    """The noise multiplier whose ε after ``steps`` steps lies in
    ``[target_epsilon − epsilon_tolerance, target_epsilon]`` (Opacus's bisection).

    (Mironov et al. 2019, Rényi Differential Privacy of the Sampled Gaussian Mechanism.)
    """
    target = float(target_epsilon)
    if not (target > 0 and math.isfinite(target)):
        raise ValueError(f"target_epsilon must be finite and positive, got {target_epsilon!r}")
    if not 0 < epsilon_tolerance < target:
        raise ValueError(
            f"epsilon_tolerance must lie in (0, target_epsilon), got {epsilon_tolerance!r}"
        )
    event = PrivacyEvent(1.0, sample_rate, steps)
    if event.steps == 0 or event.sample_rate == 0.0:
        return 0.0
    if _check_accountant(accountant) == "pld":
        return _calibrate_by_bisection(target, _check_delta(delta), event, epsilon_tolerance)
    return float(
        get_noise_multiplier(
            target_epsilon=target,
            target_delta=_check_delta(delta),
            sample_rate=event.sample_rate,
            steps=event.steps,
            accountant=_check_accountant(accountant),
            epsilon_tolerance=epsilon_tolerance,
        )
    )


def _calibrate_by_bisection(
    target: float, delta: float, event: PrivacyEvent, tolerance: float
) -> float:
    """Bisection on the noise multiplier with the PLD accountant until ε lies in
    ``[target − tolerance, target]`` (ε decreases with the noise)."""

    def eps(z: float) -> float:
        return epsilon(
            noise_multiplier=z,
            sample_rate=event.sample_rate,
            steps=event.steps,
            delta=delta,
            accountant="pld",
        )

    lo, hi = 0.0, 1.0
    while eps(hi) > target:
        lo, hi = hi, 2.0 * hi
        if hi > 1e6:
            raise ValueError(f"no noise multiplier below 1e6 reaches epsilon {target}")
    while True:
        e = eps(hi)
        if target - tolerance <= e <= target:
            return hi
        mid = 0.5 * (lo + hi)
        if eps(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            return hi


@attrs.frozen
class BudgetLedger:
    """The privacy history of one protected unit (the population for central DP, one client
    for DP-SGD). Pure: :meth:`step` returns a new ledger."""

    accountant: str = attrs.field(default="rdp", validator=lambda _, __, v: _check_accountant(v))
    history: tuple[tuple[float, float, int], ...] = attrs.field(default=(), converter=_normalise)

    @property
    def steps(self) -> int:
        """Total number of mechanism steps recorded."""
        return sum(s for _, _, s in self.history)

    def step(self, event: PrivacyEvent) -> BudgetLedger:
        """The ledger after ``event``."""
        return attrs.evolve(self, history=(*self.history, event.as_tuple()))

    def epsilon(self, delta: float) -> float:
        """ε spent so far at ``delta``."""
        return epsilon_of_history(self.history, delta=delta, accountant=self.accountant)

    def would_exceed(self, event: PrivacyEvent, *, target_epsilon: float, delta: float) -> bool:
        """True when recording ``event`` would push ε above ``target_epsilon``: call it
        before a round and stop instead of running that round."""
        return self.step(event).epsilon(delta) > float(target_epsilon)

    def to_dict(self) -> dict:
        return {"accountant": self.accountant, "history": [list(h) for h in self.history]}

    @classmethod
    def from_dict(cls, data: Mapping) -> BudgetLedger:
        return cls(accountant=data["accountant"], history=[tuple(h) for h in data["history"]])


@attrs.frozen
class ClientLedgers:
    """One :class:`BudgetLedger` per client (client DP-SGD); the run's ε is the maximum."""

    ledgers: tuple[BudgetLedger, ...] = attrs.field(converter=tuple)

    @classmethod
    def create(cls, num_clients: int, accountant: str = "rdp") -> ClientLedgers:
        if num_clients <= 0:
            raise ValueError(f"num_clients must be positive, got {num_clients}")
        return cls((BudgetLedger(accountant),) * num_clients)

    def step(self, clients: Sequence[int], events: Sequence[PrivacyEvent]) -> ClientLedgers:
        """Record ``events[i]`` for client ``clients[i]`` (the clients that trained)."""
        if len(clients) != len(events):
            raise ValueError(f"{len(clients)} clients but {len(events)} events")
        ledgers = list(self.ledgers)
        for c, ev in zip(clients, events, strict=True):
            if not 0 <= int(c) < len(ledgers):
                raise IndexError(f"client {c} out of range for {len(ledgers)} ledgers")
            ledgers[int(c)] = ledgers[int(c)].step(ev)
        return ClientLedgers(ledgers)

    def epsilons(self, delta: float) -> tuple[float, ...]:
        """Every client's ε at ``delta``."""
        return tuple(led.epsilon(delta) for led in self.ledgers)

    def epsilon(self, delta: float) -> float:
        """The largest ε over clients."""
        return max(self.epsilons(delta))

    def would_exceed(
        self,
        clients: Sequence[int],
        events: Sequence[PrivacyEvent],
        *,
        target_epsilon: float,
        delta: float,
    ) -> bool:
        """True when some client would exceed ``target_epsilon`` after its event."""
        return any(
            self.ledgers[int(c)].would_exceed(ev, target_epsilon=target_epsilon, delta=delta)
            for c, ev in zip(clients, events, strict=True)
        )

    def to_dict(self) -> dict:
        return {"ledgers": [led.to_dict() for led in self.ledgers]}

    @classmethod
    def from_dict(cls, data: Mapping) -> ClientLedgers:
        return cls(BudgetLedger.from_dict(d) for d in data["ledgers"])
