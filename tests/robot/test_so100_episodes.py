"""Episode hold-out and client splits of the SO-100 task (pure functions, no LeRobot), and
the lazy import rule: ``import fedkit`` never imports LeRobot."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import fedkit
from fedkit.tasks.so100 import (
    Episode,
    So100Config,
    assign_clients,
    batch_order,
    eval_frames,
    holdout,
)


@st.composite
def tables(draw, min_sources=1, max_sources=3, max_episodes=9, max_tasks=4):
    """An episode table: a few sources, each with a few episodes and task strings."""
    rows = []
    for s in range(draw(st.integers(min_sources, max_sources))):
        for e in range(draw(st.integers(2, max_episodes))):
            task = f"task {draw(st.integers(0, max_tasks - 1))}"
            rows.append(Episode(s, e, task, f"{s:03d}:so100:repo{s}", draw(st.integers(1, 50))))
    return tuple(rows)


def _check_partition(clients, train):
    flat = [e for c in clients for e in c]
    assert sorted(flat) == sorted(train)  # every training episode exactly once
    assert all(c and list(c) == sorted(c) for c in clients)


@given(tables(), st.integers(1, 1), keys)
def test_holdout_int_takes_that_many_episodes_per_source(table, h, key):
    train, held = holdout(table, h, key)
    assert set(train).isdisjoint(held) and sorted(train + held) == list(range(len(table)))
    per_source = {}
    for i in held:
        per_source[table[i].source] = per_source.get(table[i].source, 0) + 1
    assert per_source == {s: h for s in {e.source for e in table}}
    assert holdout(table, h, key) == (train, held)


def test_holdout_explicit_ids_and_bad_input():
    table = tuple(Episode(0, e, "t", "r", 5) for e in range(4))
    assert holdout(table, [3, 1], fedkit.key(0)) == ((0, 2), (1, 3))
    with pytest.raises(ValueError, match="distinct episode ids"):
        holdout(table, [4], fedkit.key(0))
    with pytest.raises(ValueError, match="cannot hold out"):
        holdout(table, 4, fedkit.key(0))
    with pytest.raises(ValueError, match="nothing left"):
        holdout(table, [0, 1, 2, 3], fedkit.key(0))


@given(tables(), st.integers(1, 4), keys)
def test_episode_split_is_a_balanced_partition(table, num_clients, key):
    train = tuple(range(len(table)))
    if len(train) < num_clients:
        with pytest.raises(ValueError, match="one training episode per client"):
            assign_clients(table, train, num_clients, "episodes", key)
        return
    clients = assign_clients(table, train, num_clients, "episodes", key)
    _check_partition(clients, train)
    sizes = [len(c) for c in clients]
    assert max(sizes) - min(sizes) <= 1
    assert assign_clients(table, train, num_clients, "episodes", key) == clients


@given(tables(), st.integers(1, 3), st.sampled_from(["task", "robot"]), keys)
def test_group_splits_keep_each_group_on_one_client(table, num_clients, split, key):
    train = tuple(range(len(table)))
    label = (lambda e: e.task) if split == "task" else (lambda e: e.robot)
    groups = {label(e) for e in table}
    if len(groups) < num_clients:
        with pytest.raises(ValueError, match="fewer than num_clients"):
            assign_clients(table, train, num_clients, split, key)
        return
    clients = assign_clients(table, train, num_clients, split, key)
    _check_partition(clients, train)
    owner = {}
    for c, eps in enumerate(clients):
        for e in eps:
            assert owner.setdefault(label(table[e]), c) == c


def test_task_split_by_hand():
    tasks = ["b", "a", "c", "a", "b", "c"]
    table = tuple(Episode(0, e, t, "r", 3) for e, t in enumerate(tasks))
    # groups sorted by task: a -> client 0, b -> client 1, c -> client 0
    assert assign_clients(table, range(6), 2, "task", fedkit.key(0)) == ((1, 2, 3, 5), (0, 4))


@given(st.integers(1, 30), st.integers(0, 7), st.integers(1, 9), keys)
def test_batch_order_reads_whole_epochs(n, steps, batch_size, key):
    order = batch_order(n, steps, batch_size, key)
    assert order.shape == (steps, batch_size)
    stream = order.flatten()
    for start in range(0, stream.numel() - n + 1, n):  # every full epoch is a permutation
        assert torch.equal(stream[start : start + n].sort().values, torch.arange(n))
    assert torch.equal(batch_order(n, steps, batch_size, key), order)


def test_eval_frames_are_evenly_spaced():
    assert torch.equal(eval_frames(5, None), torch.arange(5))
    assert torch.equal(eval_frames(5, 9), torch.arange(5))
    assert eval_frames(101, 5).tolist() == [0, 25, 50, 75, 100]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown policy"):
        So100Config(repo_id="a/b", policy="pi0")
    with pytest.raises(ValueError, match="unknown split"):
        So100Config(repo_id="a/b", split="lab")
    with pytest.raises(ValueError, match="one root per source"):
        So100Config(repo_id=["a/b", "c/d", "e/f"], root=["x", "y"])
    with pytest.raises(ValueError, match="client_episodes lists 2 clients"):
        So100Config(repo_id="a/b", num_clients=3, client_episodes=[[0], [1]])
    with pytest.raises(ValueError, match="SmolVLA only"):
        So100Config(repo_id="a/b", policy="act", vlm_model_name="x")
    c = So100Config(repo_id=["a/b", "c/d"], root="x", policy_overrides={"chunk_size": 5})
    assert c.root == ("x", "x") and c.policy_overrides["chunk_size"] == 5
    with pytest.raises(TypeError):
        c.policy_overrides["chunk_size"] = 6  # read-only


def test_import_fedkit_does_not_import_lerobot():
    code = (
        "import sys, fedkit, fedkit.tasks, fedkit.tasks.so100; "
        "heavy = [m for m in ('lerobot', 'transformers', 'datasets') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
