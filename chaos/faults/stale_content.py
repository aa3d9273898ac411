"""Stale content: a reply tagged with the current round that carries an older update."""

from __future__ import annotations

import attrs
import torch

from chaos.faults._draws import round_uniforms
from chaos.faults._plans import check_call, check_positive_int, check_probability, plan_where
from fedkit.core.keys import Key
from fedkit.protocols import FaultKind, FaultPlan


@attrs.frozen
class StaleContent:
    """With probability ``p`` a sampled client answers the current round with the update it
    computed ``age`` or more rounds earlier (``STALE_CONTENT``, reason ``"stale_content"``,
    ``detail`` = age), the age uniform on ``1..max_age``: a lazy or buggy client that
    resends an old result under a fresh tag. Unlike :class:`~chaos.faults.stale.Stale`
    the tag is current, so validation accepts the reply and the old update reaches the
    aggregator.

    The engine takes the old update from its replay memory
    (:class:`fedkit.simulation.delivery.ReplayMemory`, ``replay_depth = max_age`` rounds
    deep: at most ``max_age × clients per round × d`` values): the newest update of that
    client from rounds ``round − max_age .. round − age``. A client with none there (not
    sampled in that window, or the first rounds of a run) sends a zero update instead, as a
    client that did no work would. Decisions are keyed uniforms of (round, client) as for
    every fault model, so the same seed strikes the same replies with the same ages. The
    memory is not checkpointed: combined with a resume or a :class:`~chaos.faults.server_crash.ServerCrash`, a
    replayed round may fall back to zeros (see ``ReplayMemory``).
    """

    p: float = attrs.field(default=0.1, validator=check_probability)
    max_age: int = attrs.field(default=1, validator=check_positive_int)

    @property
    def replay_depth(self) -> int:
        """Rounds of past updates the engine must remember for this fault."""
        return self.max_age

    def plan(self, round: int, clients: torch.Tensor, key: Key) -> FaultPlan:
        clients = check_call(round, clients, key)
        u = round_uniforms(key, round, clients, 2)
        age = 1 + torch.clamp((u[:, 1] * self.max_age).long(), max=self.max_age - 1)
        return plan_where(u[:, 0] < self.p, FaultKind.STALE_CONTENT, "stale_content", detail=age)
