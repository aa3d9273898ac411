"""Statistical lower bounds on ε from an auditor's guesses: one-run and threshold tests.

* :func:`one_run_p_value` / :func:`one_run_epsilon`: ``m`` canaries, each included with
  probability ½; an auditor makes ``r`` guesses (abstaining on the rest), ``v`` of them right.
  Under (ε, δ)-DP the chance of ``≥ v`` right is at most
  ``P[B ≥ v] + 2mδ · max_{1≤i≤v} P[v−i ≤ B < v] / i`` with ``B ~ Binomial(r, e^ε/(1+e^ε))``
  (Steinke, Nasr & Jagielski 2023, Section 5 and the numerical procedure of Appendix D); the
  bound is the largest ε whose p-value is below β, found by bisection as in that appendix.
* :func:`clopper_pearson`: exact one-sided binomial confidence bounds (Clopper & Pearson 1934).
* :func:`rates_epsilon`: ``log((TPR − δ) / FPR)``, what a test with those rates proves of any
  (ε, δ)-DP mechanism (Kairouz, Oh & Viswanath 2015; Jagielski et al. 2020).
* :func:`threshold_epsilon`: the many-run bound from the scores of runs with and without the
  canary: the threshold and direction are chosen on one part of the runs, the bound is the
  Clopper–Pearson one on the rest (Nasr et al. 2021 use the same test on all thresholds).
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch
from scipy.special import expit
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from fedkit.core.keys import Key, permutation, split


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_level(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return v


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 <= d < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta!r}")
    return d


def _check_guesses(canaries: int, guesses: int, correct: int) -> tuple[int, int, int]:
    m = _check_count("canaries", canaries)
    r = _check_count("guesses", guesses)
    v = _check_count("correct", correct)
    if not v <= r <= m:
        raise ValueError(
            f"need correct <= guesses <= canaries, got correct={v}, guesses={r}, canaries={m}"
        )
    return m, r, v


def one_run_p_value(
    *, canaries: int, guesses: int, correct: int, epsilon: float, delta: float
) -> float:
    """The p-value of ``correct`` right guesses out of ``guesses`` (``canaries`` in all, each
    included with probability ½) under the hypothesis that the mechanism is
    ``(epsilon, delta)``-DP: ``P[B ≥ v] + 2mδα`` with ``B ~ Binomial(r, e^ε/(1+e^ε))`` and
    ``α = max_{1≤i≤v} P[v−i ≤ B < v] / i``, capped at 1.

    (Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run, Section 5
    and Appendix D.)
    """
    m, r, v = _check_guesses(canaries, guesses, correct)
    eps = float(epsilon)
    if not (eps >= 0.0 and math.isfinite(eps)):
        raise ValueError(f"epsilon must be a finite non-negative number, got {epsilon!r}")
    d = _check_delta(delta)
    q = float(expit(eps))  # the accuracy of ε-DP randomized response
    tail = float(binom.sf(v - 1, r, q))  # P[B >= v]
    if d == 0.0 or v == 0:
        return min(tail, 1.0)
    below = binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
    alpha = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * d * alpha, 1.0)


def one_run_epsilon(
    *,
    canaries: int,
    guesses: int,
    correct: int,
    delta: float,
    beta: float,
    tolerance: float = 1e-6,
) -> float:
    """The ε lower bound at confidence ``1 − beta``: the largest ε (to ``tolerance``, rounded
    down) whose :func:`one_run_p_value` is below ``beta``; 0 when even ε = 0 is not rejected.

    (Steinke, Nasr & Jagielski 2023, Privacy Auditing with One (1) Training Run, Appendix D.)
    """
    b = _check_level("beta", beta)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")

    def rejected(eps: float) -> bool:
        p = one_run_p_value(
            canaries=canaries, guesses=guesses, correct=correct, epsilon=eps, delta=delta
        )
        return p < b

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):  # v correct of r caps the bound (p-value ≥ q^r), so this ends
        lo, hi = hi, hi + 1.0
    while hi - lo > tolerance:
        mid = (lo + hi) / 2.0
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def clopper_pearson(successes: int, trials: int, *, alpha: float) -> tuple[float, float]:
    """Exact one-sided bounds ``(lower, upper)`` on a binomial rate from ``successes`` out of
    ``trials``: each holds with probability at least ``1 − alpha`` (both together, ``1 − 2α``).

    (Clopper & Pearson 1934, The Use of Confidence or Fiducial Limits Illustrated in the Case
    of the Binomial.)
    """
    k = _check_count("successes", successes)
    n = _check_count("trials", trials)
    if k > n:
        raise ValueError(f"successes must be at most trials, got {k} > {n}")
    lo, hi = clopper_pearson_bounds(np.array([k]), n, _check_level("alpha", alpha))
    return float(lo[0]), float(hi[0])


def clopper_pearson_bounds(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`clopper_pearson` over success counts ``k`` out of ``n`` (no checks):
    ``(lower, upper)`` arrays."""
    k = np.asarray(k, dtype=np.float64)
    if n == 0:
        return np.zeros_like(k), np.ones_like(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta_dist.ppf(alpha, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta_dist.ppf(1.0 - alpha, k + 1, n - k), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def rates_epsilon(tpr: float, fpr: float, delta: float) -> float:
    """``log((tpr − δ) / fpr)``, or 0 when that is not positive: an (ε, δ)-DP mechanism has
    ``TPR ≤ e^ε FPR + δ`` for every test, so true rates imply this ε.

    (Kairouz, Oh & Viswanath 2015, The Composition Theorem for Differential Privacy.)
    """
    d = _check_delta(delta)
    for name, value in (("tpr", tpr), ("fpr", fpr)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    top = float(tpr) - d
    if top <= 0.0:
        return 0.0
    if float(fpr) <= 0.0:
        return math.inf
    return max(0.0, math.log(top / float(fpr)))


@attrs.frozen
class ThresholdTest:
    """A threshold test and what it proves. The test says "``favours``" (``"in"``: the run
    had the canary, ``"out"``: it had not) when the score lies ``region`` (``"above"``:
    ``>= threshold``, ``"below"``: ``<`` it); on the held-out runs it did so for ``hits`` of
    the ``runs`` of the favoured kind and for ``false_alarms`` of the ``other_runs``;
    ``epsilon`` is the lower bound at ``confidence``."""

    threshold: float
    region: str
    favours: str
    hits: int
    favoured_runs: int
    false_alarms: int
    other_runs: int
    tpr_lower: float
    fpr_upper: float
    epsilon: float
    confidence: float


def _bounds(hits, runs, alarms, other_runs, alpha, delta):
    """Vectorised ε lower bounds of tests with ``hits`` of ``runs`` and ``alarms`` of
    ``other_runs``, each rate bounded at level ``alpha``."""
    tpr_lo, _ = clopper_pearson_bounds(hits, runs, alpha)
    _, fpr_hi = clopper_pearson_bounds(alarms, other_runs, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.log(np.maximum(tpr_lo - delta, 0.0) / fpr_hi)
    return np.maximum(np.nan_to_num(eps, nan=0.0, neginf=0.0), 0.0), tpr_lo, fpr_hi


def _tests(scores_in: np.ndarray, scores_out: np.ndarray, thresholds: np.ndarray) -> dict:
    """For every (region, favoured kind): per threshold, the favoured runs in the region and
    their number, the other runs in the region and their number."""
    s_in, s_out = np.sort(scores_in), np.sort(scores_out)
    n_in, n_out = len(s_in), len(s_out)
    above_in = n_in - np.searchsorted(s_in, thresholds, side="left")
    above_out = n_out - np.searchsorted(s_out, thresholds, side="left")
    below_in, below_out = n_in - above_in, n_out - above_out
    return {
        ("above", "in"): (above_in, n_in, above_out, n_out),
        ("below", "in"): (below_in, n_in, below_out, n_out),
        ("above", "out"): (above_out, n_out, above_in, n_in),
        ("below", "out"): (below_out, n_out, below_in, n_in),
    }


def threshold_epsilon(
    scores_in,
    scores_out,
    *,
    delta: float,
    beta: float,
    key: Key,
    selection: float = 0.5,
) -> ThresholdTest:
    """The many-run ε lower bound at confidence ``1 − beta`` from the canary's scores in runs
    with it (``scores_in``) and without it (``scores_out``).

    Add/remove DP bounds both ratios, ``P_in[S] ≤ e^ε P_out[S] + δ`` and
    ``P_out[S] ≤ e^ε P_in[S] + δ``, for every set ``S``; the tests here are the sets
    ``score ≥ τ`` and ``score < τ`` with either ratio. A keyed ``selection`` fraction of each
    group of runs picks the threshold, set and ratio predicted to prove most (from add-one
    smoothed rates, so that no extreme threshold wins by chance); the other runs,
    not looked at before, give Clopper–Pearson bounds ``TPR ≥ TPR_lo`` and ``FPR ≤ FPR_hi``
    at level ``beta / 2`` each, so both hold with probability ``1 − beta`` and then
    ``ε ≥ log((TPR_lo − δ) / FPR_hi)`` for every (ε, δ)-DP mechanism.

    (Jagielski, Ullman & Oprea 2020, Auditing Differentially Private Machine Learning: How
    Private is Private SGD?; Nasr et al. 2021, Adversary Instantiation: Lower Bounds for
    Differentially Private Machine Learning.)
    """
    d = _check_delta(delta)
    b = _check_level("beta", beta)
    s = _check_level("selection", selection)
    s_in = torch.as_tensor(scores_in, dtype=torch.float64).reshape(-1).numpy()
    s_out = torch.as_tensor(scores_out, dtype=torch.float64).reshape(-1).numpy()
    if not (np.all(np.isfinite(s_in)) and np.all(np.isfinite(s_out))):
        raise ValueError("scores_in and scores_out must be finite")
    if min(len(s_in), len(s_out)) < 4:
        raise ValueError(
            f"need at least 4 runs with and 4 without the canary, got {len(s_in)} and {len(s_out)}"
        )
    k_in, k_out = split(key, 2)
    p_in, p_out = permutation(k_in, len(s_in)).numpy(), permutation(k_out, len(s_out)).numpy()
    cut_in = min(max(1, round(s * len(s_in))), len(s_in) - 1)
    cut_out = min(max(1, round(s * len(s_out))), len(s_out) - 1)
    pick_in, eval_in = s_in[p_in[:cut_in]], s_in[p_in[cut_in:]]
    pick_out, eval_out = s_out[p_out[:cut_out]], s_out[p_out[cut_out:]]

    candidates = np.unique(np.concatenate([pick_in, pick_out]))
    n_eval = {"in": len(s_in) - cut_in, "out": len(s_out) - cut_out}
    best = (-1.0, float(candidates[0]), ("above", "in"))
    for which, (hits, runs, alarms, other) in _tests(pick_in, pick_out, candidates).items():
        # predict what each test would prove on the held-out runs, from add-one smoothed
        # rates (raw rates favour the extreme thresholds that overfit the selection runs)
        favoured, rest = n_eval[which[1]], n_eval["out" if which[1] == "in" else "in"]
        tpr, fpr = (hits + 1) / (runs + 2), (alarms + 1) / (other + 2)
        eps, _, _ = _bounds(tpr * favoured, favoured, fpr * rest, rest, b / 2, d)
        i = int(np.argmax(eps))
        if eps[i] > best[0]:
            best = (float(eps[i]), float(candidates[i]), which)
    _, threshold, which = best
    hits, runs, alarms, other = _tests(eval_in, eval_out, np.array([threshold]))[which]
    eps, tpr_lo, fpr_hi = _bounds(hits, runs, alarms, other, b / 2, d)
    return ThresholdTest(
        threshold=threshold,
        region=which[0],
        favours=which[1],
        hits=int(hits[0]),
        favoured_runs=int(runs),
        false_alarms=int(alarms[0]),
        other_runs=int(other),
        tpr_lower=float(tpr_lo[0]),
        fpr_upper=float(fpr_hi[0]),
        epsilon=float(eps[0]),
        confidence=1.0 - b,
    )
