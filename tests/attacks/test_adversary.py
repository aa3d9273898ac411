"""Adversaries: keyed choice of controlled clients, knowledge levels, row replacement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import fedkit
from attacks import (
    ALIE,
    IPM,
    Backdoor,
    CombinedPoisoning,
    DataPoisoning,
    FangTrimmedMean,
    Gaussian,
    LabelFlip,
    Mimic,
    MinMax,
    MinSum,
    ModelPoisoning,
    NonFinite,
    Scaling,
    SignFlip,
    alie,
    visible_rows,
)
from fedkit.protocols import Adversary

ATTACKS = [
    SignFlip(),
    Gaussian(sigma=0.5),
    Scaling(factor=5.0),
    ALIE(z=1.0),
    IPM(epsilon=0.5),
    MinMax(perturbation="sign"),
    MinSum(perturbation="unit"),
    FangTrimmedMean(),
    Mimic(),
    NonFinite(kind="inf"),
]


@st.composite
def rounds(draw, min_byz=1):
    """(updates [n, d], byzantine mask with >= min_byz True, weights with zeros)."""
    n = draw(st.integers(min_byz + 2, 10))
    d = draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    updates = torch.as_tensor(rng.normal(0, 3, size=(n, d)))
    b = draw(st.integers(min_byz, n - 2))
    byz = torch.zeros(n, dtype=torch.bool)
    byz[torch.as_tensor(rng.permutation(n)[:b])] = True
    weights = torch.as_tensor(rng.uniform(0.5, 5, size=n))
    weights[torch.as_tensor(rng.random(n) < 0.2) & ~byz] = 0.0
    if int(((weights > 0) & ~byz).sum()) < 2:  # omniscient ALIE / std need two other rows
        weights = torch.where(byz, weights, torch.ones_like(weights))
    return updates, byz, weights


def test_adversaries_implement_the_protocol():
    for adv in (
        ModelPoisoning(SignFlip(), num_byzantine=1),
        DataPoisoning(LabelFlip(num_classes=3), fraction=0.5),
        CombinedPoisoning(Backdoor(target=0), Scaling(), num_byzantine=2),
    ):
        assert isinstance(adv, Adversary)


@given(n=st.integers(0, 40), frac=st.floats(0, 1), k=keys)
def test_controlled_is_a_keyed_sorted_choice(n, frac, k):
    adv = ModelPoisoning(SignFlip(), fraction=frac)
    ids = adv.controlled(n, k)
    assert ids.dtype == torch.int64
    assert ids.numel() == int(np.floor(frac * n + 1e-9))
    assert torch.equal(ids, torch.sort(ids).values)
    assert ids.unique().numel() == ids.numel()
    assert bool(((ids >= 0) & (ids < n)).all())
    assert torch.equal(ids, adv.controlled(n, k))


def test_controlled_count_and_validation():
    adv = ModelPoisoning(SignFlip(), num_byzantine=3)
    assert adv.controlled(10, fedkit.key(0)).numel() == 3
    assert not torch.equal(adv.controlled(100, fedkit.key(0)), adv.controlled(100, fedkit.key(1)))
    assert ModelPoisoning(SignFlip(), fraction=0.3).controlled(10, fedkit.key(0)).numel() == 3
    with pytest.raises(ValueError, match="exactly one"):
        ModelPoisoning(SignFlip())
    with pytest.raises(ValueError, match="exactly one"):
        ModelPoisoning(SignFlip(), num_byzantine=1, fraction=0.1)
    with pytest.raises(ValueError, match="knowledge"):
        ModelPoisoning(SignFlip(), num_byzantine=1, knowledge="psychic")
    with pytest.raises(ValueError, match="controls"):
        adv.controlled(2, fedkit.key(0))


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("knowledge", ["omniscient", "partial"])
@given(data=rounds(), k=keys, r=st.integers(0, 50))
def test_only_byzantine_rows_change_deterministically_and_purely(attack, knowledge, data, k, r):
    updates, byz, weights = data
    if knowledge == "partial" and int(byz.sum()) < 2 and type(attack) in (ALIE, MinMax, MinSum):
        return  # these need >= 2 visible rows for a standard deviation / a spread
    adv = ModelPoisoning(attack, num_byzantine=1, knowledge=knowledge)
    before = (updates.clone(), byz.clone(), weights.clone())
    out = adv.poison_updates(updates, byz, weights, r, k)
    assert out.shape == updates.shape and out.dtype == updates.dtype
    assert torch.equal(out[~byz], updates[~byz])
    torch.testing.assert_close(
        out, adv.poison_updates(updates, byz, weights, r, k), rtol=0, atol=0, equal_nan=True
    )
    for t, t0 in zip((updates, byz, weights), before):
        assert torch.equal(t, t0)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: type(a).__name__)
@given(data=rounds(min_byz=2), k=keys, seed=st.integers(0, 2**31 - 1))
def test_partial_knowledge_ignores_the_other_clients(attack, data, k, seed):
    updates, byz, weights = data
    adv = ModelPoisoning(attack, num_byzantine=1, knowledge="partial")
    noise = torch.as_tensor(np.random.default_rng(seed).normal(0, 10, size=updates.shape))
    changed = torch.where(byz[:, None], updates, updates + noise)
    a = adv.poison_updates(updates, byz, weights, 0, k)
    b = adv.poison_updates(changed, byz, weights, 0, k)
    torch.testing.assert_close(a[byz], b[byz], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: type(a).__name__)
@given(data=rounds(), k=keys, seed=st.integers(0, 2**31 - 1))
def test_omniscient_knowledge_sees_the_participating_others_only(attack, data, k, seed):
    updates, byz, weights = data
    adv = ModelPoisoning(attack, num_byzantine=1, knowledge="omniscient")
    noise = torch.as_tensor(np.random.default_rng(seed).normal(0, 10, size=updates.shape))
    hidden = byz | (weights == 0)  # own rows and non-participants are not read
    changed = torch.where(hidden[:, None], updates + noise, updates)
    a = adv.poison_updates(updates, byz, weights, 0, k)
    b = adv.poison_updates(changed, byz, weights, 0, k)
    torch.testing.assert_close(a[byz], b[byz], rtol=0, atol=0, equal_nan=True)


def test_omniscient_sign_flip_reads_the_others_rows():
    updates = torch.tensor([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0], [-1.0, 0.0]])
    byz = torch.tensor([False, False, True, False])
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])
    out = ModelPoisoning(SignFlip(), num_byzantine=1).poison_updates(
        updates, byz, weights, 0, fedkit.key(0)
    )
    assert torch.equal(out[2], torch.tensor([-2.0, -3.0]))
    partial = ModelPoisoning(SignFlip(), num_byzantine=1, knowledge="partial")
    assert torch.equal(
        partial.poison_updates(updates, byz, weights, 0, fedkit.key(0))[2],
        torch.tensor([-100.0, -100.0]),
    )


def test_alie_receives_the_number_of_aggregated_clients():
    rng = np.random.default_rng(0)
    updates = torch.as_tensor(rng.normal(size=(12, 4)))
    byz = torch.zeros(12, dtype=torch.bool)
    byz[[1, 5, 7]] = True
    weights = torch.ones(12)
    weights[0] = 0.0  # a non-participant: 11 clients are aggregated
    k = fedkit.key(0)
    omni = ModelPoisoning(ALIE(), num_byzantine=3).poison_updates(updates, byz, weights, 0, k)
    others = updates[(~byz) & (weights > 0)]
    torch.testing.assert_close(omni[byz], alie(others, num_byzantine=3, num_clients=11))
    part = ModelPoisoning(ALIE(), num_byzantine=3, knowledge="partial")
    out = part.poison_updates(updates, byz, weights, 0, k)
    torch.testing.assert_close(out[byz], alie(updates[byz], num_byzantine=3, num_clients=11))


def test_round_and_key_change_random_attacks():
    updates = torch.zeros(5, 4)
    byz = torch.tensor([True, False, False, True, False])
    adv = ModelPoisoning(Gaussian(sigma=1.0), num_byzantine=2)
    a = adv.poison_updates(updates, byz, None, 0, fedkit.key(0))
    assert not torch.equal(a, adv.poison_updates(updates, byz, None, 1, fedkit.key(0)))
    assert not torch.equal(a, adv.poison_updates(updates, byz, None, 0, fedkit.key(1)))


def test_no_byzantine_row_leaves_the_updates_alone():
    updates = torch.ones(3, 2)
    adv = ModelPoisoning(SignFlip(), num_byzantine=0)
    out = adv.poison_updates(updates, torch.zeros(3, dtype=torch.bool), None, 0, fedkit.key(0))
    assert torch.equal(out, updates)


def test_every_participant_byzantine_falls_back_to_own_rows():
    updates = torch.tensor([[1.0, 1.0], [3.0, 5.0], [7.0, 7.0]])
    byz = torch.tensor([True, True, False])
    weights = torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(visible_rows(updates, byz, weights, "omniscient"), updates[:2])


def test_bad_round_inputs_are_rejected():
    adv = ModelPoisoning(SignFlip(), num_byzantine=1)
    with pytest.raises(ValueError, match="byzantine"):
        adv.poison_updates(torch.ones(3, 2), torch.tensor([1, 0, 0]), None, 0, fedkit.key(0))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        adv.poison_updates(torch.ones(3), torch.zeros(3, dtype=torch.bool), None, 0, fedkit.key(0))


def test_data_poisoning_adversaries():
    x = torch.zeros(6, 1, 5, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    flip = DataPoisoning(LabelFlip(num_classes=3, target=1), num_byzantine=2)
    px, py = flip.poison_data(4, x, y, fedkit.key(0))
    assert px is x and torch.equal(py, torch.ones(6, dtype=torch.int64))
    updates = torch.ones(3, 2)
    assert flip.poison_updates(updates, torch.ones(3, dtype=torch.bool), None, 0, None) is updates
    combined = CombinedPoisoning(
        Backdoor(target=2, fraction_poisoned=1.0), Scaling(factor=4.0), num_byzantine=1
    )
    _, cy = combined.poison_data(0, x, y, fedkit.key(0))
    assert torch.equal(cy, torch.full((6,), 2))
    byz = torch.tensor([False, True, False])
    rows = torch.tensor([[1.0, 1.0], [2.0, -1.0], [9.0, 9.0]])
    out = combined.poison_updates(rows, byz, None, 0, fedkit.key(0))
    assert torch.equal(out[1], torch.tensor([8.0, -4.0]))  # partial knowledge: own row × 4
