"""The privacy group: which DP mechanisms go around the server chain, their noise, and ε.

``privacy.mechanism`` is ``none``, ``central`` or ``local``:

* ``central`` (user-level DP on the released model): one Poisson-subsampled Gaussian step per
  round with rate ``q = clients per round / clients``; ε from :mod:`privacy.accounting`;
* ``local`` (each client noises its own update): per client, one Gaussian (or Laplace)
  release per round; Gaussian releases compose exactly as Gaussian DP (``T`` releases at
  noise ``z`` are one at ``z / √T``), Laplace ones by basic composition (``T · 2 / z``).

With ``target_epsilon`` set, the noise multiplier is calibrated so that ``rounds`` rounds
spend at most that ε. Rounds replayed after a server crash release noise again and count.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import attrs
from omegaconf import DictConfig, OmegaConf

MECHANISMS = ("none", "central", "local")


@attrs.frozen
class Privacy:
    """The resolved privacy setting: component nodes to instantiate (``pre`` before the
    server chain, ``post`` right after its reducer) and what the accounting needs."""

    mechanism: str = "none"
    pre: tuple[dict, ...] = ()
    post: tuple[dict, ...] = ()
    noise_multiplier: float | None = None
    clip_norm: float | None = None
    delta: float | None = None
    accountant: str = "rdp"
    sample_rate: float | None = None
    kind: str = "gaussian"

    def epsilon(self, releases: int) -> float | None:
        """ε after ``releases`` rounds (``None`` without DP)."""
        if self.mechanism == "none":
            return None
        if releases <= 0:
            return 0.0
        z = float(self.noise_multiplier)
        if self.mechanism == "central":
            from privacy.accounting import epsilon

            return epsilon(
                noise_multiplier=z,
                sample_rate=self.sample_rate,
                steps=releases,
                delta=self.delta,
                accountant=self.accountant,
            )
        return local_epsilon(z, releases, self.kind, self.delta)

    def summary(self, releases: int) -> dict[str, Any]:
        """The ``privacy`` section of a results record."""
        if self.mechanism == "none":
            return {"mechanism": "none", "epsilon": None}
        eps = self.epsilon(releases)
        return {
            "mechanism": self.mechanism,
            "epsilon": eps if eps is not None and math.isfinite(eps) else None,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "sample_rate": self.sample_rate,
            "releases": releases,
            "accountant": self.accountant if self.mechanism == "central" else self.kind,
        }


def local_epsilon(noise_multiplier: float, releases: int, kind: str, delta: float) -> float:
    """ε of ``releases`` local-DP releases of one client at ``noise_multiplier``: Gaussian
    releases compose as Gaussian DP (``μ = 2√T / z``), Laplace ones add up.

    (Dong, Roth & Su 2022, Gaussian Differential Privacy; Dwork & Roth 2014, The Algorithmic
    Foundations of Differential Privacy.)
    """
    from privacy.mechanisms import local_dp_epsilon

    if kind == "laplace":
        return releases * local_dp_epsilon(noise_multiplier, "laplace")
    return local_dp_epsilon(noise_multiplier / math.sqrt(releases), "gaussian", delta)


def calibrate_local(target: float, releases: int, kind: str, delta: float) -> float:
    """The smallest noise multiplier (to a relative 1e-9, by bisection on a log scale) whose
    ``releases`` local releases spend at most ``target``."""
    if kind == "laplace":
        return 2.0 * releases / target
    lo, hi = 1e-3, 1.0
    while local_epsilon(hi, releases, kind, delta) > target:
        lo, hi = hi, hi * 2.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if local_epsilon(mid, releases, kind, delta) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _noise_multiplier(p: DictConfig, rounds: int, rate: float) -> float:
    target = p.get("target_epsilon")
    if target is None:
        return float(p.noise_multiplier)
    if p.mechanism == "central":
        from privacy.accounting import calibrate

        return calibrate(
            target_epsilon=float(target),
            delta=float(p.delta),
            sample_rate=rate,
            steps=rounds,
            accountant=str(p.get("accountant", "rdp")),
        )
    return calibrate_local(float(target), rounds, str(p.get("kind", "gaussian")), float(p.delta))


def _fill_expected_clients(node: dict, per_round: int) -> dict:
    if "expected_clients" in node and node["expected_clients"] is None:
        return {**node, "expected_clients": per_round}
    return node


def resolve(cfg: DictConfig, *, per_round: int, total: int) -> Privacy:
    """The privacy setting of ``cfg`` for ``per_round`` of ``total`` clients per round."""
    p = cfg.get("privacy")
    if p is None:
        return Privacy()
    mechanism = str(p.get("mechanism", "none"))
    if mechanism not in MECHANISMS:
        raise ValueError(f"privacy.mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    cfg = copy.deepcopy(cfg)  # the calibrated noise goes into a copy, read by interpolation
    rate = per_round / total
    z = None
    if mechanism != "none":
        z = _noise_multiplier(cfg.privacy, int(cfg.rounds), rate)
        cfg.privacy.noise_multiplier = z
    nodes = OmegaConf.to_container(cfg.privacy, resolve=True)
    return Privacy(
        mechanism=mechanism,
        pre=tuple(_fill_expected_clients(n, per_round) for n in nodes.get("pre") or ()),
        post=tuple(_fill_expected_clients(n, per_round) for n in nodes.get("post") or ()),
        noise_multiplier=z,
        clip_norm=None if mechanism == "none" else float(nodes["clip_norm"]),
        delta=None if mechanism == "none" else float(nodes["delta"]),
        accountant=str(nodes.get("accountant", "rdp")),
        sample_rate=rate if mechanism == "central" else 1.0 if mechanism == "local" else None,
        kind=str(nodes.get("kind", "gaussian")),
    )
