"""What a transport is: the part of a run that moves work out to clients and their replies
back. The driver (:mod:`fedkit.run.driver`) decides everything else.

A transport gets the run once (:meth:`Transport.start`: task, strategy, keys, adversary),
then per round the server state and the :class:`~fedkit.run.plan.RoundPlan`, and returns an
:class:`Exchange`: the replies that arrived, what was lost on the way and why, and what the
clients said about their own training. Transports today: the in-process engines
(:class:`fedkit.simulation.InProcessTransport`, which also plays the adversary's clients
and the simulated faults) and the Flower ServerApp (:class:`fedkit.flower.FlowerTransport`,
where the adversary's nodes attack for real).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

from fedkit.replies import Reply, Verdict


@attrs.frozen(eq=False)
class Exchange:
    """One round's traffic.

    ``replies``: what arrived, in arrival order (validated by ``Strategy.round``);
    ``lost``: ``{reason: n}`` of asked clients whose reply did not arrive;
    ``rejected``: ``{reason: n}`` of replies the transport itself refused before validation
    (e.g. ``impersonation``: a payload claiming another client than the node's);
    ``faults``: ``{label: n}`` of simulated faults that struck;
    ``client_stats``: ``{client: (mean local loss, examples)}`` as each client reported;
    ``server_crash``: the (simulated) server dies after this round;
    ``metrics``: transport-specific numbers for the round record (e.g. ``nodes``);
    ``verdicts``: what the transport itself decided per client (lost with its reason,
    rejected before validation), as far as it knows (:class:`~fedkit.replies.Verdict`);
    ``nodes``: ``{client: node}`` of the replies that came from deployment nodes;
    ``events``: run events the transport saw this round (``{"event": name, ...}``, e.g.
    ``node_registered``, ``node_refused``), which the driver hands to the callbacks;
    ``client_state``: ``{client: worker momentum [d]}`` the simulated clients keep after
    this round (:mod:`fedkit.run.client_state`; the driver stores it; empty when the
    clients keep their own, as deployed nodes do).
    """

    replies: list[Reply]
    lost: dict[str, int] = attrs.field(factory=dict)
    rejected: dict[str, int] = attrs.field(factory=dict)
    faults: dict[str, int] = attrs.field(factory=dict)
    client_stats: dict[int, tuple[float, int]] = attrs.field(factory=dict)
    server_crash: bool = False
    metrics: dict[str, Any] = attrs.field(factory=dict)
    verdicts: tuple[Verdict, ...] = ()
    nodes: dict[int, int] = attrs.field(factory=dict)
    events: tuple[dict[str, Any], ...] = ()
    client_state: dict[int, Any] = attrs.field(factory=dict)


@runtime_checkable
class Transport(Protocol):
    """Moves one round's work out and the replies back (module doc). ``name`` goes into the
    record (``run.engine_used``); ``describe()`` is the transport's part of the record."""

    name: str

    def start(self, run: Any) -> None: ...

    def exchange(self, state: Any, plan: Any) -> Exchange: ...

    def stop(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...
