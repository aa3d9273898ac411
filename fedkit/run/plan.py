"""Keys and the plan of one round: what the driver decides before anyone trains.

Keys. From the run key: ``init, controlled, rounds, faults = split(key, 4)`` (:class:`RunKeys`).
Round ``r`` (1-based) uses ``split(fold_in(rounds, r), 6)`` = (sampling, work plan, clients,
adversary, faults, server chain) (:class:`RoundKeys`), and client ``c`` trains with
``fold_in(clients, c)``. A client's randomness therefore depends only on the run key, the
round and its id — not on the transport or on which other clients were sampled — so every
transport computes the same updates, and a resumed run replays exactly the rounds an
uninterrupted one would have run.
"""

from __future__ import annotations

import attrs
import torch

from fedkit.client import num_steps
from fedkit.core.keys import Key, fold_in, split
from fedkit.protocols import DPUnitTask, RoundSpend, Task
from fedkit.strategy import ServerState, Strategy


@attrs.frozen
class RunKeys:
    """The four keys a run derives from its key."""

    init: Key
    controlled: Key
    rounds: Key
    faults: Key

    @classmethod
    def of(cls, run_key: Key) -> RunKeys:
        return cls(*split(run_key, 4))

    def round(self, r: int) -> RoundKeys:
        return RoundKeys(*split(fold_in(self.rounds, r), 6))


@attrs.frozen
class RoundKeys:
    """The six keys of one round; ``data`` and ``updates`` split the adversary's."""

    sample: Key
    work: Key
    clients: Key
    adversary: Key
    faults: Key
    server: Key

    @property
    def data(self) -> Key:
        return split(self.adversary)[0]

    @property
    def updates(self) -> Key:
        return split(self.adversary)[1]

    def client(self, c: int) -> Key:
        """The key client ``c`` trains with this round."""
        return fold_in(self.clients, c)


@attrs.frozen(eq=False)
class RoundPlan:
    """A round decided but not yet run: the sampled ``clients`` (sorted int64 ``[m]``), their
    ``work`` (units; 0 = a dropped straggler), the ``straggler`` and ``byzantine`` masks
    (``[m]`` bool; byzantine = controlled by the adversary, known to the experiment, never
    to the server chain) and the round's keys."""

    round: int
    clients: torch.Tensor
    work: torch.Tensor
    straggler: torch.Tensor
    byzantine: torch.Tensor
    keys: RoundKeys

    @property
    def asked(self) -> dict[int, int]:
        """``{client: work}`` of the clients asked to train (work > 0), in sampling order."""
        return {
            c: w for c, w in zip(self.clients.tolist(), self.work.tolist(), strict=True) if w > 0
        }


def plan_round(
    strategy: Strategy,
    state: ServerState,
    num_clients: int,
    controlled: torch.Tensor,
    keys: RunKeys,
) -> RoundPlan:
    """Sample round ``state.round + 1``'s clients and plan their work (pure)."""
    r = state.round + 1
    k = keys.round(r)
    clients = strategy.sample(state, num_clients, k.sample)
    work, straggler = strategy.plan_work(clients, k.work)
    return RoundPlan(r, clients, work, straggler, torch.isin(clients, controlled), k)


def round_spend(task: Task, strategy: Strategy, plan: RoundPlan) -> RoundSpend:
    """What the planned round releases, for a privacy accountant: who trains, on how many
    examples (privacy units of a :class:`~fedkit.protocols.DPUnitTask` under DP-SGD), for how
    many local steps."""
    cfg = strategy.client
    asked = plan.asked
    if cfg.dp_sgd is not None and isinstance(task, DPUnitTask):  # e.g. episode-level DP
        sizes = [int(task.dp_units(c)) for c in asked]
        steps = [int(task.steps_for(c, cfg, w)) for c, w in asked.items()]
    else:
        sizes = [int(task.client_size(c)) for c in asked]
        steps = [num_steps(n, w, cfg) for n, w in zip(sizes, asked.values(), strict=True)]
    return RoundSpend(
        round=plan.round,
        clients=torch.tensor(list(asked), dtype=torch.int64),
        local_examples=torch.tensor(sizes, dtype=torch.int64),
        local_steps=torch.tensor(steps, dtype=torch.int64),
        num_clients=int(task.num_clients),
        clients_per_round=int(plan.clients.numel()),
        dp_sgd=cfg.dp_sgd,
        sample_rate=strategy.sample_rate(int(task.num_clients)),
        sampling=strategy.sampling,
    )
