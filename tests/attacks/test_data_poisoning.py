"""Label flipping, backdoor triggers and their metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import fedkit
from attacks.data import (
    Backdoor,
    PixelTrigger,
    backdoor,
    backdoor_success_rate,
    clean_accuracy,
    label_flip,
    stamp,
)


@st.composite
def labels(draw, max_n=30):
    c = draw(st.integers(2, 10))
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return torch.as_tensor(rng.integers(0, c, size=n)), c


@given(data=labels(), seed=st.integers(0, 2**31 - 1))
def test_label_flip_applies_the_permutation(data, seed):
    y, c = data
    perm = np.random.default_rng(seed).permutation(c).tolist()
    before = y.clone()
    out = label_flip(y, num_classes=c, permutation=perm)
    assert torch.equal(y, before)
    assert out.tolist() == [perm[v] for v in y.tolist()]
    assert label_flip(y, num_classes=c).tolist() == [c - 1 - v for v in y.tolist()]


@given(data=labels())
def test_label_flip_to_a_target(data):
    y, c = data
    assert torch.equal(label_flip(y, num_classes=c, target=c - 1), torch.full_like(y, c - 1))
    out = label_flip(y, num_classes=c, source=0, target=1)
    assert torch.equal(out, torch.where(y == 0, torch.ones_like(y), y))


def test_label_flip_rejects_bad_input():
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="permutation of range"):
        label_flip(y, num_classes=3, permutation=[0, 0, 1])
    with pytest.raises(ValueError, match="not both"):
        label_flip(y, num_classes=3, permutation=[0, 1, 2], target=1)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        label_flip(torch.tensor([3]), num_classes=3)
    with pytest.raises(ValueError, match="class index"):
        label_flip(y, num_classes=3, target=3)
    with pytest.raises(TypeError, match="integer"):
        label_flip(y.float(), num_classes=3)
    with pytest.raises(ValueError, match="source needs a target"):
        label_flip(y, num_classes=3, source=1)


def test_pixel_trigger_mask_hand_computed():
    mask = PixelTrigger(size=2, margin=1, corner="top_left").mask(5, 6)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(mask, expected)
    mask = PixelTrigger(size=2, corner="bottom_right").mask(5, 6)
    expected = torch.zeros(5, 6, dtype=torch.bool)
    expected[3:5, 4:6] = True
    assert torch.equal(mask, expected)
    with pytest.raises(ValueError, match="does not fit"):
        PixelTrigger(size=4, margin=2).mask(5, 5)


@given(
    n=st.integers(1, 20),
    frac=st.floats(0, 1),
    k=keys,
    corner=st.sampled_from(["top_left", "top_right", "bottom_left", "bottom_right"]),
)
def test_backdoor_poisons_exactly_the_fraction(n, frac, k, corner):
    rng = np.random.default_rng(n)
    x = torch.as_tensor(rng.uniform(0, 0.5, size=(n, 2, 6, 7)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 4, size=n))
    trigger = PixelTrigger(size=2, value=0.9, corner=corner)
    before = (x.clone(), y.clone())
    px, py = backdoor(x, y, target=3, trigger=trigger, fraction_poisoned=frac, key=k)
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])
    changed = (px != x).flatten(1).any(dim=1)
    assert int(changed.sum()) == int(np.floor(frac * n + 1e-9))
    assert torch.equal(py[changed], torch.full((int(changed.sum()),), 3))
    assert torch.equal(py[~changed], y[~changed])
    mask = trigger.mask(6, 7)
    assert bool((px[changed][..., mask] == 0.9).all())
    assert torch.equal(px[changed][..., ~mask], x[changed][..., ~mask])
    again = backdoor(x, y, target=3, trigger=trigger, fraction_poisoned=frac, key=k)
    assert torch.equal(px, again[0]) and torch.equal(py, again[1])


def test_backdoor_value_and_errors():
    x = torch.zeros(4, 1, 5, 5)
    y = torch.tensor([0, 1, 2, 3])
    px, py = Backdoor(target=1, fraction_poisoned=1.0)(x, y)
    assert torch.equal(py, torch.ones(4, dtype=torch.int64))
    assert torch.equal(px, stamp(x, PixelTrigger()))
    with pytest.raises(ValueError, match="key"):
        backdoor(x, y, target=1, fraction_poisoned=0.5)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        backdoor(torch.zeros(4, 25), y, target=1, key=fedkit.key(0))
    with pytest.raises(ValueError, match="labels"):
        backdoor(x, y[:3], target=1, key=fedkit.key(0))


def _trigger_detector(trigger, target, fallback):
    """A 'model' that answers ``target`` when the trigger is present, else ``fallback(x)``."""

    def predict(x):
        mask = trigger.mask(x.shape[-2], x.shape[-1])
        present = (x[..., mask] == trigger.value).flatten(1).all(dim=1)
        return torch.where(present, torch.full_like(fallback(x), target), fallback(x))

    return predict


def test_metrics():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.uniform(0, 0.5, size=(10, 1, 6, 6)), dtype=torch.float32)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    trigger = PixelTrigger()
    truth = dict(enumerate(y.tolist()))
    index = {float(x[i].sum()): i for i in range(10)}

    def oracle(batch):  # the right label for clean inputs, class 0 for anything unknown
        return torch.tensor([truth.get(index.get(float(b.sum()), -1), 0) for b in batch])

    assert clean_accuracy(oracle, x, y) == 1.0
    assert clean_accuracy(lambda b: torch.zeros(b.shape[0], dtype=torch.int64), x, y) == 0.3
    logits = lambda b: torch.nn.functional.one_hot(oracle(b), 3).float()  # noqa: E731
    assert clean_accuracy(logits, x, y, batch_size=3) == 1.0
    backdoored = _trigger_detector(trigger, 2, oracle)
    assert clean_accuracy(backdoored, x, y) == 1.0
    assert backdoor_success_rate(backdoored, x, y, trigger, 2, batch_size=4) == 1.0
    # the oracle has no backdoor: it classifies every stamped input as 0
    assert backdoor_success_rate(oracle, x, y, trigger, 2) == 0.0
    assert backdoor_success_rate(oracle, x, y, trigger, 1) == 0.0
    assert backdoor_success_rate(oracle, x, y, trigger, 0) == 1.0  # over labels 1 and 2 only
    with pytest.raises(ValueError, match="undefined"):
        backdoor_success_rate(oracle, x[:1], y[:1], trigger, 0)
