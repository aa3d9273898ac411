"""Which clients an adversary controls (explicit ids from config or a keyed draw), and
Byzantine clients without data: they skip training and still send the attack's rows with
the weight they claim."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys
from torch import nn

import fedkit
from attacks import (
    ALIE,
    Backdoor,
    CombinedPoisoning,
    DataPoisoning,
    LabelFlip,
    ModelPoisoning,
    Neurotoxin,
    Scaling,
    SignFlip,
    alie,
    claimed_examples,
)
from experiments.build import make
from experiments.run import run_experiment
from fedkit.core.components import Reducer
from fedkit.run.plan import RoundPlan, RunKeys
from fedkit.simulation import SequentialEngine
from fedkit.simulation.transport import planned_jobs, train_planned
from fedkit.tasks.base import SupervisedTask

# ---------------------------------------------------------------- explicit ids


@given(
    n=st.integers(1, 40),
    data=st.data(),
    k=keys,
)
def test_explicit_clients_are_controlled_whatever_the_key(n, data, k):
    ids = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    adv = ModelPoisoning(SignFlip(), clients=ids)
    got = adv.controlled(n, k)
    assert got.dtype == torch.int64 and got.tolist() == sorted(ids)
    assert torch.equal(got, adv.controlled(n, fedkit.key(12345)))


def test_explicit_clients_are_validated():
    with pytest.raises(ValueError, match=r"names client\(s\) \[12\].*10 clients"):
        ModelPoisoning(SignFlip(), clients=[0, 12]).controlled(10, fedkit.key(0))
    with pytest.raises(ValueError, match=r"distinct.*\[3\] repeated"):
        ModelPoisoning(SignFlip(), clients=[3, 1, 3])
    with pytest.raises(ValueError, match="ids >= 0"):
        DataPoisoning(LabelFlip(num_classes=3), clients=[-1])
    with pytest.raises(ValueError, match="int client ids"):
        ModelPoisoning(SignFlip(), clients=[0, 1.5])
    with pytest.raises(ValueError, match="list of client ids"):
        ModelPoisoning(SignFlip(), clients="0,3")
    with pytest.raises(ValueError, match=r"exactly one.*clients=\(0, 3\), fraction=0.2"):
        ModelPoisoning(SignFlip(), clients=[0, 3], fraction=0.2)
    with pytest.raises(ValueError, match=r"exactly one.*got none"):
        CombinedPoisoning(Backdoor(target=0), Scaling())


def test_the_keyed_draw_is_a_sorted_subset_of_the_given_size():
    adv = DataPoisoning(LabelFlip(num_classes=3), num_byzantine=4)
    ids = adv.controlled(30, fedkit.key(3))
    assert ids.numel() == 4 and ids.unique().numel() == 4
    assert ids.tolist() == sorted(ids.tolist())
    draws = {tuple(adv.controlled(30, fedkit.key(s)).tolist()) for s in range(20)}
    assert len(draws) > 10  # the key decides


def _cfg(*overrides):
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=["num_clients=6", "f=1", "rounds=1", *overrides])


@pytest.mark.parametrize("attack", ["alie", "dba", "neurotoxin", "label_flip"])
def test_hydra_override_names_the_controlled_clients(attack):
    cfg = _cfg(f"attack={attack}", "attack.clients=[0,3]", "attack.fraction=null")
    adversary = make(cfg.attack)
    assert adversary.clients == (0, 3)
    assert adversary.controlled(6, fedkit.key(9)).tolist() == [0, 3]
    with pytest.raises(Exception, match="exactly one"):
        make(_cfg(f"attack={attack}", "attack.clients=[0,3]").attack)
    by_count = make(
        _cfg(f"attack={attack}", "attack.num_byzantine=2", "attack.fraction=null").attack
    )
    assert by_count.controlled(6, fedkit.key(0)).numel() == 2


def test_a_run_from_config_controls_the_named_clients(tmp_path):
    cfg = _cfg(
        "attack=alie",
        "attack.clients=[0,3]",
        "attack.fraction=null",
        "tensorboard=false",
        "progress=false",
    )
    record = run_experiment(cfg, tmp_path)
    assert record["attack"]["controlled"] == [0, 3]
    assert record["metrics"][0]["byzantine"] == 2


# ---------------------------------------------------------------- Byzantine without data


class Linear(nn.Module):
    def __init__(self, features: int = 4, classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return self.fc(x)


def task_with_sizes(sizes, seed=0) -> SupervisedTask:
    rng = np.random.default_rng(seed)

    def make_data(n):
        x = torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32)
        return x, torch.as_tensor(rng.integers(0, 3, size=n), dtype=torch.int64)

    data = [make_data(n) for n in sizes]
    tx, ty = make_data(20)
    return SupervisedTask(
        name="sizes",
        model_fn=Linear,
        client_x=[d[0] for d in data],
        client_y=[d[1] for d in data],
        test_x=tx,
        test_y=ty,
        num_classes=3,
    )


@attrs.frozen(eq=False)
class Spy(Reducer):
    """Weighted mean that keeps what the server aggregated (test only)."""

    seen: list = attrs.field(factory=list)

    def __call__(self, updates, weights, state, key):
        self.seen.append((updates.clone(), weights.clone()))
        w = weights.double() / weights.double().sum()
        return (w[:, None] * updates.double()).sum(0).to(updates.dtype), state, {}


SIZES = (5, 0, 6, 7, 0, 8)
BYZANTINE = (1, 4)  # the clients with no data


def test_byzantine_clients_without_data_reach_the_server_with_alie_rows():
    task = task_with_sizes(SIZES)
    spy = Spy()
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4, lr=0.1), server=spy)
    adv = ModelPoisoning(ALIE(), clients=BYZANTINE)
    history = fedkit.simulate(
        task, strategy, rounds=2, key=0, engine="sequential", adversary=adv, progress=False
    )
    assert len(spy.seen) == 2 and all(m["accepted"] == 6 for m in history.metrics)
    byz = torch.zeros(6, dtype=torch.bool)
    byz[list(BYZANTINE)] = True
    honest_mean_count = 7  # (5 + 6 + 7 + 8) / 4 = 6.5, rounded half up
    for updates, weights in spy.seen:
        assert weights[byz].tolist() == [honest_mean_count] * 2
        assert weights[~byz].tolist() == [s for s in SIZES if s]
        expected = alie(updates[~byz], num_byzantine=2, num_clients=6)
        torch.testing.assert_close(updates[byz], expected)
        assert bool((updates[byz].abs().sum(1) > 0).all())


def _plan(clients, byzantine, round=1, seed=0):
    m = len(clients)
    mask = torch.tensor([c in byzantine for c in clients])
    return RoundPlan(
        round,
        torch.tensor(clients),
        torch.ones(m, dtype=torch.int64),
        torch.zeros(m, dtype=torch.bool),
        mask,
        RunKeys.of(fedkit.key(seed)).round(round),
    )


@pytest.mark.parametrize(
    ("adversary", "trains"),
    [
        (ModelPoisoning(ALIE(), clients=(2, 5)), False),
        (ModelPoisoning(SignFlip(), clients=(2, 5), knowledge="partial"), True),
        (
            CombinedPoisoning(
                LabelFlip(num_classes=3), Neurotoxin(), clients=(2, 5), knowledge="omniscient"
            ),
            True,
        ),
        (DataPoisoning(LabelFlip(num_classes=3), clients=(2, 5)), True),
    ],
    ids=["omniscient-alie", "partial-sign-flip", "neurotoxin", "label-flip"],
)
def test_controlled_clients_train_only_when_their_updates_are_read(adversary, trains):
    task = task_with_sizes((5, 6, 7, 8, 9, 10))
    plan = _plan(list(range(6)), (2, 5))
    jobs = planned_jobs(task, adversary, plan)
    assert [j.num_examples for j in jobs] == [5, 6, 7 if trains else 0, 8, 9, 10 if trains else 0]
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4), server=Spy())
    local, _ = train_planned(
        task, strategy, adversary, SequentialEngine(), task.init(fedkit.key(0)), plan
    )
    steps = local.steps.tolist()
    assert (steps[2] > 0) == trains and (steps[5] > 0) == trains
    assert all(steps[i] > 0 for i in (0, 1, 3, 4))


@given(
    counts=st.lists(st.integers(0, 50), min_size=2, max_size=12),
    data=st.data(),
    knowledge=st.sampled_from(["omniscient", "partial"]),
)
def test_byzantine_clients_claim_the_mean_count_they_see(counts, data, knowledge):
    n = len(counts)
    byz = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    c = torch.tensor(counts)
    out = claimed_examples(c, byz, knowledge)
    assert torch.equal(out[~byz], c[~byz])
    if not bool(byz.any()):
        return
    others = c[~byz & (c > 0)]
    seen = others if knowledge == "omniscient" and others.numel() else c[byz]
    want = max(1, int(np.floor(seen.double().mean().item() + 0.5)))
    assert out[byz].tolist() == [want] * int(byz.sum())
