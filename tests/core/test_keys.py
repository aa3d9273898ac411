"""Keys: determinism, independence, no global RNG, samplers' distributions."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fedkit

seeds = st.integers(-(2**70), 2**70)


@given(seeds)
def test_same_seed_same_key_and_draws(seed):
    a, b = fedkit.key(seed), fedkit.key(seed)
    assert a == b
    assert torch.equal(fedkit.core.keys.normal(a, 16), fedkit.core.keys.normal(b, 16))
    assert fedkit.split(a, 3) == fedkit.split(b, 3)
    assert fedkit.fold_in(a, 7) == fedkit.fold_in(b, 7)


@given(seeds, st.integers(2, 20))
def test_split_gives_distinct_keys(seed, num):
    k = fedkit.key(seed)
    children = fedkit.split(k, num)
    assert len(children) == num
    assert len(set(children) | {k}) == num + 1


@given(seeds, st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40))
def test_fold_in_distinct_data_distinct_keys(seed, a, b):
    k = fedkit.key(seed)
    assert (fedkit.fold_in(k, a) == fedkit.fold_in(k, b)) == (a == b)


def test_split_prefix_stable():
    k = fedkit.key(3)
    assert fedkit.split(k, 5)[:2] == fedkit.split(k, 2)


def test_keys_do_not_touch_global_rng():
    before = torch.random.get_rng_state()
    k = fedkit.key(0)
    fedkit.core.keys.normal(k, 100)
    fedkit.core.keys.uniform(k, 10)
    fedkit.core.keys.permutation(k, 10)
    fedkit.core.keys.choice(k, 10, 3)
    fedkit.core.keys.bernoulli(k, 0.3, 10)
    fedkit.core.keys.randint(k, 0, 5, 4)
    assert torch.equal(before, torch.random.get_rng_state())


def test_same_bits_in_another_process():
    code = (
        "import fedkit;"
        "print(fedkit.core.keys.normal(fedkit.fold_in(fedkit.key(42), 9), 4).tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = fedkit.core.keys.normal(fedkit.fold_in(fedkit.key(42), 9), 4).tolist()
    assert eval(out.stdout) == here


def test_key_hex_round_trip():
    k = fedkit.fold_in(fedkit.key(5), 2)
    assert fedkit.Key.from_hex(k.to_hex()) == k


def test_normal_moments():
    x = fedkit.core.keys.normal(fedkit.key(0), 200_000, mean=2.0, std=3.0, dtype=torch.float64)
    assert abs(x.mean().item() - 2.0) < 0.03
    assert abs(x.std().item() - 3.0) < 0.03


def test_uniform_range_and_mean():
    x = fedkit.core.keys.uniform(fedkit.key(1), 100_000, low=-2.0, high=4.0, dtype=torch.float64)
    assert x.min() >= -2.0 and x.max() < 4.0
    assert abs(x.mean().item() - 1.0) < 0.03


def test_bernoulli_rate():
    x = fedkit.core.keys.bernoulli(fedkit.key(2), 0.3, 100_000)
    assert x.dtype == torch.bool
    assert abs(x.float().mean().item() - 0.3) < 0.01


@given(seeds, st.integers(0, 50))
def test_permutation_is_a_permutation(seed, n):
    p = fedkit.core.keys.permutation(fedkit.key(seed), n)
    assert sorted(p.tolist()) == list(range(n))


@given(seeds, st.integers(1, 30), st.data())
def test_choice_without_replacement_distinct(seed, n, data):
    size = data.draw(st.integers(0, n))
    c = fedkit.core.keys.choice(fedkit.key(seed), n, size)
    assert len(set(c.tolist())) == size and all(0 <= i < n for i in c.tolist())


def test_choice_weighted_respects_zero_probability():
    p = torch.tensor([0.0, 1.0, 0.0, 3.0])
    c = fedkit.core.keys.choice(fedkit.key(0), 4, 1000, replace=True, p=p)
    assert set(c.tolist()) <= {1, 3}
    assert abs((c == 3).float().mean().item() - 0.75) < 0.05


def test_choice_errors():
    k = fedkit.key(0)
    with pytest.raises(ValueError, match="without replacement"):
        fedkit.core.keys.choice(k, 3, 4)
    with pytest.raises(ValueError, match="positive probability"):
        fedkit.core.keys.choice(k, 3, 2, p=torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(TypeError, match="Key"):
        fedkit.split(7)
