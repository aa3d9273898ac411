"""Many-run auditing: one canary client, the mechanism run many times with and without it.

Half of the runs (the even ones) have the canary, the others do not; each run is ``rounds``
rounds of the strategy's server side on a fresh keyed population, and the canary's score is
the projection of the summed releases on its direction. A threshold test on the scores gives
the ε lower bound with Clopper–Pearson intervals; the threshold is chosen on a separate part of
the runs (:func:`privacy.audit.bounds.threshold_epsilon`).

(Jagielski, Ullman & Oprea 2020, Auditing Differentially Private Machine Learning: How Private
is Private SGD?; Nasr et al. 2021, Adversary Instantiation: Lower Bounds for Differentially
Private Machine Learning.)
"""

from __future__ import annotations

import attrs
import torch

from fedkit.core.keys import Key, fold_in, split
from privacy.audit.bounds import threshold_epsilon
from privacy.audit.population import Population, canary_updates
from privacy.audit.result import AuditResult
from privacy.audit.server import released


def check_runs(runs: int) -> int:
    """``runs`` as an int, or a clear error unless it is an even integer >= 16."""
    if isinstance(runs, bool) or int(runs) != runs or runs < 16 or int(runs) % 2:
        raise ValueError(f"runs must be an even integer >= 16, got {runs!r}")
    return int(runs)


def many_run_audit(
    strategy,
    population: Population,
    *,
    runs: int,
    rounds: int,
    delta: float,
    key: Key,
    confidence: float = 0.95,
    selection: float = 0.5,
) -> AuditResult:
    """Many-run audit of ``strategy``'s server side with one canary (slot 0, norm
    ``population.update_norm``, ``population.canary_examples`` examples) present in half of
    ``runs`` runs of ``rounds`` rounds each.

    (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021.)
    """
    runs = check_runs(runs)
    k_row, k_runs, k_split = split(key, 3)
    row = canary_updates(k_row, 1, population.dim, norm=population.update_norm)
    ids = torch.zeros(1, dtype=torch.int64)
    scores = torch.empty(runs, dtype=torch.float64)
    for r in range(runs):
        present = torch.tensor([r % 2 == 0])
        total = released(
            strategy,
            population,
            canary_ids=ids,
            canary_rows=row,
            present=present,
            rounds=rounds,
            key=fold_in(k_runs, r),
        )
        scores[r] = row[0].to(torch.float64) @ total / population.update_norm
    test = threshold_epsilon(
        scores[0::2],
        scores[1::2],
        delta=delta,
        beta=1.0 - confidence,
        key=k_split,
        selection=selection,
    )
    details = {
        **attrs.asdict(test),
        "runs": runs,
        "rounds": int(rounds),
        "num_clients": population.num_clients,
        "dim": population.dim,
        "canary_examples": population.canary_examples,
        "honest_examples": population.honest_examples,
        "threshold_choice": f"chosen on {selection:g} of the runs, bound on the rest",
    }
    return AuditResult(
        method="many-run",
        epsilon=test.epsilon,
        confidence=float(confidence),
        delta=float(delta),
        observed="released model",
        details=details,
    )
