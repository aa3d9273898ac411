"""One-run auditing of client-level DP: ``m`` canary clients in one run.

Each canary is included with probability ½ (keyed, independently). The auditor sees what the
server releases every round and scores each canary by the projection of the summed releases
on its update direction; it guesses "in" for the ``k₊`` highest scores, "out" for the ``k₋``
lowest and abstains on the rest; :func:`privacy.audit.bounds.one_run_epsilon` turns the
number of right guesses into an ε lower bound. The guess counts are a grid fixed before the
scores are seen and the confidence is split over the grid (Bonferroni), so the reported
maximum keeps its confidence.

(Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fedkit.core.keys import Key, bernoulli, permutation, split
from privacy.audit.bounds import one_run_epsilon
from privacy.audit.population import Population, canary_updates
from privacy.audit.result import AuditResult
from privacy.audit.server import released

# fractions of the canaries guessed (half "in" from the top, half "out" from the bottom)
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def guess_grid(canaries: int, fractions: Sequence[float] = GUESS_FRACTIONS) -> tuple:
    """Distinct ``(k₊, k₋)`` pairs: for each fraction ``f``, ``r = max(2, round(f·m))``
    guesses split ``k₊ = ⌈r/2⌉``, ``k₋ = ⌊r/2⌋``."""
    if canaries < 2:
        raise ValueError(f"a one-run audit needs at least 2 canaries, got {canaries}")
    pairs = []
    for f in fractions:
        if not 0.0 < float(f) <= 1.0:
            raise ValueError(f"guess fractions must lie in (0, 1], got {f!r}")
        r = min(canaries, max(2, round(float(f) * canaries)))
        pair = (math.ceil(r / 2), r // 2)
        if pair not in pairs:
            pairs.append(pair)
    return tuple(pairs)


def one_run_bound(
    scores: torch.Tensor,
    included: torch.Tensor,
    *,
    delta: float,
    confidence: float,
    grid: Sequence[tuple[int, int]] | None = None,
) -> dict:
    """The best ε lower bound over the guess ``grid`` (each at level ``(1 − confidence) /
    len(grid)``) from canary ``scores`` (high: "in") and the truth ``included``; returns a
    JSON-ready dict with ``epsilon``, the chosen ``k_plus``/``k_minus``, ``guesses`` and
    ``correct``."""
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    included = torch.as_tensor(included, dtype=torch.bool).reshape(-1)
    m = scores.numel()
    if included.numel() != m:
        raise ValueError(
            f"scores and included must have the same length, got {m} and {included.numel()}"
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("canary scores must be finite")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    grid = tuple(grid) if grid is not None else guess_grid(m)
    for kp, km in grid:
        if kp < 0 or km < 0 or kp + km > m or kp + km == 0:
            raise ValueError(f"guess pair (k_plus={kp}, k_minus={km}) does not fit {m} canaries")
    beta = (1.0 - float(confidence)) / len(grid)
    order = torch.argsort(scores, descending=True, stable=True)
    truth = included[order]
    best = {"epsilon": 0.0, "k_plus": grid[0][0], "k_minus": grid[0][1], "guesses": 0, "correct": 0}
    for kp, km in grid:
        right = (
            int(truth[:kp].sum()) + int((~truth[m - km :]).sum()) if km else int(truth[:kp].sum())
        )
        eps = one_run_epsilon(canaries=m, guesses=kp + km, correct=right, delta=delta, beta=beta)
        if eps > best["epsilon"] or best["guesses"] == 0:
            best = {
                "epsilon": eps,
                "k_plus": kp,
                "k_minus": km,
                "guesses": kp + km,
                "correct": right,
            }
    return {**best, "grid": [list(p) for p in grid], "level_per_guess_count": beta}


def one_run_audit(
    strategy,
    population: Population,
    *,
    canaries: int,
    rounds: int,
    delta: float,
    key: Key,
    confidence: float = 0.95,
    grid: Sequence[tuple[int, int]] | None = None,
) -> AuditResult:
    """One-run audit of ``strategy``'s server side: ``canaries`` of the population's slots
    (keyed) are canaries with random directions of norm ``population.update_norm``, each
    present with probability ½; the auditor sees the releases of ``rounds`` rounds.

    (Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run.)
    """
    m = int(canaries)
    if not 2 <= m <= population.num_clients:
        raise ValueError(
            f"canaries must lie in [2, num_clients={population.num_clients}], got {canaries!r}"
        )
    k_ids, k_rows, k_in, k_run = split(key, 4)
    ids = permutation(k_ids, population.num_clients)[:m]
    rows = canary_updates(k_rows, m, population.dim, norm=population.update_norm)
    present = bernoulli(k_in, 0.5, m)
    total = released(
        strategy,
        population,
        canary_ids=ids,
        canary_rows=rows,
        present=present,
        rounds=rounds,
        key=k_run,
    )
    scores = rows.to(torch.float64) @ total / population.update_norm
    bound = one_run_bound(scores, present, delta=delta, confidence=confidence, grid=grid)
    details = {
        **bound,
        "canaries": m,
        "included": int(present.sum()),
        "rounds": int(rounds),
        "num_clients": population.num_clients,
        "dim": population.dim,
        "canary_examples": population.canary_examples,
        "honest_examples": population.honest_examples,
    }
    return AuditResult(
        method="one-run",
        epsilon=float(bound["epsilon"]),
        confidence=float(confidence),
        delta=float(delta),
        observed="released model",
        details=details,
    )
