"""ε of DP-FTRL with tree aggregation (:mod:`privacy.mechanisms.tree`), user level.

Sensitivity. Inside one tree of ``L`` rounds, round ``t`` releases the node
``(t − lowbit(t), t]``; leaf ``i`` lies in the node of size ``2^h`` that ends at
``⌈i/2^h⌉·2^h`` when ``⌈i/2^h⌉`` is odd and that end is ``≤ L`` (nodes that are right
children are never released: no prefix needs them). A client that took part in the rounds
``P`` moves the node ``n`` by at most ``|n ∩ P|·C/m`` (all its clipped contributions
pointing the same way attain it), so the L2 sensitivity of all released nodes is exactly
``(C/m)·√S`` with ``S = Σ_n |n ∩ P|²`` (:func:`sensitivity_squared`). With node noise
``σ = z·C/m`` the release is ``μ``-Gaussian DP with ``μ = √S / z`` (adaptive composition of
Gaussian mechanisms; Dong, Roth, Su 2022), i.e. the Gaussian mechanism with multiplier
``z / √S``; ε at δ comes from Google's ``dp_accounting``: the exact analytic Gaussian
(``"exact"``; Balle & Wang 2018), its PLD accountant (``"pld"``) or its RDP accountant
(``"rdp"``). One participation per tree gives ``S ≤ ⌈log₂(L+1)⌉`` per tree, which is
``dp_accounting``'s ``SingleEpochTreeAggregationDpEvent`` (tested to agree).

Patterns (:func:`participation_rounds`): ``"every_round"`` (every client in every round: a
10-client fleet), ``"once_per_tree"`` (each client at most once per tree, worst leaf: the
first), an integer ``b`` (a cyclic schedule: the client exactly every ``b``-th round, worst
offset), or an explicit collection of rounds; all exact. For *any* schedule with at least
``b`` rounds between two participations, :class:`MinSeparation` gives a sound upper bound
(each node of ``ℓ`` rounds holds at most ``⌈ℓ/b⌉`` of them); it is not tight, and no cyclic
schedule is the worst case in general (14 rounds, ``b = 11``: cyclic 5, worst 6). :class:`TreeAccountant` uses the realised schedule (the clients the
driver plans each round), which is exact for any sampling: the schedule is drawn from keys,
independently of the data, so ε holds conditionally on it (and needs no amplification).

(Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, Practical and Private (Deep)
Learning without Sampling or Shuffling.)
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Iterable, Iterator

import attrs
import dp_accounting
from dp_accounting import dp_event
from dp_accounting.gaussian_mechanism import get_epsilon_gaussian, get_sigma_gaussian

from fedkit.protocols import RoundSpend

CONVERSIONS = ("exact", "pld", "rdp")
PATTERNS = ("every_round", "once_per_tree")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _restart(value) -> int | None:
    return None if value is None else _positive_int("restart_every", value)


def _delta(value) -> float:
    d = float(value)
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {value!r}")
    return d


def _conversion(value: str) -> str:
    if value not in CONVERSIONS:
        raise ValueError(f"accountant must be one of {CONVERSIONS}, got {value!r}")
    return value


def _alerts(value) -> tuple[float, ...]:
    out = tuple(float(f) for f in value)
    if not all(0.0 < f <= 1.0 for f in out):
        raise ValueError(f"alerts must be budget fractions in (0, 1], got {tuple(value)!r}")
    return out


def segments(rounds: int, restart_every: int | None = None) -> list[tuple[int, int]]:
    """The trees of a run of ``rounds`` rounds as ``(first round − 1, length)``."""
    rounds = _positive_int("rounds", rounds)
    size = rounds if restart_every is None else _positive_int("restart_every", restart_every)
    return [(s, min(size, rounds - s)) for s in range(0, rounds, size)]


def covering_nodes(leaf: int, length: int) -> Iterator[tuple[int, int]]:
    """The released nodes ``(level h, ⌈leaf/2^h⌉)`` of a tree of ``length`` rounds that
    contain round ``leaf`` (1-based in the tree)."""
    h = 0
    while (1 << h) <= length:
        q = -(-leaf // (1 << h))
        if q % 2 == 1 and q << h <= length:
            yield (h, q)
        h += 1


def sensitivity_squared(
    participation: Iterable[int], rounds: int, restart_every: int | None = None
) -> int:
    """``S = Σ_n |n ∩ P|²`` over the released nodes of the run: the squared L2 sensitivity of
    the tree's releases, in units of ``(C/m)²``, for a client in the rounds ``P``
    (1-based, ``≤ rounds``).

    (Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling or
    Shuffling.)
    """
    rounds = _positive_int("rounds", rounds)
    restart_every = _restart(restart_every)
    size = rounds if restart_every is None else restart_every
    counts: dict[tuple[int, int, int], int] = {}
    for r in set(participation):
        if isinstance(r, bool) or int(r) != r or not 1 <= r <= rounds:
            raise ValueError(f"participation rounds must be integers in [1, {rounds}], got {r!r}")
        tree, leaf = divmod(int(r) - 1, size)
        length = min(size, rounds - tree * size)
        for node in covering_nodes(leaf + 1, length):
            counts[(tree, *node)] = counts.get((tree, *node), 0) + 1
    return sum(c * c for c in counts.values())


@attrs.frozen
class MinSeparation:
    """Any schedule with at least ``rounds`` rounds between two participations of a client
    (at most ``max_per_tree`` per tree when set): :func:`worst_sensitivity_squared` then
    bounds ``S`` from above by ``Σ_n min(⌈ℓ_n/b⌉, max_per_tree)²``."""

    rounds: int = attrs.field(converter=lambda v: _positive_int("min_separation", v))
    max_per_tree: int | None = attrs.field(
        default=None, converter=lambda v: None if v is None else _positive_int("max_per_tree", v)
    )


def min_separation_bound(
    rounds: int, separation: MinSeparation, restart_every: int | None = None
) -> int:
    """The upper bound on ``S`` of :class:`MinSeparation` (every released node of ``ℓ``
    rounds counted with ``min(⌈ℓ/b⌉, max_per_tree)`` participations)."""
    total = 0
    for _, length in segments(rounds, restart_every):
        for t in range(1, length + 1):
            c = -(-(t & -t) // separation.rounds)
            if separation.max_per_tree is not None:
                c = min(c, separation.max_per_tree)
            total += c * c
    return total


def participation_rounds(
    pattern: str | int | Iterable[int], rounds: int, restart_every: int | None = None
) -> list[list[int]]:
    """The candidate worst-case schedules of a pattern (ε takes the largest ``S``):
    ``"every_round"``; ``"once_per_tree"`` (the first round of every tree: leaf 1 lies in
    the most released nodes); an int ``b`` (every ``b``-th round, each offset
    ``1..b``); or an explicit collection of rounds."""
    rounds = _positive_int("rounds", rounds)
    if isinstance(pattern, str):
        if pattern == "every_round":
            return [list(range(1, rounds + 1))]
        if pattern == "once_per_tree":
            return [[s + 1 for s, _ in segments(rounds, restart_every)]]
        raise ValueError(
            f"participation must be one of {PATTERNS}, an int period or rounds, got {pattern!r}"
        )
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        b = _positive_int("participation (period)", pattern)
        return [list(range(o, rounds + 1, b)) for o in range(1, min(b, rounds) + 1)]
    return [sorted(set(pattern))]


@functools.lru_cache(maxsize=4096)
def gaussian_epsilon(noise_multiplier: float, delta: float, accountant: str = "exact") -> float:
    """ε at ``delta`` of one Gaussian mechanism with multiplier ``noise_multiplier`` (noise
    std / L2 sensitivity) by ``dp_accounting``: ``"exact"`` (Balle & Wang 2018), ``"pld"``
    or ``"rdp"`` (add/remove adjacency)."""
    z = float(noise_multiplier)
    if not z >= 0.0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
    delta, accountant = _delta(delta), _conversion(accountant)
    if z == 0.0:
        return math.inf
    if math.isinf(z):
        return 0.0
    if accountant == "exact":
        return float(get_epsilon_gaussian(z, delta))
    acc = (
        dp_accounting.pld.PLDAccountant()
        if accountant == "pld"
        else dp_accounting.rdp.RdpAccountant()
    )
    acc.compose(dp_event.GaussianDpEvent(z))
    return float(acc.get_epsilon(delta))


def epsilon_of_sensitivity(
    noise_multiplier: float, sens_squared: float, delta: float, accountant: str = "exact"
) -> float:
    """ε of the tree releases with node multiplier ``z`` and squared sensitivity ``S``:
    the Gaussian mechanism with multiplier ``z / √S`` (0 when ``S = 0``)."""
    z = float(noise_multiplier)
    if not (z >= 0.0 and math.isfinite(z)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier!r}")
    if sens_squared < 0:
        raise ValueError(f"sensitivity squared must be >= 0, got {sens_squared!r}")
    if sens_squared == 0:
        return 0.0
    return gaussian_epsilon(z / math.sqrt(sens_squared), delta, accountant)


def worst_sensitivity_squared(
    participation: str | int | MinSeparation | Iterable[int],
    rounds: int,
    restart_every: int | None = None,
) -> int:
    """The largest ``S`` over the schedules of ``participation`` (:func:`participation_rounds`),
    or the upper bound :func:`min_separation_bound` for a :class:`MinSeparation`."""
    if isinstance(participation, MinSeparation):
        return min_separation_bound(rounds, participation, restart_every)
    return max(
        sensitivity_squared(p, rounds, restart_every)
        for p in participation_rounds(participation, rounds, restart_every)
    )


def ftrl_epsilon(
    noise_multiplier: float,
    rounds: int,
    participation: str | int | MinSeparation | Iterable[int],
    delta: float,
    *,
    restart_every: int | None = None,
    accountant: str = "exact",
) -> float:
    """User-level ε at ``delta`` of ``rounds`` rounds of DP-FTRL with node multiplier
    ``noise_multiplier`` for a client with the given ``participation`` pattern
    (:func:`participation_rounds`), trees restarted every ``restart_every`` rounds.

    (Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling or
    Shuffling.)
    """
    s = worst_sensitivity_squared(participation, rounds, restart_every)
    return epsilon_of_sensitivity(noise_multiplier, s, delta, accountant)


def calibrate_ftrl(
    target_epsilon: float,
    rounds: int,
    participation: str | int | MinSeparation | Iterable[int],
    delta: float,
    *,
    restart_every: int | None = None,
) -> float:
    """The node noise multiplier whose :func:`ftrl_epsilon` (exact conversion) is
    ``target_epsilon``: ``z = √S · σ_Gauss(ε, δ)``."""
    eps = float(target_epsilon)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"target_epsilon must be finite and positive, got {target_epsilon!r}")
    s = worst_sensitivity_squared(participation, rounds, restart_every)
    return math.sqrt(s) * float(get_sigma_gaussian(eps, _delta(delta)))


def dp_accounting_tree_epsilon(
    noise_multiplier: float, tree_length: int, trees: int, delta: float
) -> float:
    """ε from ``dp_accounting``'s own tree event (RDP, one participation per tree, ``trees``
    trees of ``tree_length`` rounds): the reference :func:`ftrl_epsilon` agrees with."""
    acc = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    )
    event = dp_event.SingleEpochTreeAggregationDpEvent(float(noise_multiplier), int(tree_length))
    acc.compose(dp_event.SelfComposedDpEvent(event, int(trees)))
    return float(acc.get_epsilon(_delta(delta)))


@attrs.frozen
class TreeLedger:
    """What :class:`TreeAccountant` keeps: ``rounds`` spent, per client that took part
    (``clients``, sorted ids) its ``S`` so far (``sens``) and its rounds in the current
    tree (``open_rounds``, 1-based in the tree)."""

    rounds: int = 0
    clients: tuple[int, ...] = ()
    sens: tuple[int, ...] = ()
    open_rounds: tuple[tuple[int, ...], ...] = ()

    @property
    def max_sensitivity_squared(self) -> int:
        return max(self.sens, default=0)

    def step(self, clients: Iterable[int], restart_every: int | None) -> TreeLedger:
        """The ledger after one round in which ``clients`` took part."""
        size = _restart(restart_every)
        leaf = self.rounds + 1 if size is None else self.rounds % size + 1
        reset = size is not None and leaf == 1
        lo = leaf - (leaf & -leaf)  # the node released this round is (lo, leaf]
        now = {int(c) for c in clients}
        ids = sorted(set(self.clients) | now)
        index = {c: i for i, c in enumerate(self.clients)}
        sens, opened = [], []
        for c in ids:
            i = index.get(c)
            s, past = (0, ()) if i is None else (self.sens[i], self.open_rounds[i])
            if reset:
                past = ()
            if c in now:
                past = (*past, leaf)
            count = len(past) - bisect.bisect_right(past, lo)
            sens.append(s + count * count)
            opened.append(past)
        return TreeLedger(self.rounds + 1, tuple(ids), tuple(sens), tuple(opened))


@attrs.frozen
class TreeAccountant:
    """ε of DP-FTRL (:func:`privacy.mechanisms.dp_ftrl`, same ``noise_multiplier`` and
    ``restart_every``) over the realised schedule: each round's planned clients update
    their ``S`` (:func:`sensitivity_squared`, incrementally); ε is that of the client with
    the largest ``S``, at ``delta``, by ``accountant`` (``"exact"``, ``"pld"``, ``"rdp"``);
    ``target_epsilon`` the budget, ``alerts`` the fractions of it the run driver warns at.
    Every round must run the server chain (a missed quorum
    would shift the mechanism's tree against this ledger: use ``quorum=0`` or sample every
    client).

    (Kairouz et al. 2021, Practical and Private (Deep) Learning without Sampling or
    Shuffling.)
    """

    noise_multiplier: float = attrs.field(converter=float)
    delta: float = attrs.field(default=1e-5, converter=_delta)
    target_epsilon: float | None = attrs.field(
        default=None, converter=lambda v: None if v is None else float(v)
    )
    restart_every: int | None = attrs.field(default=None, converter=_restart)
    accountant: str = attrs.field(default="exact", converter=_conversion)
    alerts: tuple[float, ...] = attrs.field(default=(0.5, 0.8, 1.0), converter=_alerts)

    def __attrs_post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(
                f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier!r}"
            )
        t = self.target_epsilon
        if t is not None and not (t > 0 and math.isfinite(t)):
            raise ValueError(f"target_epsilon must be None or finite and positive, got {t!r}")

    def init(self, num_clients: int) -> TreeLedger:
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients!r}")
        return TreeLedger()

    def spend(self, ledger: TreeLedger, round: RoundSpend) -> TreeLedger:
        return ledger.step(round.clients.tolist(), self.restart_every)

    def epsilon(self, ledger: TreeLedger) -> float:
        return epsilon_of_sensitivity(
            self.noise_multiplier, ledger.max_sensitivity_squared, self.delta, self.accountant
        )
