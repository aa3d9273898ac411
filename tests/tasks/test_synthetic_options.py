"""Synthetic(α, β)'s options: a per-client sample cap and a data seed apart from the run's
seed; without them the data set is bit-identical to what it was before they existed."""

import hashlib
import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

import fedkit
from fedkit.tasks import synthetic
from fedkit.tasks.data.synthetic import synthetic_users

CONFIG = Path(__file__).resolve().parents[2] / "experiments/configs/task/synthetic.yaml"


def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def task_tensors(task):
    return (*task.client_x, *task.client_y, task.test_x, task.test_y)


# Recorded from the generator before the options were added (commit 5f29d67).
BEFORE = [
    # alpha, beta, iid, seed, synthetic_users digest, synthetic task digest
    (1.0, 1.0, False, 0, "b5be5c1b78772ae7", "c97d34beb2098b41"),
    (0.5, 0.5, False, 7, "c5cbcca6df1906b6", "a68ba116753cbcdc"),
    (0.0, 0.0, True, 3, "0d2e5cce01a0daeb", "d40a95110293782e"),
]


@pytest.mark.parametrize(("alpha", "beta", "iid", "seed", "users_hex", "task_hex"), BEFORE)
def test_defaults_are_bit_identical_to_before(alpha, beta, iid, seed, users_hex, task_hex):
    u = synthetic_users(alpha, beta, iid=iid, key=fedkit.key(seed))
    assert digest(u.x, u.y, u.user, u.sizes) == users_hex
    assert digest(*task_tensors(synthetic(alpha, beta, iid=iid, key=seed))) == task_hex
    explicit = synthetic(
        alpha, beta, iid=iid, max_samples_per_client=None, data_seed=None, key=seed
    )
    assert digest(*task_tensors(explicit)) == task_hex
    assert "max_samples_per_client" not in explicit.meta and "data_seed" not in explicit.meta


@given(cap=st.integers(1, 400), seed=st.integers(0, 2**31), iid=st.booleans())
def test_the_cap_keeps_a_prefix_of_each_users_uncapped_examples(cap, seed, iid):
    full = synthetic_users(1.0, 1.0, iid=iid, num_users=8, key=fedkit.key(seed))
    capped = synthetic_users(1.0, 1.0, iid=iid, num_users=8, max_samples=cap, key=fedkit.key(seed))
    assert int(capped.sizes.max()) <= cap
    assert torch.equal(capped.sizes, full.sizes.clamp(max=cap))
    assert torch.equal(torch.bincount(capped.user, minlength=8), capped.sizes)
    rank = torch.arange(full.user.numel()) - full.offsets[full.user]
    prefix = rank < cap
    assert torch.equal(capped.x, full.x[prefix])
    assert torch.equal(capped.y, full.y[prefix])
    assert torch.equal(capped.user, full.user[prefix])


@given(cap=st.integers(2, 300), seed=st.integers(0, 2**31))
def test_every_client_respects_the_cap(cap, seed):
    task = synthetic(0.5, 0.5, num_users=10, max_samples_per_client=cap, key=seed)
    train = torch.tensor([task.client_size(k) for k in range(task.num_clients)])
    test = torch.bincount(task.meta["test_users"], minlength=10)
    assert int((train + test).max()) <= cap
    assert int(train.max()) <= int(cap * 0.9) and int(train.min()) >= 1
    assert torch.equal(train + test, task.meta["user_sizes"])
    assert task.meta["max_samples_per_client"] == cap


@given(data_seed=st.integers(0, 2**31), a=st.integers(0, 2**31), b=st.integers(0, 2**31))
def test_one_data_seed_gives_the_same_clients_whatever_the_run_seed(data_seed, a, b):
    one = synthetic(1.0, 1.0, num_users=6, data_seed=data_seed, key=a)
    two = synthetic(1.0, 1.0, num_users=6, data_seed=data_seed, key=fedkit.key(b))
    assert digest(*task_tensors(one)) == digest(*task_tensors(two))
    # and it is the data set that run seed data_seed draws without the option
    assert digest(*task_tensors(one)) == digest(
        *task_tensors(synthetic(1.0, 1.0, num_users=6, key=data_seed))
    )
    assert one.meta["data_seed"] == fedkit.key(data_seed).to_hex()


def test_other_data_seeds_give_other_data():
    one = synthetic(1.0, 1.0, data_seed=1, key=0)
    two = synthetic(1.0, 1.0, data_seed=2, key=0)
    assert digest(*task_tensors(one)) != digest(*task_tensors(two))


@pytest.mark.parametrize("cap", [0, -3, 1, 1.5, True, "100"])
def test_a_cap_without_training_examples_or_not_an_int_is_refused(cap):
    with pytest.raises(ValueError, match="max_samples_per_client"):
        synthetic(1.0, 1.0, max_samples_per_client=cap, key=0)


@pytest.mark.parametrize("cap", [0, -1, 2.0, False])
def test_the_generator_refuses_a_bad_cap(cap):
    with pytest.raises(ValueError, match="max_samples must be None or an int >= 1"):
        synthetic_users(1.0, 1.0, max_samples=cap, key=fedkit.key(0))


def test_the_config_exposes_both_options_with_the_default_behaviour():
    cfg = OmegaConf.load(CONFIG)
    params = inspect.signature(synthetic).parameters
    assert set(cfg) - {"_target_"} <= set(params)  # config mirrors code
    assert cfg.max_samples_per_client is None and cfg.data_seed is None
    root = OmegaConf.create({"num_clients": 5, "seed": 3, "task": cfg})
    default = instantiate(root.task)
    assert digest(*task_tensors(default)) == digest(*task_tensors(synthetic(num_users=5, key=3)))
    capped = instantiate(root.task, max_samples_per_client=60, data_seed=11)
    assert max(capped.client_size(k) for k in range(5)) <= 54
    same = synthetic(num_users=5, max_samples_per_client=60, key=11)
    assert digest(*task_tensors(capped)) == digest(*task_tensors(same))
