"""Privacy accountants for ``fedkit.simulate`` (they implement
:class:`fedkit.protocols.PrivacyAccountant`): the engine asks them, before every round, what
ε the run would have spent after it, records ε per round and stops before a round that would
exceed ``target_epsilon``.

* :class:`CentralDPAccountant` — DP-FedAvg (user level): one Poisson-subsampled Gaussian step
  per round at the strategy's rate ``q = clients per round / clients``; it refuses a strategy
  that samples a fixed number of clients without replacement (``q < 1``), which is not the
  sampling its analysis assumes;
* :class:`DPSGDAccountant` — client DP-SGD (example level): per client that trains, rate
  ``batch / local examples`` and as many steps as it runs (:func:`~privacy.accounting.dpsgd_event`);
  the run's ε is the largest over clients (:class:`~privacy.accounting.ClientLedgers`).

``alerts``: the fractions of ``target_epsilon`` at which the run driver warns and records a
``budget_alert`` event. Ledgers are frozen values (checkpointed with the server state, so a resumed run continues
the same account).
"""

from __future__ import annotations

import math

import attrs

from fedkit.protocols import RoundSpend
from privacy.accounting import (
    ACCOUNTANTS,
    BudgetLedger,
    ClientLedgers,
    PrivacyEvent,
    dpsgd_event,
)


def _delta(_, __, value) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {value!r}")


def _target(_, __, value) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"target_epsilon must be None or finite and positive, got {value!r}")


def _optional_float(value):
    return None if value is None else float(value)


def _alerts(value) -> tuple[float, ...]:
    fractions = tuple(sorted(float(f) for f in value))
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"alerts must be budget fractions in (0, 1], got {tuple(value)!r}")
    return fractions


ALERTS = (0.5, 0.8, 1.0)


def _accountant(_, __, value) -> None:
    if value not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {value!r}")


@attrs.frozen
class CentralDPAccountant:
    """ε of central DP-FedAvg with noise multiplier ``noise_multiplier``: each round is one
    Poisson-subsampled Gaussian step at the strategy's rate ``q`` (``Strategy(sampling=
    "poisson")``; with every client in every round, ``q = 1``), at ``delta``;
    ``target_epsilon`` the budget.

    (McMahan et al. 2018, Learning Differentially Private Recurrent Language Models.)
    """

    noise_multiplier: float = attrs.field(converter=float)
    delta: float = attrs.field(default=1e-5, converter=float, validator=_delta)
    target_epsilon: float | None = attrs.field(
        default=None, converter=_optional_float, validator=_target
    )
    accountant: str = attrs.field(default="rdp", validator=_accountant)
    alerts: tuple[float, ...] = attrs.field(default=ALERTS, converter=_alerts)

    def init(self, num_clients: int) -> BudgetLedger:
        return BudgetLedger(self.accountant)

    def spend(self, ledger: BudgetLedger, round: RoundSpend) -> BudgetLedger:
        q = float(round.sample_rate)
        if round.sampling != "poisson" and q < 1.0:
            raise ValueError(
                f"CentralDPAccountant accounts for Poisson client sampling, but the strategy "
                f"draws a fixed {round.clients_per_round} of {round.num_clients} clients "
                f"without replacement (sampling={round.sampling!r}): use "
                "Strategy(sampling='poisson') or sample every client"
            )
        return ledger.step(PrivacyEvent(self.noise_multiplier, q, 1))

    def epsilon(self, ledger: BudgetLedger) -> float:
        return ledger.epsilon(self.delta)


@attrs.frozen
class DPSGDAccountant:
    """ε of client DP-SGD (the strategy's ``ClientConfig.dp_sgd``): per client, every local
    step is a subsampled Gaussian step at rate ``batch_size / local examples``; the run's ε
    is the largest over clients, at ``delta``; ``target_epsilon`` the budget. Sampling of
    the clients themselves is not counted (conservative).

    (Abadi et al. 2016, Deep Learning with Differential Privacy.)
    """

    delta: float = attrs.field(default=1e-5, converter=float, validator=_delta)
    target_epsilon: float | None = attrs.field(
        default=None, converter=_optional_float, validator=_target
    )
    accountant: str = attrs.field(default="rdp", validator=_accountant)
    alerts: tuple[float, ...] = attrs.field(default=ALERTS, converter=_alerts)

    def init(self, num_clients: int) -> ClientLedgers:
        return ClientLedgers.create(num_clients, self.accountant)

    def spend(self, ledger: ClientLedgers, round: RoundSpend) -> ClientLedgers:
        setting = round.dp_sgd
        if setting is None:
            raise ValueError("DPSGDAccountant needs a strategy whose ClientConfig has dp_sgd set")
        clients = round.clients.tolist()
        events = [
            dpsgd_event(
                noise_multiplier=setting.noise_multiplier,
                batch_size=setting.batch_size,
                local_examples=n,
                steps=s,
            )
            for n, s in zip(round.local_examples.tolist(), round.local_steps.tolist(), strict=True)
        ]
        return ledger.step(clients, events)

    def epsilon(self, ledger: ClientLedgers) -> float:
        return ledger.epsilon(self.delta)
