"""The restore shared by the simulation and the Flower ServerApp: never past the round asked
for, never another run's or model's checkpoint; a saved round supersedes later leftovers;
a fresh run can refuse a used directory."""

import pytest
import torch

from fedkit.core.flat import spec_of
from fedkit.core.keys import key
from fedkit.run import checkpoint as ckpt

SPEC = spec_of({"w": torch.zeros(2, 3)})
OTHER_SPEC = spec_of({"w": torch.zeros(3, 3)})


def save(directory, round, run_key, value=None, spec=SPEC):
    state = torch.full((spec.size,), float(round if value is None else value))
    meta = {"history": [{"round": r} for r in range(1, round + 1)], "spec": spec.to_dict()}
    ckpt.save(directory, round, {"state": state, "key": run_key}, meta, keep=3)


def test_no_directory_or_no_checkpoint_gives_the_initial_state(tmp_path):
    state0 = torch.zeros(SPEC.size)
    for directory in (None, tmp_path / "empty"):
        got = ckpt.restore(state0, directory, key(0), SPEC)
        assert got.state is state0
        assert (got.history, got.events, got.tree) == ([], [], {})


def test_restore_never_goes_past_the_round_asked_for(tmp_path):
    for r in (1, 2, 3):
        save(tmp_path, r, key(0))
    got = ckpt.restore(torch.zeros(SPEC.size), tmp_path, key(0), SPEC, upto=2)
    assert torch.equal(got.state, torch.full((SPEC.size,), 2.0))
    assert [h["round"] for h in got.history] == [1, 2]
    newest = ckpt.restore(torch.zeros(SPEC.size), tmp_path, key(0), SPEC)
    assert torch.equal(newest.state, torch.full((SPEC.size,), 3.0))
    assert newest.tree["key"] == key(0)


def test_saving_a_round_removes_later_leftovers_of_another_run(tmp_path):
    for r in (4, 5, 6):
        save(tmp_path, r, key(0), value=-1.0)  # an earlier run, same key
    save(tmp_path, 1, key(0))
    assert ckpt.rounds_on_disk(tmp_path) == [1]
    got = ckpt.restore(torch.zeros(SPEC.size), tmp_path, key(0), SPEC)
    assert torch.equal(got.state, torch.full((SPEC.size,), 1.0))


def test_keep_counts_only_rounds_up_to_the_saved_one(tmp_path):
    for r in (1, 2, 3, 4, 5):
        save(tmp_path, r, key(0))
    assert ckpt.rounds_on_disk(tmp_path) == [5, 4, 3]


def test_another_runs_or_models_checkpoint_is_refused(tmp_path):
    save(tmp_path / "a", 1, key(1))
    with pytest.raises(ckpt.CheckpointError, match="written by a run with key"):
        ckpt.restore(torch.zeros(SPEC.size), tmp_path / "a", key(0), SPEC)
    save(tmp_path / "b", 1, key(0), spec=OTHER_SPEC)
    with pytest.raises(ckpt.CheckpointError, match="another model"):
        ckpt.restore(torch.zeros(SPEC.size), tmp_path / "b", key(0), SPEC)


def test_a_fresh_run_refuses_a_used_directory(tmp_path):
    ckpt.require_fresh(tmp_path / "missing")
    ckpt.require_fresh(tmp_path)
    save(tmp_path, 2, key(0))
    with pytest.raises(ckpt.CheckpointError, match=r"already holds checkpoints \(rounds \[2\]\)"):
        ckpt.require_fresh(tmp_path)
