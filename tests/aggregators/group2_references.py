"""Plain NumPy reference implementations (loops over subsets, dense covariances) that the
group-2 kernels are checked against. Test code only."""

from __future__ import annotations

import itertools

import numpy as np


def mda_reference(x: np.ndarray, w: np.ndarray, f: int) -> tuple[np.ndarray, int]:
    """Reference: every subset of n - f rows; the mean of the weighted means of the subsets
    tied at the smallest diameter, and how many were tied."""
    n = len(x)
    dist = np.linalg.norm(x[:, None] - x[None], axis=2)
    diam = {s: dist[np.ix_(s, s)].max() for s in itertools.combinations(range(n), n - f)}
    low = min(diam.values())
    tied = [list(s) for s, v in diam.items() if v == low]
    return np.mean([w[s] @ x[s] / w[s].sum() for s in tied], axis=0), len(tied)


def smea_reference(x: np.ndarray, w: np.ndarray, f: int) -> np.ndarray:
    """Reference: dense covariance of every subset, exact top eigenvalue; the mean of the
    weighted (by ``w``) means of the subsets tied at the minimum."""
    n = len(x)
    scored = []
    for s in itertools.combinations(range(n), n - f):
        s = list(s)
        y = x[s] - x[s].mean(axis=0)
        scored.append((np.linalg.eigvalsh(y.T @ y / len(s))[-1], w[s] @ x[s] / w[s].sum()))
    low = min(v for v, _ in scored)
    return np.mean([mu for v, mu in scored if v <= low * (1 + 1e-12) + 1e-300], axis=0)


def caf_reference(x: np.ndarray, w: np.ndarray, f: int, tau_over: str) -> np.ndarray:
    """The CAF loop with a dense d x d covariance and an exact eigensolver; the chosen
    masses then average the rows with the client weights ``w``. ``tau_over``: "live" = max
    tau over rows with mass (fedkit), "all" = over every row (ByzFL)."""
    n = len(x)
    c = np.ones(n)
    best, best_lam = c, np.inf
    while c.sum() > n - 2 * f:
        p = c / c.sum()
        mu = p @ x
        y = x - mu
        evals, evecs = np.linalg.eigh((y * p[:, None]).T @ y)
        if evals[-1] < best_lam:
            best, best_lam = c, evals[-1]
        tau = (y @ evecs[:, -1]) ** 2
        live = c > 0
        top = tau[live].max() if tau_over == "live" else tau.max()
        c = np.where(live, c * (1 - tau / top), c) if tau_over == "live" else c * (1 - tau / top)
    return (w * best) @ x / (w * best).sum()
