"""The one run driver: transports only move messages, callbacks see every round, resume is
refused for another configuration and says what differs, records carry the parameters."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from helpers import strategy, tiny_task
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

import fedkit
from fedkit.run import CheckpointError
from fedkit.run.callbacks import Callback, EventLog
from fedkit.run.driver import run
from fedkit.run.fingerprint import differences, fingerprint
from fedkit.run.transport import Exchange
from fedkit.simulation import InProcessTransport, SequentialEngine


@pytest.fixture(scope="module")
def task():
    return tiny_task()


def test_resume_refuses_another_configuration_and_names_the_difference(task, tmp_path):
    fedkit.simulate(task, strategy(), rounds=2, key=0, checkpoint_dir=tmp_path, progress=False)
    other = strategy(lr=0.2)
    with pytest.raises(CheckpointError, match=r"strategy\.client\.lr: 0\.1 -> 0\.2"):
        fedkit.simulate(
            task, other, rounds=3, key=0, checkpoint_dir=tmp_path, resume=True, progress=False
        )
    # the same configuration resumes
    again = fedkit.simulate(
        task, strategy(), rounds=3, key=0, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert again.record["run"]["resumed_from"] == 2
    assert [e["event"] for e in again.events] == ["resume"]


def test_a_fresh_run_refuses_a_used_checkpoint_directory(task, tmp_path):
    fedkit.simulate(task, strategy(), rounds=1, key=0, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        fedkit.simulate(task, strategy(), rounds=1, key=0, checkpoint_dir=tmp_path, progress=False)


def test_record_files_hold_the_record_and_the_final_parameters(task, tmp_path):
    h = fedkit.simulate(task, strategy(), rounds=2, key=4, log_dir=tmp_path, progress=False)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["format"] == "fedkit.run/1" and record["run"]["fingerprint"]
    params = load_file(str(tmp_path / "record.safetensors"))["params"]
    assert torch.equal(params, h.final_params)


@attrs.define
class Reversed:
    """A transport that delivers what another delivers, in reverse arrival order."""

    inner: InProcessTransport
    name: str = "reversed"

    def start(self, run):
        self.inner.start(run)

    def stop(self):
        self.inner.stop()

    def describe(self):
        return {"name": self.name}

    def exchange(self, state, plan):
        got = self.inner.exchange(state, plan)
        return attrs.evolve(got, replies=list(reversed(got.replies)))


@attrs.define
class Silent:
    """A transport whose messages never come back."""

    name: str = "silent"

    def start(self, run):
        pass

    def stop(self):
        pass

    def describe(self):
        return {"name": self.name}

    def exchange(self, state, plan):
        return Exchange(replies=[], lost={"late": len(plan.asked)})


def test_arrival_order_does_not_change_the_run(task):
    s = strategy()
    direct = run(task, s, InProcessTransport(SequentialEngine()), rounds=3, key=1)
    reordered = run(task, s, Reversed(InProcessTransport(SequentialEngine())), rounds=3, key=1)
    assert torch.equal(direct.final_params, reordered.final_params)
    assert reordered.record["run"]["engine_used"] == "reversed"


def test_a_transport_that_loses_everything_skips_rounds_and_goes_on(task):
    s = strategy()
    h = run(task, s, Silent(), rounds=3, key=1)
    assert torch.equal(h.final_params, task.init(fedkit.split(fedkit.key(1), 4)[0]))
    assert [m["quorum_missed"] for m in h.metrics] == [True] * 3
    assert h.record["counters"]["lost"] == {"late": 12}


def test_callbacks_see_every_round_and_the_event_log_is_json_lines(task, tmp_path):
    seen = []

    class Spy(Callback):
        def on_round_end(self, run, metrics):
            seen.append((metrics["round"], run.state.round))

    fedkit.simulate(
        task,
        strategy(),
        rounds=3,
        key=2,
        progress=False,
        callbacks=[Spy(), EventLog(tmp_path / "events.jsonl")],
    )
    assert seen == [(1, 1), (2, 2), (3, 3)]
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["run_start", "round", "round", "round", "run_end"]


def test_a_task_without_the_protocol_is_refused_by_name():
    class NotATask:
        name = "broken"

    with pytest.raises(TypeError, match=r"NotATask does not implement fedkit\.protocols\.Task"):
        run(NotATask(), strategy(), Silent(), rounds=1, key=0)


leaves = st.one_of(st.integers(-5, 5), st.floats(-2, 2, allow_nan=False), st.text(max_size=3))
trees = st.recursive(
    leaves,
    lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    max_leaves=8,
)


@given(trees)
def test_a_tree_has_no_differences_with_itself(tree):
    assert differences(tree, tree) == []
    assert fingerprint(tree) == fingerprint(json.loads(json.dumps(tree)))


@given(st.dictionaries(st.sampled_from("abcd"), st.integers(0, 9), min_size=1), st.data())
def test_a_changed_leaf_is_named_with_its_path(tree, data):
    name = data.draw(st.sampled_from(sorted(tree)))
    changed = {**tree, name: tree[name] + 1}
    nested_old, nested_new = {"outer": tree}, {"outer": changed}
    assert differences(nested_old, nested_new) == [
        f"outer.{name}: {tree[name]} -> {tree[name] + 1}"
    ]
    assert fingerprint(nested_old) != fingerprint(nested_new)
