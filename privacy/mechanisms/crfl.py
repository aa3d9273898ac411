"""CRFL: clip and noise the global model every round; certify predictions by smoothing it.

Training (:class:`CRFL`, a server transform): after aggregation the server clips the norm
of the new global *model* to ``ρ`` and adds ``N(0, σ² I)`` to its parameters. Test time
(:func:`crfl_certify`): the final model is smoothed in parameter space — ``M`` noisy copies
vote on each test example — and each prediction gets a certified radius: the largest
magnitude ``‖δ‖`` of a backdoor trigger, planted by the attackers at one round with the
attack model of :class:`CRFLBound`, that cannot change it.

Xie, Chen, Chen, Li 2021, "CRFL: Certifiably Robust Federated Learning against Backdoor
Attacks" (ICML).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import attrs
import torch

from fedkit.core.components import RoundContext, ServerTransform, require_context
from fedkit.core.deprecation import renamed_arguments
from fedkit.core.keys import Key, normal, split
from privacy.mechanisms.clipping import check_non_negative, check_positive

ABSTAIN = -1


def crfl_step(
    aggregate: torch.Tensor,
    *,
    params: torch.Tensor,
    clip_norm: float,
    noise_std: float,
    key: Key | None = None,
) -> torch.Tensor:
    """The server step ``clip(params + aggregate, ρ) + N(0, σ² I) − params`` (``Tensor[d]``).

    ``clip(x, ρ) = x · min(1, ρ / ‖x‖)`` bounds the norm of the whole new model, not of the
    update; the Gaussian noise goes on every parameter. Applying the step (``params +
    step``) gives CRFL's new global model. Computed in float64, returned in the aggregate's
    dtype. ``noise_std = 0`` adds nothing and needs no key.

    Xie, Chen, Chen, Li 2021, "CRFL: Certifiably Robust Federated Learning against Backdoor
    Attacks" (ICML).
    """
    aggregate, params = _check_pair(aggregate, params)
    rho = check_positive("clip_norm", clip_norm)
    sigma = check_non_negative("noise_std", noise_std)
    base = params.to(torch.float64)
    model = base + aggregate.to(torch.float64)
    norm = float(torch.linalg.vector_norm(model))
    if not math.isfinite(norm):
        raise ValueError("crfl_step: the new model holds NaN/Inf")
    if norm > rho:
        model = model * (rho / norm)
    if sigma > 0.0:
        if key is None:
            raise ValueError("crfl_step: noise_std > 0 needs a key")
        model = model + normal(
            key, model.shape, std=sigma, dtype=torch.float64, device=model.device
        )
    return (model - base).to(aggregate.dtype)


def _check_pair(aggregate: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(aggregate, torch.Tensor) or not torch.is_floating_point(aggregate):
        raise TypeError("crfl_step: aggregate must be a floating-point torch.Tensor")
    if aggregate.ndim != 1:
        raise ValueError(f"crfl_step: aggregate must have shape [d], got {tuple(aggregate.shape)}")
    if not isinstance(params, torch.Tensor) or tuple(params.shape) != tuple(aggregate.shape):
        shape = tuple(params.shape) if isinstance(params, torch.Tensor) else type(params).__name__
        raise ValueError(
            f"crfl_step: params (the global model) must be a Tensor of shape "
            f"{tuple(aggregate.shape)}, got {shape}"
        )
    return aggregate, params.to(aggregate.device)


@attrs.frozen
class CRFL(ServerTransform):
    """Server transform for :func:`crfl_step`: ``clip_norm`` is ``ρ``, ``noise_std`` is
    ``σ``; the global model comes from the round's context. From round ``final_round`` on
    the model is clipped but not noised (the paper trains with noise up to round ``T − 1``
    and smooths the final model at test time; ``None``: noise every round). Put it last in
    the chain: a server optimizer after it would move the model off the clipped one.
    ``info``: ``model_norm`` (before clipping) and ``noise_std`` (the σ used this round)."""

    uses_context: ClassVar[bool] = True

    clip_norm: float = attrs.field(converter=float)
    noise_std: float = attrs.field(converter=float)
    final_round: int | None = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        check_positive("CRFL.clip_norm", self.clip_norm)
        check_non_negative("CRFL.noise_std", self.noise_std)
        if self.final_round is not None and (
            isinstance(self.final_round, bool)
            or not isinstance(self.final_round, int)
            or self.final_round < 1
        ):
            raise ValueError(
                f"CRFL.final_round must be an int >= 1 (the last training round) or None, "
                f"got {self.final_round!r}"
            )

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        ctx = require_context(context, "CRFL")
        last = self.final_round is not None and ctx.round >= self.final_round
        sigma = 0.0 if last else self.noise_std
        step = crfl_step(
            updates, params=ctx.params, clip_norm=self.clip_norm, noise_std=sigma, key=key
        )
        norm = float(torch.linalg.vector_norm(ctx.params.to(torch.float64) + updates.double()))
        return step, state, {"model_norm": norm, "noise_std": sigma}


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_fraction(name: str, value: object) -> float:
    v = check_positive(name, value)
    if v > 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return v


@renamed_arguments(num_attackers="f")
@attrs.frozen
class CRFLBound:
    """The training run and attack model a CRFL certificate assumes.

    ``noise_std`` (``σ``, the training noise of :class:`CRFL`), ``clip_norm`` (``ρ``),
    ``rounds`` (``T``: the certified model is the one after round ``T``), ``attack_round``
    (``t_adv``, ``1 <= t_adv < T``: the round the attackers poison), ``f`` (``R``: the
    number of attackers, ``f`` as in every robust rule), ``attacker_weight`` (``p_i``: each
    attacker's aggregation weight, one number for all or ``R`` numbers; ``1/N`` for FedAvg
    over ``N`` equal clients), ``local_steps``
    (``τ``: local SGD iterations per round), ``lr`` (``η``: the clients' learning rate),
    ``lipschitz`` (``L_Z``: the bound on how much the loss gradient moves with the input),
    ``scale`` (``γ``: the attackers' update scaling factor) and ``poison_fraction``
    (``q_B / n_B``: the poisoned share of an attacker's batch).
    """

    noise_std: float = attrs.field(converter=float)
    clip_norm: float = attrs.field(converter=float)
    rounds: int = attrs.field()
    attack_round: int = attrs.field()
    attacker_weight: float | tuple[float, ...] = attrs.field()
    local_steps: int = attrs.field()
    lr: float = attrs.field(converter=float)
    lipschitz: float = attrs.field(converter=float)
    poison_fraction: float = attrs.field(converter=float)
    f: int = attrs.field(default=1)
    scale: float = attrs.field(default=1.0, converter=float)

    def __attrs_post_init__(self) -> None:
        check_positive("CRFLBound.noise_std", self.noise_std)
        check_positive("CRFLBound.clip_norm", self.clip_norm)
        _check_int("CRFLBound.rounds", self.rounds, 2)
        _check_int("CRFLBound.attack_round", self.attack_round, 1)
        if self.attack_round >= self.rounds:
            raise ValueError(
                f"CRFLBound.attack_round must be < rounds={self.rounds} (at least one clip and "
                f"noise step after the attack), got {self.attack_round}"
            )
        _check_int("CRFLBound.f", self.f, 1)
        _check_int("CRFLBound.local_steps", self.local_steps, 1)
        check_positive("CRFLBound.lr", self.lr)
        check_positive("CRFLBound.lipschitz", self.lipschitz)
        check_positive("CRFLBound.scale", self.scale)
        _check_fraction("CRFLBound.poison_fraction", self.poison_fraction)
        weights = self.attacker_weights()
        if len(weights) != self.f:
            raise ValueError(
                f"CRFLBound.attacker_weight needs one number or f="
                f"{self.f} numbers, got {len(weights)}"
            )
        for p in weights:
            _check_fraction("CRFLBound.attacker_weight", p)

    def attacker_weights(self) -> tuple[float, ...]:
        """``(p_1, …, p_R)``."""
        w = self.attacker_weight
        if isinstance(w, Sequence) and not isinstance(w, str):
            return tuple(float(p) for p in w)
        return (float(w),) * self.f

    def contraction(self, smoothing_std: float) -> float:
        """``Π_{t=t_adv+1}^{T} (2Φ(ρ/σ_t) − 1)``: ``σ_t = σ`` (training) before round ``T``,
        ``σ_T = smoothing_std`` (the test-time noise) at round ``T``; ``2Φ(x) − 1 =
        erf(x/√2)``."""
        s_t = check_positive("smoothing_std", smoothing_std)
        train = math.erf(self.clip_norm / (self.noise_std * math.sqrt(2.0)))
        last = math.erf(self.clip_norm / (s_t * math.sqrt(2.0)))
        return train ** (self.rounds - 1 - self.attack_round) * last

    def radius(
        self, p_a: torch.Tensor, p_b: torch.Tensor | None = None, *, smoothing_std: float
    ) -> torch.Tensor:
        """Certified radius (float64, like ``p_a``) for a lower bound ``p_a`` on the top
        class's probability and an upper bound ``p_b`` on the runner-up's (default
        ``1 − p_a``); 0 where ``p_a <= p_b``:

            RAD = sqrt( −ln(1 − (√p_A − √p_B)²) · σ²
                        / (2 R Σ_i p_i² · τ² L_Z² γ² η² (q_B/n_B)² · Π_{t=t_adv+1}^{T} (2Φ(ρ/σ_t) − 1)) )

        (the final-round certificate of CRFL, as the authors' certification code computes
        it with ``σ`` the training noise). It grows with ``p_A`` and shrinks with the
        attack's strength (``R``, ``p_i``, ``γ``, ``q_B/n_B``) and with the contraction
        product, which more clip-and-noise rounds after the attack make smaller.
        """
        p_a = torch.as_tensor(p_a, dtype=torch.float64)
        p_b = 1.0 - p_a if p_b is None else torch.as_tensor(p_b, dtype=torch.float64)
        if bool(((p_a < 0) | (p_a > 1) | (p_b < 0) | (p_b > 1)).any()):
            raise ValueError("crfl radius: p_a and p_b must lie in [0, 1]")
        strength = (
            2.0
            * self.f
            * sum(p * p for p in self.attacker_weights())
            * (self.local_steps * self.lipschitz * self.scale * self.lr * self.poison_fraction) ** 2
            * self.contraction(smoothing_std)
        )
        gap = (p_a.sqrt() - p_b.sqrt()).square()
        budget = -torch.log1p(-gap)  # −ln(1 − gap): +inf when p_a = 1, p_b = 0
        rad = torch.sqrt(budget * self.noise_std**2 / strength)
        return torch.where(p_a > p_b, rad, torch.zeros_like(rad))


@attrs.frozen(eq=False)
class Certificate:
    """Per test example: ``predictions`` (int64 ``[m]``, the smoothed model's class,
    ``-1`` = abstain), ``p_a`` (float64 ``[m]``, the Clopper–Pearson lower bound on the top
    class's probability under parameter noise), ``radius`` (float64 ``[m]``, 0 when
    abstaining) and ``counts`` (int64 ``[m, C]``, the votes)."""

    predictions: torch.Tensor
    p_a: torch.Tensor
    radius: torch.Tensor
    counts: torch.Tensor

    def certified_accuracy(self, labels: torch.Tensor, radius_grid) -> torch.Tensor:
        """:func:`certified_accuracy` of this certificate."""
        return certified_accuracy(self.predictions, self.radius, labels, radius_grid)


def crfl_certify(
    predict: Callable[[torch.Tensor], torch.Tensor],
    params: torch.Tensor,
    *,
    num_classes: int,
    smoothing_std: float,
    num_samples: int,
    bound: CRFLBound,
    alpha: float = 0.001,
    selection_samples: int = 0,
    key: Key,
) -> Certificate:
    """Certify the parameter-smoothed predictions of the final model ``params`` (``[d]``).

    ``predict(w) -> Tensor[m]`` gives the class of each of the ``m`` test examples under
    parameters ``w``. It is called on ``num_samples`` noisy copies ``params + N(0, σ_T² I)``
    (``σ_T = smoothing_std``, keys split from ``key``); the smoothed prediction of an
    example is the class most copies vote for (ties: the lower class). ``p_A`` is the
    one-sided Clopper–Pearson lower bound, at level ``alpha``, on that class's probability,
    and ``p_B = 1 − p_A`` bounds every other class. Where ``p_A <= 1/2`` the certificate
    abstains (prediction ``-1``, radius 0); elsewhere the radius is
    :meth:`CRFLBound.radius`. With ``selection_samples = n0 > 0`` the class is chosen on
    ``n0`` separate copies and counted on the ``num_samples`` others (Cohen et al. 2019's
    two-sample procedure, which makes the bound hold exactly at level ``alpha``); with 0, as
    in the CRFL authors' code, the same copies choose and count.

    Xie, Chen, Chen, Li 2021, "CRFL: Certifiably Robust Federated Learning against Backdoor
    Attacks" (ICML); Clopper & Pearson 1934 (Biometrika).
    """
    if not isinstance(params, torch.Tensor) or params.ndim != 1:
        raise ValueError("crfl_certify: params must be a flat Tensor[d]")
    c = _check_int("crfl_certify: num_classes", num_classes, 2)
    sigma = check_positive("crfl_certify: smoothing_std", smoothing_std)
    m_samples = _check_int("crfl_certify: num_samples", num_samples, 1)
    n0 = _check_int("crfl_certify: selection_samples", selection_samples, 0)
    a = check_positive("crfl_certify: alpha", alpha)
    if a >= 1.0:
        raise ValueError(f"crfl_certify: alpha must lie in (0, 1), got {alpha!r}")
    if not isinstance(bound, CRFLBound):
        raise TypeError(f"crfl_certify: bound must be a CRFLBound, got {type(bound).__name__}")
    keys = split(key, n0 + m_samples)
    selection = _votes(predict, params, sigma, keys[:n0], c) if n0 else None
    counts = _votes(predict, params, sigma, keys[n0:], c)
    top = torch.argmax(selection if selection is not None else counts, dim=1)
    k = counts.gather(1, top[:, None]).squeeze(1)
    p_a = clopper_pearson_lower(k, m_samples, alpha=a)
    certified = p_a > 0.5
    radius = bound.radius(p_a, smoothing_std=sigma)
    return Certificate(
        predictions=torch.where(certified, top, torch.full_like(top, ABSTAIN)),
        p_a=p_a,
        radius=torch.where(certified, radius, torch.zeros_like(radius)),
        counts=counts,
    )


def _votes(predict, params, sigma, keys, num_classes) -> torch.Tensor:
    """Votes ``[m, C]`` of ``predict`` over ``params + N(0, σ²I)``, one copy per key."""
    counts = None
    for k in keys:  # one model evaluation per noise sample (not a loop over clients)
        noise = normal(k, params.shape, std=sigma, dtype=torch.float64, device=params.device)
        pred = torch.as_tensor(predict((params.to(torch.float64) + noise).to(params.dtype)))
        if pred.ndim != 1 or pred.dtype.is_floating_point:
            raise ValueError(
                f"crfl_certify: predict must return int labels of shape [m], got "
                f"{pred.dtype} {tuple(pred.shape)}"
            )
        pred = pred.to(torch.int64).cpu()
        if counts is None:
            counts = torch.zeros(pred.shape[0], num_classes, dtype=torch.int64)
        if pred.shape[0] != counts.shape[0] or bool(((pred < 0) | (pred >= num_classes)).any()):
            raise ValueError(
                f"crfl_certify: predict must return {counts.shape[0]} labels in "
                f"[0, {num_classes}) on every call"
            )
        counts[torch.arange(pred.shape[0]), pred] += 1
    return counts


def clopper_pearson_lower(successes: torch.Tensor, trials: int, *, alpha: float) -> torch.Tensor:
    """One-sided Clopper–Pearson lower bounds (float64, like ``successes``), each holding
    with probability at least ``1 − alpha``
    (:func:`privacy.audit.bounds.clopper_pearson_bounds`)."""
    from privacy.audit.bounds import clopper_pearson_bounds  # the audits import the mechanisms

    k = torch.as_tensor(successes, dtype=torch.float64)
    lower, _ = clopper_pearson_bounds(k.numpy(), trials, alpha)
    return torch.as_tensor(lower, dtype=torch.float64)


def certified_accuracy(
    predictions: torch.Tensor, radius: torch.Tensor, labels: torch.Tensor, radius_grid
) -> torch.Tensor:
    """Certified accuracy at each radius ``r`` of ``radius_grid`` (float64 ``[g]``): the
    fraction of examples whose prediction is the label (an abstention never is) and whose
    certified radius is at least ``r``. Non-increasing along an increasing grid."""
    predictions = torch.as_tensor(predictions).to(torch.int64).cpu()
    labels = torch.as_tensor(labels).to(torch.int64).cpu()
    radius = torch.as_tensor(radius, dtype=torch.float64).cpu()
    grid = torch.as_tensor(radius_grid, dtype=torch.float64).reshape(-1)
    if not predictions.shape == labels.shape == radius.shape or predictions.ndim != 1:
        raise ValueError("certified_accuracy: predictions, radius and labels must be [m] alike")
    if predictions.numel() == 0:
        raise ValueError("certified_accuracy: no examples")
    correct = predictions == labels
    return (correct[None, :] & (radius[None, :] >= grid[:, None])).to(torch.float64).mean(dim=1)
