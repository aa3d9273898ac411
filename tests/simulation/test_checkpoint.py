"""Checkpoints: resume is bit-identical, corrupted checkpoints fall back, server crashes
recover."""

from __future__ import annotations

import json

import pytest
import torch
from faults_for_tests import PowerCut, Scripted, without_times
from helpers import strategy, tiny_task

import fedkit
from fedkit.run import checkpoint as ckpt
from fedkit.simulation import CheckpointError
from fedkit.strategy import ServerState


@pytest.fixture(scope="module")
def task():
    return tiny_task()


@pytest.fixture(scope="module")
def strat():
    return strategy(optimizer="adam", lr=0.05)


@pytest.fixture(scope="module")
def uninterrupted(task, strat):
    return fedkit.simulate(task, strat, rounds=4, key=3, engine="sequential", progress=False)


def run(task, strat, **kw):
    kw.setdefault("rounds", 4)
    return fedkit.simulate(task, strat, key=3, engine="sequential", progress=False, **kw)


def test_resume_after_a_power_cut_is_bit_identical(task, strat, uninterrupted, tmp_path):
    with pytest.raises(RuntimeError, match="power cut"):
        run(task, strat, checkpoint_dir=tmp_path, faults=PowerCut(at=3))
    assert ckpt.rounds_on_disk(tmp_path) == [2, 1]
    resumed = run(task, strat, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed.final_params, uninterrupted.final_params)
    assert without_times(resumed.metrics) == without_times(uninterrupted.metrics)
    assert resumed.record["run"]["resumed_from"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_resume_with_more_rounds_continues_the_same_run(task, strat, uninterrupted, tmp_path):
    run(task, strat, rounds=2, checkpoint_dir=tmp_path, checkpoint_every=2)
    resumed = run(task, strat, rounds=4, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(resumed.final_params, uninterrupted.final_params)
    again = run(task, strat, rounds=4, checkpoint_dir=tmp_path, resume=True)
    assert (
        torch.equal(again.final_params, uninterrupted.final_params)
        and again.record["run"]["resumed_from"] == 4
    )


def test_resume_without_checkpoints_starts_afresh(task, strat, uninterrupted, tmp_path):
    h = run(task, strat, checkpoint_dir=tmp_path / "new", resume=True)
    assert (
        torch.equal(h.final_params, uninterrupted.final_params)
        and h.record["run"]["resumed_from"] is None
    )


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_or_partial_checkpoints_fall_back_to_older_ones(
    task, strat, uninterrupted, tmp_path
):
    run(task, strat, rounds=3, checkpoint_dir=tmp_path)
    assert ckpt.rounds_on_disk(tmp_path) == [3, 2, 1]
    _flip_a_byte(tmp_path / "ckpt_000003.safetensors")
    (tmp_path / "ckpt_000002.json").unlink()  # a partial checkpoint: blob without its JSON
    with pytest.warns(RuntimeWarning) as caught:
        resumed = run(task, strat, checkpoint_dir=tmp_path, resume=True)
    messages = [str(w.message) for w in caught]
    assert any("round 3" in m and "fails its checksum" in m for m in messages)
    assert any("round 2" in m and "missing" in m for m in messages)
    assert resumed.record["run"]["resumed_from"] == 1
    assert torch.equal(resumed.final_params, uninterrupted.final_params)


def test_damaged_json_is_detected(tmp_path):
    state = ServerState(round=1, params=torch.ones(3), chain_state=((torch.zeros(3),),))
    ckpt.save(tmp_path, 1, {"state": state}, {"history": []})
    path = tmp_path / "ckpt_000001.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not a valid checkpoint JSON"):
        ckpt.load(tmp_path, 1)
    doc = json.loads(text)
    doc["body"]["round"] = 1
    doc["body"]["meta"]["history"] = [{"round": 1}]
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        ckpt.load(tmp_path, 1)
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no usable checkpoint"):
        ckpt.load_latest(tmp_path)


def test_checkpoint_round_trips_the_server_state(tmp_path):
    state = ServerState(
        round=7, params=torch.arange(5.0), chain_state=((), (torch.ones(5), torch.tensor(2)))
    )
    ckpt.save(
        tmp_path, 7, {"state": state, "key": fedkit.key(1)}, {"history": [{"round": 7}]}, keep=1
    )
    ckpt.save(tmp_path, 8, {"state": state, "key": fedkit.key(1)}, {"history": []}, keep=1)
    assert ckpt.rounds_on_disk(tmp_path) == [8]
    back = ckpt.load_latest(tmp_path)
    assert back.round == 8 and back.tree["key"] == fedkit.key(1)
    assert torch.equal(back.tree["state"].params, state.params)
    assert torch.equal(back.tree["state"].chain_state[1][1], torch.tensor(2))


def test_resume_refuses_a_checkpoint_of_another_run(task, strat, tmp_path):
    run(task, strat, rounds=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="written by a run with key"):
        fedkit.simulate(
            task, strat, rounds=2, key=4, engine="sequential", checkpoint_dir=tmp_path, resume=True
        )


def test_server_crash_restores_the_newest_checkpoint(task, strat, uninterrupted, tmp_path):
    h = run(
        task, strat, checkpoint_dir=tmp_path, checkpoint_every=2, faults=Scripted(crash_after=(3,))
    )
    assert torch.equal(h.final_params, uninterrupted.final_params)
    assert [m["round"] for m in h.metrics] == [1, 2, 3, 4]
    (event,) = h.events
    assert (event["round"], event["restored_round"], event["rounds_lost"]) == (3, 2, 1)
    counters = h.record["counters"]
    assert (
        counters["server_crashes"] == 1
        and counters["rounds_lost"] == 1
        and counters["recovery_s"] >= 0
    )


def test_server_crash_without_checkpoints_restarts_from_scratch(task, strat, uninterrupted):
    with pytest.warns(RuntimeWarning, match="no checkpoint_dir"):
        h = run(task, strat, faults=Scripted(crash_after=(2,)))
    assert torch.equal(h.final_params, uninterrupted.final_params)
    assert h.events[0]["rounds_lost"] == 2 and h.events[0]["restored_round"] == 0


def test_a_fresh_run_refuses_a_directory_holding_another_runs_checkpoints(task, strat, tmp_path):
    run(task, strat, rounds=2, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        fedkit.simulate(task, strat, rounds=2, key=4, engine="sequential", checkpoint_dir=tmp_path)
    assert ckpt.rounds_on_disk(tmp_path) == [2, 1]  # nothing of the earlier run was touched
