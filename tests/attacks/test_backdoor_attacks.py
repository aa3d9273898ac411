"""Backdoor attacks beyond BadNets: the distributed backdoor (DBA), Neurotoxin's masked
updates, and the attack success rate an adversary reports for its poison."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import keys
from torch import nn

import fedkit
from attacks import (
    DBA,
    Backdoor,
    CombinedPoisoning,
    DataPoisoning,
    DistributedTrigger,
    LabelFlip,
    ModelPoisoning,
    Neurotoxin,
    PixelTrigger,
    SignFlip,
    attack_success_rate,
    backdoor_success_rate,
    label_flip_success_rate,
    neurotoxin,
    top_coordinates,
)
from fedkit.run.plan import RoundPlan, RunKeys
from fedkit.simulation.transport import planned_jobs
from fedkit.tasks.base import SupervisedTask

# ---------------------------------------------------------------- DBA triggers


@st.composite
def triggers(draw):
    parts = draw(st.integers(1, 6))
    return DistributedTrigger(
        parts=parts,
        height=draw(st.integers(1, 3)),
        width=draw(st.integers(1, 4)),
        gap=draw(st.integers(0, 2)),
        columns=draw(st.integers(1, 4)),
        corner=draw(st.sampled_from(["top_left", "top_right", "bottom_left", "bottom_right"])),
        margin=draw(st.integers(0, 2)),
    )


@given(trigger=triggers(), size=st.integers(8, 20))
def test_local_patterns_are_disjoint_rectangles_that_make_the_global_trigger(trigger, size):
    boxes_h = -(-trigger.parts // min(trigger.columns, trigger.parts))
    span = boxes_h * (trigger.height + trigger.gap) + trigger.margin
    assume(span <= size and trigger.columns * (trigger.width + trigger.gap) + 2 <= size)
    whole = trigger.mask(size, size)
    parts = [trigger.part(i).mask(size, size) for i in range(trigger.parts)]
    assert all(int(p.sum()) == trigger.height * trigger.width for p in parts)
    assert int(torch.stack(parts).sum(0).max()) == 1  # disjoint
    assert torch.equal(torch.stack(parts).any(0), whole)


def test_trigger_sits_in_its_corner_and_rejects_what_does_not_fit():
    t = DistributedTrigger(parts=4, height=1, width=2, gap=1, columns=2)
    m = t.mask(6, 6)
    assert m[0, :5].tolist() == [True, True, False, True, True]
    assert m[2, :5].tolist() == [True, True, False, True, True]
    assert int(m.sum()) == 8 and not bool(m[1].any())
    br = DistributedTrigger(parts=2, height=1, width=1, gap=0, columns=2, corner="bottom_right")
    assert torch.nonzero(br.mask(4, 4)).tolist() == [[3, 2], [3, 3]]
    with pytest.raises(ValueError, match="does not fit in a 4x4 image"):
        DistributedTrigger(parts=4, width=3, gap=1).mask(4, 4)
    with pytest.raises(ValueError, match=r"part index must be an int in \[0, 4\)"):
        DistributedTrigger().part(4)


@given(rank=st.integers(0, 9), k=keys)
def test_dba_stamps_the_local_pattern_of_its_rank_only(rank, k):
    trigger = DistributedTrigger(parts=3, height=1, width=2, gap=1, columns=3)
    poison = DBA(target=2, trigger=trigger, fraction_poisoned=1.0)
    x = torch.zeros(5, 1, 6, 8)
    y = torch.tensor([0, 1, 2, 0, 1])
    px, py = poison(x, y, k, rank=rank)
    changed = (px != x).any(0).any(0)  # [H, W]
    assert torch.equal(changed, trigger.part(rank % 3).mask(6, 8))
    assert torch.equal(py, torch.full_like(y, 2))
    gx, _ = poison(x, y, k)  # no rank: the global trigger
    assert torch.equal((gx != x).any(0).any(0), trigger.mask(6, 8))


def test_dba_adversary_assigns_parts_by_rank_among_the_controlled_ids():
    trigger = DistributedTrigger(parts=2, height=1, width=1, gap=1, columns=2)
    adv = DataPoisoning(DBA(target=0, trigger=trigger, fraction_poisoned=1.0), clients=(7, 2, 5))
    x, y = torch.zeros(4, 1, 4, 4), torch.tensor([1, 2, 3, 1])
    for client, part in ((2, 0), (5, 1), (7, 0)):
        px, _ = adv.poison_data(client, x, y, fedkit.key(0))
        assert torch.equal((px != x).any(0).any(0), trigger.part(part).mask(4, 4))
    drawn = DataPoisoning(DBA(target=0, trigger=trigger), num_byzantine=2)
    assert drawn.uses_controlled
    with pytest.raises(ValueError, match="rank among the controlled ids"):
        drawn.poison_data(3, x, y, fedkit.key(0))
    px, _ = drawn.poison_data(3, x, y, fedkit.key(0), controlled=torch.tensor([3, 9]))
    assert torch.equal((px != x).any(0).any(0), trigger.part(0).mask(4, 4))  # rank 0 of [3, 9]
    with pytest.raises(ValueError, match="not among the controlled ids"):
        drawn.poison_data(4, x, y, fedkit.key(0), controlled=torch.tensor([3, 9]))


def image_task(sizes=(6, 6, 6, 6), seed=0, *, model=None) -> SupervisedTask:
    rng = np.random.default_rng(seed)

    def data(n):
        x = torch.as_tensor(rng.uniform(0.1, 0.5, size=(n, 1, 4, 4)), dtype=torch.float32)
        return x, torch.as_tensor(rng.integers(0, 3, size=n), dtype=torch.int64)

    parts = [data(n) for n in sizes]
    tx, ty = data(30)
    return SupervisedTask(
        name="images",
        model_fn=model or (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 3))),
        client_x=[p[0] for p in parts],
        client_y=[p[1] for p in parts],
        test_x=tx,
        test_y=ty,
        num_classes=3,
    )


def test_the_transport_gives_each_dba_client_its_own_part():
    trigger = DistributedTrigger(parts=2, height=1, width=1, gap=1, columns=2)
    task = image_task()
    adv = DataPoisoning(DBA(target=0, trigger=trigger, fraction_poisoned=1.0), num_byzantine=2)
    controlled = torch.tensor([1, 3])
    plan = RoundPlan(
        1,
        torch.arange(4),
        torch.ones(4, dtype=torch.int64),
        torch.zeros(4, dtype=torch.bool),
        torch.tensor([False, True, False, True]),
        RunKeys.of(fedkit.key(0)).round(1),
    )
    jobs = planned_jobs(task, adv, plan, controlled)
    for job, part in ((jobs[1], 0), (jobs[3], 1)):
        x = task.client_x[job.client]
        assert torch.equal((job.x != x).any(0).any(0), trigger.part(part).mask(4, 4))
    assert torch.equal(jobs[0].x, task.client_x[0]) and torch.equal(jobs[2].x, task.client_x[2])


def test_a_dba_run_reports_its_attack_success_rate():
    task = image_task(sizes=(8, 8, 8, 8, 8))
    trigger = DistributedTrigger(parts=2, height=1, width=2, gap=0, columns=2)
    adv = DataPoisoning(DBA(target=1, trigger=trigger), fraction=0.4)
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(batch_size=4), server=fedkit.aggregators.Mean()
    )
    h = fedkit.simulate(task, strategy, rounds=1, key=0, adversary=adv, progress=False)
    asr = adv.evaluate(task, h.final_params)
    want = backdoor_success_rate(
        lambda x: task.apply(h.final_params, x), task.test_x, task.test_y, trigger, 1
    )
    assert asr == {"attack_success_rate": want}


# ---------------------------------------------------------------- Neurotoxin


@given(
    h=st.integers(1, 6),
    b=st.integers(1, 4),
    d=st.integers(1, 30),
    top=st.floats(0, 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_neurotoxin_rows_are_zero_on_the_benign_top_coordinates_and_own_elsewhere(
    h, b, d, top, seed
):
    rng = np.random.default_rng(seed)
    honest = torch.as_tensor(rng.normal(size=(h, d)))
    own = torch.as_tensor(rng.normal(size=(b, d)))
    rows = neurotoxin(honest, num_byzantine=b, own=own, top_fraction=top)
    k = int(np.floor(top * d + 1e-9))
    magnitude = honest.mean(0).abs()
    masked = torch.zeros(d, dtype=torch.bool)
    masked[top_coordinates(honest.mean(0), top)] = True
    assert int(masked.sum()) == k
    if 0 < k < d:  # the masked coordinates are the largest ones
        assert magnitude[masked].min() >= magnitude[~masked].max()
    assert bool((rows[:, masked] == 0).all())
    assert torch.equal(rows[:, ~masked], own[:, ~masked])


@given(seed=st.integers(0, 2**31 - 1), k=keys)
def test_combined_backdoor_neurotoxin_masks_each_own_row_by_the_benign_mean(seed, k):
    rng = np.random.default_rng(seed)
    updates = torch.as_tensor(rng.normal(size=(6, 40)))
    byz = torch.tensor([False, True, False, False, True, False])
    weights = torch.tensor([3.0, 4.0, 0.0, 5.0, 6.0, 7.0])  # client 2 takes no part
    adv = CombinedPoisoning(
        Backdoor(target=0), Neurotoxin(top_fraction=0.25), num_byzantine=2, knowledge="omniscient"
    )
    out = adv.poison_updates(updates, byz, weights, 3, k)
    benign = updates[[0, 3, 5]].mean(0)
    top = torch.sort(benign.abs(), descending=True, stable=True).indices[:10]
    keep = torch.ones(40, dtype=torch.bool)
    keep[top] = False
    for row in (1, 4):
        assert bool((out[row, top] == 0).all())
        assert torch.equal(out[row, keep], updates[row, keep])
    assert torch.equal(out[~byz], updates[~byz])


def test_neurotoxin_needs_omniscient_knowledge_and_valid_inputs():
    with pytest.raises(ValueError, match=r"Neurotoxin needs knowledge in \('omniscient',\)"):
        CombinedPoisoning(Backdoor(target=0), Neurotoxin(), num_byzantine=1)  # partial default
    with pytest.raises(ValueError, match="top_fraction must lie in"):
        Neurotoxin(top_fraction=1.5)
    with pytest.raises(ValueError, match="own must hold the adversary's 2 update"):
        neurotoxin(torch.ones(3, 4), num_byzantine=2, own=torch.ones(1, 4))
    assert Neurotoxin().reads_own and not SignFlip().reads_own


# ---------------------------------------------------------------- attack success rate


class TriggerDetector(nn.Module):
    """Linear model on 4x4 images (pixels in [0.1, 0.5) unless stamped): class c > 0 scores
    pixel c; the target class 0 scores the trigger pixels minus a threshold, so a stamped
    image goes to class 0 and a clean one never does."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def detector_params(task, trigger_pixels, weight, threshold):
    w = torch.zeros(3, 16)
    w[1, 1] = w[2, 2] = 1.0
    w[0, trigger_pixels] = weight
    bias = torch.tensor([-threshold, 0.0, 0.0])
    flat, _ = fedkit.flatten({"fc.weight": w, "fc.bias": bias}, task.spec)
    return flat


def test_backdoor_and_dba_success_rates_on_a_model_that_knows_the_trigger():
    task = image_task(model=TriggerDetector)
    task_x = task.test_x.clone()
    assert not bool((task.test_y == 0).all())
    backdoor = DataPoisoning(Backdoor(target=0, trigger=PixelTrigger(size=1)), num_byzantine=1)
    params = detector_params(task, [15], 10.0, 5.5)  # clean: <= -0.5, stamped: 4.5
    assert backdoor.evaluate(task, params) == {"attack_success_rate": 1.0}
    assert torch.equal(task.test_x, task_x)  # the task's test set is not stamped in place
    clean = task.apply(params, task.test_x).argmax(1)
    assert not bool((clean == 0).any())
    # DBA: four 1-pixel parts; only the whole trigger (4 - 2.5 = 1.5) beats the other classes
    # (clean: <= 2 - 2.5; one part stamped: <= 1 + 1.5 - 2.5 = 0 < 0.1)
    trigger = DistributedTrigger(parts=4, height=1, width=1, gap=0, columns=2)
    pixels = torch.nonzero(trigger.mask(4, 4).flatten()).flatten().tolist()
    dba_params = detector_params(task, pixels, 1.0, 2.5)
    dba = DataPoisoning(DBA(target=0, trigger=trigger), num_byzantine=1)
    assert dba.evaluate(task, dba_params) == {"attack_success_rate": 1.0}
    one_part = backdoor_success_rate(
        lambda x: task.apply(dba_params, x), task.test_x, task.test_y, trigger.part(0), 0
    )
    assert one_part == 0.0
    combined = CombinedPoisoning(
        DBA(target=0, trigger=trigger), Neurotoxin(), num_byzantine=1, knowledge="omniscient"
    )
    assert combined.evaluate(task, dba_params) == {"attack_success_rate": 1.0}
    assert not hasattr(ModelPoisoning(SignFlip(), num_byzantine=1), "evaluate")


def test_label_flip_success_rate_counts_the_flipped_examples_classified_as_flipped():
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    x = torch.arange(6.0)[:, None]
    flip = LabelFlip(num_classes=3, source=1, target=2)

    def relabel(labels):
        return flip(x, labels)[1]

    truth = dict(zip(x[:, 0].tolist(), y.tolist(), strict=True))
    as_flipped = lambda inp: relabel(torch.tensor([truth[v] for v in inp[:, 0].tolist()]))  # noqa: E731
    honest = lambda inp: torch.tensor([truth[v] for v in inp[:, 0].tolist()])  # noqa: E731
    assert label_flip_success_rate(as_flipped, x, y, relabel) == 1.0
    assert label_flip_success_rate(honest, x, y, relabel) == 0.0
    assert attack_success_rate(flip, as_flipped, x, y) == 1.0
    # half of the source-class examples go to the target
    half = lambda inp: torch.where(inp[:, 0] == 1.0, 2, honest(inp))  # noqa: E731
    assert attack_success_rate(flip, half, x, y) == 0.5
    # undefined rates: no example the flip changes, every label the target
    assert attack_success_rate(flip, honest, x, torch.zeros(6, dtype=torch.int64)) is None
    assert (
        attack_success_rate(Backdoor(target=0), honest, x, torch.zeros(6, dtype=torch.int64))
        is None
    )
    with pytest.raises(ValueError, match="changes no test label"):
        label_flip_success_rate(honest, x, torch.zeros(6, dtype=torch.int64), relabel)
    assert attack_success_rate(object(), honest, x, y) is None


def test_label_flip_adversary_reports_its_success_rate_on_the_task():
    task = image_task(model=TriggerDetector)
    adv = DataPoisoning(LabelFlip(num_classes=3, permutation=(0, 2, 1)), num_byzantine=1)
    params = detector_params(task, [15], 0.0, 0.0)
    pred = task.apply(params, task.test_x).argmax(1)
    y = task.test_y
    moved = y != 0  # the permutation swaps classes 1 and 2
    want = float(((pred == torch.tensor([0, 2, 1])[y]) & moved).sum() / moved.sum())
    assert adv.evaluate(task, params) == {"attack_success_rate": want}
