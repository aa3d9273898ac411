"""Empirical privacy audits: lower bounds on ε from canaries, to check a claimed ε.

A sound mechanism's audited lower bound stays below its claimed ε (with the stated
confidence); a broken one's can exceed it, which proves the claim wrong.

* :mod:`privacy.audit.bounds` — the statistics: the one-run p-value and ε bound (Steinke,
  Nasr & Jagielski 2023), Clopper–Pearson bounds, the many-run threshold test;
* :mod:`privacy.audit.population` — canary directions and honest clients' updates;
* :mod:`privacy.audit.server` — a strategy's server side (sampling, ``Strategy.round``, the
  chain) run on a synthetic population, and local DP's client messages;
* :func:`one_run_audit`, :func:`many_run_audit` — client-level central DP on the released
  model; :func:`local_one_run_audit`, :func:`local_many_run_audit` — local DP per client.
"""

from privacy.audit.bounds import (
    ThresholdTest,
    clopper_pearson,
    one_run_epsilon,
    one_run_p_value,
    rates_epsilon,
    threshold_epsilon,
)
from privacy.audit.local import local_many_run_audit, local_one_run_audit
from privacy.audit.many_run import many_run_audit
from privacy.audit.one_run import guess_grid, one_run_audit, one_run_bound
from privacy.audit.population import Population, canary_updates, honest_updates
from privacy.audit.result import AuditResult
from privacy.audit.server import client_messages, released

__all__ = [
    "AuditResult",
    "Population",
    "ThresholdTest",
    "canary_updates",
    "client_messages",
    "clopper_pearson",
    "guess_grid",
    "honest_updates",
    "local_many_run_audit",
    "local_one_run_audit",
    "many_run_audit",
    "one_run_audit",
    "one_run_bound",
    "one_run_epsilon",
    "one_run_p_value",
    "rates_epsilon",
    "released",
    "threshold_epsilon",
]
