"""The privacy group: which DP mechanisms go around the server chain, their noise, and ε.

``privacy.mechanism`` is ``none``, ``central``, ``local`` or ``dpsgd``:

* ``central`` (user-level DP on the released model, DP-FedAvg, McMahan et al. 2018): the chain
  is clip → uniform weights → the fixed-denominator mean over the expected ``q·N`` clients
  (``reducer``, replacing a plain mean) → Gaussian noise ``z·C/(q·N)``; clients are
  Poisson-sampled at rate ``q = clients per round / clients`` and the round runs even when
  nobody replied (quorum 0), as the analysis assumes; ε from :mod:`privacy.accounting`, one
  subsampled Gaussian step per round. ``privacy=central_adaptive`` uses adaptive clipping
  (Andrew et al. 2021) whose clip-count query shares the same total ``z``;
* ``ftrl`` (user level, DP-FTRL with tree aggregation, Kairouz et al. 2021): the same clipped
  fixed-denominator mean, then tree-aggregation noise (:class:`privacy.mechanisms.TreeNoise`);
  no sampling assumed (any sampling, quorum 0): ε from the tree's sensitivity for the clients
  actually asked (:class:`privacy.tree_accounting.TreeAccountant`); :meth:`Privacy.epsilon` is
  the worst case, a client asked every round;
* ``local`` (each client noises its own update): per client, one Gaussian (or Laplace)
  release per round; Gaussian releases compose exactly as Gaussian DP (``T`` releases at
  noise ``z`` are one at ``z / √T``), Laplace ones by basic composition (``T · 2 / z``);
* ``dpsgd`` (client DP-SGD, example level): ``privacy.dp_sgd`` (a ``privacy.dpsgd.DPSGD``)
  goes into ``ClientConfig.dp_sgd``; per client, every local step is a subsampled Gaussian
  step at rate ``batch_size / local examples``. :meth:`Privacy.epsilon` is the worst case (a
  client that trains every round); the run's ledger (``record["privacy_budget"]``) is exact.

``target_epsilon`` with ``calibrate: true`` calibrates the noise multiplier so that
``rounds`` rounds spend at most that ε; with ``calibrate: false`` the noise multiplier stays
and the run stops before the round that would exceed the target (``central`` and ``dpsgd``:
their accountant, :mod:`privacy.budget`, rides on ``Strategy.accountant``). Rounds replayed
after a server crash release noise again and count.

Status. Every setting is ``sound`` (the chain is the one whose sensitivity the ε assumes,
:mod:`privacy.mechanisms` proves it and a test checks it) or ``nominal`` (the noise is
calibrated as if it were, but it is not: e.g. a robust reducer or a filter between the
clipping and the noise, whose sensitivity nobody bounded). The record says which and why;
tables mark nominal ε.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import attrs
from omegaconf import DictConfig, OmegaConf

MECHANISMS = ("none", "central", "local", "dpsgd", "ftrl")
EVERY_ROUND = ("central", "ftrl")  # mechanisms whose chain must run (release) every round
STATUSES = ("none", "sound", "nominal")


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
    accountant_kind: str = "rdp"
    sample_rate: float | None = None
    kind: str = "gaussian"
    target_epsilon: float | None = None
    dp_sgd: dict | None = None  # dpsgd: the DPSGD node for ClientConfig.dp_sgd
    client_steps: tuple[tuple[float, int], ...] = ()  # dpsgd: distinct (rate, steps per round)
    reducer: dict | None = None  # central: the DP reducer that replaces a plain mean
    status: str = "none"  # none | sound | nominal (set by :func:`with_chain_status`)
    status_reason: str = ""
    sampling: str | None = None  # central: "poisson"
    restart_every: int | None = None  # ftrl: a new tree every k rounds
    alerts: tuple[float, ...] = (0.5, 0.8, 1.0)  # budget fractions that alert

    @property
    def sound(self) -> bool:
        return self.status == "sound"

    def accountant(self) -> Any:
        """The run's privacy accountant (``privacy.budget``) for ``Strategy.accountant``, or
        ``None`` (no DP, or local DP, whose ε is per release and needs no ledger)."""
        if self.mechanism == "central":
            from privacy.budget import CentralDPAccountant

            return CentralDPAccountant(
                noise_multiplier=self.noise_multiplier,
                delta=self.delta,
                target_epsilon=self.target_epsilon,
                accountant=self.accountant_kind,
                alerts=self.alerts,
            )
        if self.mechanism == "ftrl":
            from privacy.tree_accounting import TreeAccountant

            return TreeAccountant(
                noise_multiplier=self.noise_multiplier,
                delta=self.delta,
                target_epsilon=self.target_epsilon,
                restart_every=self.restart_every,
                accountant=self.accountant_kind,
                alerts=self.alerts,
            )
        if self.mechanism == "dpsgd":
            from privacy.budget import DPSGDAccountant

            return DPSGDAccountant(
                delta=self.delta,
                target_epsilon=self.target_epsilon,
                accountant=self.accountant_kind,
                alerts=self.alerts,
            )
        return None

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
                accountant=self.accountant_kind,
            )
        if self.mechanism == "ftrl":
            from privacy.tree_accounting import ftrl_epsilon

            return ftrl_epsilon(
                z,
                releases,
                "every_round",
                self.delta,
                restart_every=self.restart_every,
                accountant=self.accountant_kind,
            )
        if self.mechanism == "dpsgd":
            return dpsgd_worst_epsilon(
                z, self.client_steps, releases, self.delta, self.accountant_kind
            )
        return local_epsilon(z, releases, self.kind, self.delta)

    def summary(self, releases: int) -> dict[str, Any]:
        """The ``privacy`` section of a results record."""
        if self.mechanism == "none":
            return {"mechanism": "none", "epsilon": None}
        eps = self.epsilon(releases)
        return {
            "mechanism": self.mechanism,
            "status": self.status,
            "status_reason": self.status_reason,
            "sampling": self.sampling,
            "epsilon": eps if eps is not None and math.isfinite(eps) else None,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "sample_rate": self.sample_rate,
            "releases": releases,
            "accountant": self.kind if self.mechanism == "local" else self.accountant_kind,
            "target_epsilon": self.target_epsilon,
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


def dpsgd_worst_epsilon(
    noise_multiplier: float,
    client_steps: tuple[tuple[float, int], ...],
    releases: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε of client DP-SGD after ``releases`` rounds for the worst client, assuming it trains
    in every round: the largest over ``(rate, steps per round)`` of ``rate``-subsampled
    Gaussian steps, ``steps · releases`` of them."""
    from privacy.accounting import epsilon

    return max(
        (
            epsilon(
                noise_multiplier=noise_multiplier,
                sample_rate=q,
                steps=s * releases,
                delta=delta,
                accountant=accountant,
            )
            for q, s in client_steps
        ),
        default=0.0,
    )


def dpsgd_client_steps(
    client: Any, batch_size: int, sizes: list[int]
) -> tuple[tuple[float, int], ...]:
    """The distinct ``(Poisson rate, local steps per round)`` of clients with ``sizes``
    examples under DP-SGD with expected batch ``batch_size`` and the ``client`` config."""
    from fedkit.client import num_steps
    from privacy.dpsgd import DPSGD

    cfg = attrs.evolve(client, dp_sgd=DPSGD(1.0, 1.0, batch_size))
    return tuple(
        sorted({(min(1.0, batch_size / n), num_steps(n, cfg.work, cfg)) for n in sizes if n > 0})
    )


def _noise_multiplier(
    p: DictConfig, rounds: int, rate: float, client_steps: tuple[tuple[float, int], ...] = ()
) -> float:
    target = p.get("target_epsilon")
    if target is None or not p.get("calibrate", True):
        return float(p.noise_multiplier)
    if p.mechanism == "dpsgd":
        from privacy.accounting import calibrate

        acc, delta = str(p.get("accountant", "rdp")), float(p.delta)

        def for_client(q: float, s: int) -> float:
            return calibrate(
                target_epsilon=float(target),
                delta=delta,
                sample_rate=q,
                steps=s * rounds,
                accountant=acc,
            )

        # the client spending most at the configured noise decides; check the others
        worst = max(
            client_steps,
            key=lambda qs: dpsgd_worst_epsilon(
                float(p.noise_multiplier), (qs,), rounds, delta, acc
            ),
        )
        z = for_client(*worst)
        if dpsgd_worst_epsilon(z, client_steps, rounds, delta, acc) > float(target):
            z = max(for_client(q, s) for q, s in client_steps)
        return z
    if p.mechanism == "ftrl":
        from privacy.tree_accounting import calibrate_ftrl

        return calibrate_ftrl(
            float(target),
            rounds,
            "every_round",
            float(p.delta),
            restart_every=p.get("restart_every"),
        )
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
    for name in ("expected_clients", "expected_weight"):
        if name in node and node[name] is None:
            node = {**node, name: per_round}
    return node


def with_chain_status(privacy: Privacy, components: list[Any]) -> tuple[Privacy, list[Any]]:
    """``privacy`` with its status for the server ``components`` (the reducer part, server
    transforms excluded), and the components to use: for ``central``, a lone plain mean is
    replaced by the DP reducer (sound); anything else stays and makes the ε nominal."""
    from fedkit.aggregators import Mean
    from fedkit.core.components import Role

    if privacy.mechanism == "none":
        return privacy, components
    if privacy.mechanism in ("local", "dpsgd"):
        # the clipping and noise happen per client (local: the LocalDP transform first in the
        # chain; dpsgd: in the client's training); what the server does after is post-processing
        reason = (
            "per-client clip and noise before anything else; the server chain is post-processing"
            if privacy.mechanism == "local"
            else "per-example clipping and noise in every client's local steps"
        )
        return attrs.evolve(privacy, status="sound", status_reason=reason), components
    cut = len(components)
    while cut > 0 and getattr(components[cut - 1], "role", None) is Role.SERVER:
        cut -= 1
    head, tail = components[:cut], components[cut:]
    if len(head) == 1 and type(head[0]) is Mean and privacy.reducer is not None:
        from experiments.build import make

        reason = (
            "clip, uniform weights, fixed-denominator mean over the expected clients, "
            "Gaussian noise; Poisson client sampling (McMahan et al. 2018)"
            if privacy.mechanism == "central"
            else "clip, uniform weights, fixed-denominator mean, tree-aggregation noise "
            "(Kairouz et al. 2021); ε exact for the clients asked, no sampling assumed"
        )
        return (
            attrs.evolve(privacy, status="sound", status_reason=reason),
            [make(privacy.reducer), *tail],
        )
    names = ", ".join(type(c).__name__ for c in head) or "nothing"
    if not privacy.post:
        raise ValueError(
            f"this central DP setting adds its noise in its own reducer ({privacy.reducer}), "
            f"which replaces a plain mean: use server=mean, not {names}"
        )
    reason = (
        f"the server chain between clipping and noise ({names}) is not the fixed-denominator "
        "mean: its sensitivity is not bounded, the ε is the noise's nominal one"
    )
    return attrs.evolve(privacy, status="nominal", status_reason=reason), components


def resolve(
    cfg: DictConfig,
    *,
    per_round: int,
    total: int,
    client: Any = None,
    sizes: list[int] | None = None,
) -> Privacy:
    """The privacy setting of ``cfg`` for ``per_round`` of ``total`` clients per round;
    ``dpsgd`` also needs the ``client`` config and the clients' example counts ``sizes``."""
    p = cfg.get("privacy")
    if p is None:
        return Privacy()
    mechanism = str(p.get("mechanism", "none"))
    if mechanism not in MECHANISMS:
        raise ValueError(f"privacy.mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    cfg = copy.deepcopy(cfg)  # the calibrated noise goes into a copy, read by interpolation
    rate = per_round / total
    steps = ()
    if mechanism == "dpsgd":
        if client is None or not sizes:
            raise ValueError("privacy=dpsgd needs the client config and the clients' sizes")
        steps = dpsgd_client_steps(client, int(p.batch_size), list(sizes))
    z = None
    if mechanism != "none":
        z = _noise_multiplier(cfg.privacy, int(cfg.rounds), rate, steps)
        cfg.privacy.noise_multiplier = z
    nodes = OmegaConf.to_container(cfg.privacy, resolve=True)
    return Privacy(
        mechanism=mechanism,
        pre=tuple(_fill_expected_clients(n, per_round) for n in nodes.get("pre") or ()),
        post=tuple(_fill_expected_clients(n, per_round) for n in nodes.get("post") or ()),
        noise_multiplier=z,
        clip_norm=None if mechanism == "none" else float(nodes["clip_norm"]),
        delta=None if mechanism == "none" else float(nodes["delta"]),
        accountant_kind=str(nodes.get("accountant", "rdp")),
        sample_rate=rate if mechanism == "central" else 1.0 if mechanism == "local" else None,
        reducer=_fill_expected_clients(nodes["reducer"], per_round)
        if mechanism in EVERY_ROUND and nodes.get("reducer")
        else None,
        restart_every=None if nodes.get("restart_every") is None else int(nodes["restart_every"]),
        sampling="poisson" if mechanism == "central" else None,
        alerts=tuple(float(f) for f in nodes.get("alerts") or (0.5, 0.8, 1.0)),
        kind=str(nodes.get("kind", "gaussian")),
        target_epsilon=None
        if nodes.get("target_epsilon") is None
        else float(nodes["target_epsilon"]),
        dp_sgd=nodes.get("dp_sgd") if mechanism == "dpsgd" else None,
        client_steps=steps,
    )
