"""Fault models end to end through ``fedkit.simulate`` on a small digits task: the run
survives every fault with the counters the plans imply; a server crash (+ resume) ends
bit-identical to an uninterrupted run; multi-round faults (crashes, keyed partitions) keep
their shape across rounds inside the engine."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch
from chaos_helpers import KIND, counters, runs

import chaos
import fedkit
import fedkit.tasks
from fedkit.aggregators import Mean
from fedkit.protocols import FaultKind, FaultPlan

COUNTERS = (
    "expected",
    "received",
    "valid",
    "accepted",
    "rejected",
    "lost",
    "faults",
    "quorum_missed",
)
TIMES = ("train_time", "aggregate_time", "eval_time", "wall_time")
DEADLINE = 2.0


@attrs.define(eq=False)
class Recording:
    """Passes ``model``'s plans to the engine and keeps the last plan of each round."""

    model: Any
    plans: dict[int, FaultPlan] = attrs.field(factory=dict)

    def plan(self, round: int, clients: torch.Tensor, key: fedkit.Key) -> FaultPlan:
        self.plans[round] = plan = self.model.plan(round, clients, key)
        return plan


@pytest.fixture(scope="module")
def task():
    return fedkit.tasks.digits(8, hidden=(16,), key=0)


def strategy(**kw) -> fedkit.Strategy:
    kw.setdefault("deadline", DEADLINE)
    client = fedkit.ClientConfig(epochs=1, batch_size=64, lr=0.1)
    return fedkit.Strategy(client=client, server=Mean(), **kw)


def run(task, strat, faults=None, rounds=3, **kw):
    return fedkit.simulate(
        task, strat, rounds=rounds, key=5, engine="vectorized", progress=False, faults=faults, **kw
    )


def without_times(metrics):
    return [{k: v for k, v in m.items() if k not in TIMES} for m in metrics]


EVERY_FAULT = [
    chaos.Dropout(0.4),
    chaos.Stragglers(0.6, "exponential", scale=DEADLINE),
    chaos.Crash(0.3, rounds=2),
    chaos.Corrupt(0.6),
    chaos.Stale(0.5, max_age=2),
    chaos.Duplicate(0.5),
    chaos.Partition(group=[1, 4, 6], start=2, stop=3),
    chaos.Partition(fraction=0.5),
    chaos.Compose(
        chaos.Partition(fraction=0.2, start=2),
        chaos.Crash(0.2, rounds=2),
        chaos.Dropout(0.1),
        chaos.Corrupt(0.3),
        chaos.Stale(0.2, max_age=3),
        chaos.Duplicate(0.3),
        chaos.Stragglers(0.4, "lognormal", scale=1.0, shape=1.0),
    ),
]


@pytest.mark.parametrize("model", EVERY_FAULT, ids=[type(m).__name__ for m in EVERY_FAULT])
def test_the_run_survives_every_fault_with_the_counters_its_plans_imply(task, model):
    faults = Recording(model)
    h = run(task, strategy(quorum=2), faults)
    assert [m["round"] for m in h.metrics] == [1, 2, 3]
    struck = 0
    for m in h.metrics:
        expect = counters(faults.plans[m["round"]], deadline=DEADLINE, quorum=2)
        assert {k: m[k] for k in COUNTERS} == expect
        struck += sum(expect["faults"].values())
    assert struck > 0  # the model did strike
    assert torch.isfinite(h.final_params).all()
    total = h.record["counters"]
    assert total["expected"] == 24 and total["accepted"] == sum(m["accepted"] for m in h.metrics)
    assert sum(total["lost"].values()) == sum(sum(m["lost"].values()) for m in h.metrics)


def test_a_partition_that_leaves_too_few_clients_misses_quorum_and_keeps_the_model(task):
    x0 = task.init(fedkit.key(1))
    faults = Recording(chaos.Partition(group=list(range(2, 8))))
    h = run(task, strategy(quorum=3), faults, init_params=x0)
    for m in h.metrics:
        assert {k: m[k] for k in COUNTERS} == counters(
            faults.plans[m["round"]], deadline=DEADLINE, quorum=3
        )
        assert m["quorum_missed"] and m["valid"] == 2 and m["lost"] == {"dropped": 6}
    assert torch.equal(h.final_params, x0) and h.record["counters"]["quorum_missed"] == 3


def test_a_server_crash_and_restart_ends_identical_to_an_uninterrupted_run(task, tmp_path):
    strat = strategy()
    clean = run(task, strat, rounds=4)
    h = run(
        task, strat, chaos.ServerCrash(3), rounds=4, checkpoint_dir=tmp_path, checkpoint_every=2
    )
    assert torch.equal(h.final_params, clean.final_params)
    assert without_times(h.metrics) == without_times(clean.metrics)
    (event,) = h.events
    assert (event["round"], event["restored_round"], event["rounds_lost"]) == (3, 2, 1)
    total = h.record["counters"]
    assert total["server_crashes"] == 1 and total["rounds_lost"] == 1 and total["recovery_s"] >= 0


def test_a_server_crash_without_checkpoints_restarts_from_scratch_and_still_agrees(task):
    strat = strategy()
    clean = run(task, strat, rounds=3)
    with pytest.warns(RuntimeWarning, match="no checkpoint_dir"):
        h = run(task, strat, chaos.ServerCrash([2]), rounds=3)
    assert torch.equal(h.final_params, clean.final_params)
    assert h.events[0]["rounds_lost"] == 2 and h.record["counters"]["server_crashes"] == 1


def test_client_faults_replay_identically_after_server_crashes(task, tmp_path):
    strat = strategy()
    faults = (chaos.Dropout(0.3), chaos.Crash(0.2, rounds=2), chaos.Stale(0.3, max_age=2))
    calm = run(task, strat, chaos.Compose(*faults), rounds=4)
    stormy = run(
        task,
        strat,
        chaos.Compose(*faults, chaos.ServerCrash([2, 3])),
        rounds=4,
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
    )
    assert torch.equal(stormy.final_params, calm.final_params)
    assert without_times(stormy.metrics) == without_times(calm.metrics)
    assert [e["rounds_lost"] for e in stormy.events] == [0, 1]


def test_resume_after_a_stop_replays_the_same_faults(task, tmp_path):
    strat = strategy()
    faults = chaos.Compose(
        chaos.Crash(0.3, rounds=3), chaos.Corrupt(0.3), chaos.Partition(fraction=0.3, start=3)
    )
    whole = run(task, strat, faults, rounds=4)
    run(task, strat, faults, rounds=2, checkpoint_dir=tmp_path)
    resumed = run(task, strat, faults, rounds=4, checkpoint_dir=tmp_path, resume=True)
    assert resumed.record["run"]["resumed_from"] == 2
    assert torch.equal(resumed.final_params, whole.final_params)
    assert without_times(resumed.metrics) == without_times(whole.metrics)


def _down(faults: Recording, rounds: int, reason: str) -> list[list[bool]]:
    """Per client (all sampled every round), whether it was silenced by ``reason`` per round."""
    per_round = [faults.plans[r] for r in range(1, rounds + 1)]
    return [
        [p.kind[c].item() == KIND[FaultKind.DROP] and p.reason[c] == reason for p in per_round]
        for c in range(per_round[0].kind.numel())
    ]


def test_crashed_clients_stay_silent_for_k_consecutive_rounds_inside_the_engine(task):
    k, rounds = 3, 8
    faults = Recording(chaos.Crash(0.2, rounds=k))
    run(task, strategy(), faults, rounds=rounds)
    outages = [
        (first, length)
        for client in _down(faults, rounds, "crash")
        for first, length in runs(client)
    ]
    assert outages
    short = [
        (first + 1, length) for first, length in outages if first + length < rounds and length < k
    ]
    assert not short, f"outages (first round, length) shorter than {k} rounds: {short}"


def test_a_keyed_partition_cuts_off_the_same_group_every_round_inside_the_engine(task):
    faults = Recording(chaos.Partition(fraction=0.5, start=2, stop=5))
    run(task, strategy(), faults, rounds=5)
    down = _down(faults, 5, "partition")
    groups = {tuple(c for c, d in enumerate(down) if d[r]) for r in range(1, 4)}
    assert all(not d[0] and not d[4] for d in down)
    assert len(groups) == 1, f"the partitioned group changed between rounds: {sorted(groups)}"
