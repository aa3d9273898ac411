"""Auditing local DP per client: the auditor sees each client's noised update.

Local DP promises that any two updates a client could send give close message distributions
(replacement; the clipped updates lie in a ball of diameter ``2C``). A canary therefore sends
its direction ``+u`` when "in" and ``−u`` when "out" (the farthest pair), through the
chain's client-side transforms up to :class:`~privacy.mechanisms.LocalDP`, once per round for
``rounds`` rounds; its score is the summed projection of its messages on ``u``. Changing one
canary's choice changes only its own messages, so both audits below apply with replacement
in place of inclusion.

(Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run; Jagielski,
Ullman & Oprea 2020, Auditing Differentially Private Machine Learning.)
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from fedkit.core.keys import Key, bernoulli, fold_in, split
from privacy.audit.bounds import threshold_epsilon
from privacy.audit.many_run import check_runs
from privacy.audit.one_run import one_run_bound
from privacy.audit.population import canary_updates
from privacy.audit.result import AuditResult
from privacy.audit.server import client_messages


def message_scores(
    strategy,
    directions: torch.Tensor,
    signs: torch.Tensor,
    *,
    rounds: int,
    norm: float,
    examples: int,
    key: Key,
) -> torch.Tensor:
    """``Tensor[n]``: for each row ``u_i`` of ``directions`` sent as ``signs_i · u_i`` for
    ``rounds`` rounds, the summed projection of its messages on ``u_i / norm``."""
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    rows = directions * signs.to(directions.dtype)[:, None]
    total = torch.zeros(directions.shape[0], dtype=torch.float64)
    for t in range(int(rounds)):
        sent = client_messages(strategy, rows, examples=examples, key=fold_in(key, t))
        total += (sent.to(torch.float64) * directions.to(torch.float64)).sum(dim=1) / norm
    return total


def local_one_run_audit(
    strategy,
    *,
    canaries: int,
    rounds: int,
    dim: int,
    norm: float,
    delta: float,
    key: Key,
    confidence: float = 0.95,
    examples: int = 10,
    grid: Sequence[tuple[int, int]] | None = None,
) -> AuditResult:
    """One-run audit of the chain's local DP: ``canaries`` clients, each "in" (sends ``+u``)
    with probability ½ and "out" (sends ``−u``) otherwise."""
    k_rows, k_in, k_run = split(key, 3)
    rows = canary_updates(k_rows, int(canaries), dim, norm=norm)
    included = bernoulli(k_in, 0.5, int(canaries))
    signs = torch.where(included, 1.0, -1.0)
    scores = message_scores(
        strategy, rows, signs, rounds=rounds, norm=norm, examples=examples, key=k_run
    )
    bound = one_run_bound(scores, included, delta=delta, confidence=confidence, grid=grid)
    details = {
        **bound,
        "canaries": int(canaries),
        "included": int(included.sum()),
        "rounds": int(rounds),
        "dim": int(dim),
        "adjacency": "replace (+u vs -u)",
    }
    return AuditResult(
        method="one-run",
        epsilon=float(bound["epsilon"]),
        confidence=float(confidence),
        delta=float(delta),
        observed="client message",
        details=details,
    )


def local_many_run_audit(
    strategy,
    *,
    runs: int,
    rounds: int,
    dim: int,
    norm: float,
    delta: float,
    key: Key,
    confidence: float = 0.95,
    examples: int = 10,
    selection: float = 0.5,
) -> AuditResult:
    """Many-run audit of the chain's local DP: one canary direction sent as ``+u`` in half of
    ``runs`` runs and ``−u`` in the others (the runs are independent rows of one call)."""
    runs = check_runs(runs)
    k_row, k_run, k_split = split(key, 3)
    row = canary_updates(k_row, 1, dim, norm=norm)
    signs = torch.where(torch.arange(runs) % 2 == 0, 1.0, -1.0)
    scores = message_scores(
        strategy,
        row.expand(runs, dim),
        signs,
        rounds=rounds,
        norm=norm,
        examples=examples,
        key=k_run,
    )
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
        "dim": int(dim),
        "adjacency": "replace (+u vs -u)",
        "threshold_choice": f"chosen on {selection:g} of the runs, bound on the rest",
    }
    return AuditResult(
        method="many-run",
        epsilon=test.epsilon,
        confidence=float(confidence),
        delta=float(delta),
        observed="client message",
        details=details,
    )
