"""fedkit.simulate: determinism, engine equivalence, reference steps, adversary and fault
hooks, results records."""

from __future__ import annotations

import json
import warnings

import attrs
import pytest
import torch
from faults_for_tests import Recorder, Scripted, without_times
from helpers import Mean, TinyBN, strategy, tiny_task
from torch import nn

import fedkit
from fedkit.protocols import FaultKind
from fedkit.simulation import VectorizedEngine


@pytest.fixture(scope="module")
def task():
    return tiny_task()


def run(task, strat, rounds=3, key=0, **kw):
    kw.setdefault("engine", "sequential")
    return fedkit.simulate(task, strat, rounds=rounds, key=key, progress=False, **kw)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_same_key_same_bits_other_key_other_result(task, engine):
    s = strategy(momentum=0.5)
    a, b, c = (run(task, s, key=k, engine=engine) for k in (0, 0, 1))
    assert torch.equal(a.final_params, b.final_params)
    assert without_times(a.metrics) == without_times(b.metrics)
    assert not torch.equal(a.final_params, c.final_params)
    assert a.record["run"]["engine_used"] == engine


@pytest.mark.parametrize(
    "client",
    [
        {},
        {"momentum": 0.9, "weight_decay": 0.01},
        {"optimizer": "adam", "lr": 0.01, "prox_mu": 0.5},
        {"steps": 5, "batch_size": None},
    ],
    ids=["sgd", "momentum", "adam-prox", "full-batch-steps"],
)
def test_sequential_and_vectorized_agree(task, client):
    s = fedkit.Strategy(
        client=fedkit.ClientConfig(**{"epochs": 3, "batch_size": 4, "lr": 0.1, **client}),
        server=Mean(),
        clients_per_round=5,
        stragglers=fedkit.PartialWork(0.5, "partial"),
    )
    seq = run(task, s, engine="sequential")
    vec = run(task, s, engine="vectorized")
    torch.testing.assert_close(seq.final_params, vec.final_params, atol=1e-5, rtol=1e-4)
    for a, b in zip(seq.metrics, vec.metrics):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["stragglers"] == b["stragglers"] == 2


def test_fedavg_one_client_one_full_batch_step_is_centralised_sgd():
    task = tiny_task(sizes=(10,))
    x0 = task.init(fedkit.key(5))
    s = fedkit.Strategy(client=fedkit.ClientConfig(steps=1, batch_size=None, lr=0.5), server=Mean())
    out = run(task, s, rounds=1, init_params=x0).final_params
    module = task.model_fn()
    module.load_state_dict(
        {k: v.clone() for k, v in fedkit.unflatten(x0.clone(), task.spec).items()}
    )
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    nn.functional.cross_entropy(module(task.client_x[0]), task.client_y[0]).backward()
    opt.step()
    torch.testing.assert_close(
        out, torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    )


def test_fedprox_with_mu_zero_is_fedavg(task):
    fedavg = strategy()
    fedprox = strategy(prox_mu=0.0)
    a, b = run(task, fedavg), run(task, fedprox)
    assert torch.equal(a.final_params, b.final_params)
    assert not torch.equal(a.final_params, run(task, strategy(prox_mu=0.1)).final_params)


def test_batch_norm_model_falls_back_to_sequential_once():
    task = tiny_task(model=TinyBN)
    with pytest.warns(RuntimeWarning, match="batch-norm") as caught:
        h = fedkit.simulate(
            task, strategy(batch_size=None), rounds=2, key=0, engine="vectorized", progress=False
        )
    assert len([w for w in caught if "vectorised engine" in str(w.message)]) == 1
    assert h.record["run"]["engine_used"] == "sequential"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            run(tiny_task(), strategy(), rounds=1, engine="auto").record["run"]["engine_used"]
            == "vectorized"
        )


def test_adversary_hooks_get_the_right_clients_mask_and_weights(task):
    s = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4), server=Mean())  # all 6 clients
    adv = Recorder(ids=(1, 4))
    h = run(task, s, rounds=2, adversary=adv)
    assert adv.calls[0] == ("controlled", 6)
    data_calls = [c[1] for c in adv.calls if c[0] == "data"]
    assert data_calls == [1, 4, 1, 4]
    update_calls = [c for c in adv.calls if c[0] == "updates"]
    assert [c[1] for c in update_calls] == [1, 2]
    for _, _, mask, weights, _ in update_calls:
        assert mask.tolist() == [False, True, False, False, True, False]
        assert weights.tolist() == [7.0, 12.0, 3.0, 9.0, 5.0, 10.0]
    assert h.record["attack"]["controlled"] == [1, 4]
    assert h.metrics[0]["byzantine"] == 2
    # honest rows are what honest clients computed; the flipped labels change the byzantine rows
    silent = Recorder(ids=(0,))
    run(task, s, rounds=1, adversary=silent)
    honest_matrix = silent.calls[-1][4]
    first = update_calls[0][4]
    assert torch.equal(first[[2, 3, 5]], honest_matrix[[2, 3, 5]])
    assert not torch.equal(first[[1, 4]], honest_matrix[[1, 4]])


def test_poisoned_rows_pass_through_validation(task):
    s = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4), server=Mean())
    h = run(task, s, rounds=2, adversary=Recorder(ids=(1, 4), nan_rows=True))
    assert all(m["rejected"] == {"non_finite": 2} and m["accepted"] == 4 for m in h.metrics)
    assert torch.isfinite(h.final_params).all()


def test_every_fault_kind_is_counted_and_the_run_goes_on(task):
    s = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4), server=Mean(), deadline=1.0)
    faults = Scripted(
        kinds={
            0: FaultKind.DROP,
            1: FaultKind.LATE,
            2: FaultKind.LATE,
            3: FaultKind.CORRUPT,
            4: FaultKind.STALE,
            5: FaultKind.DUPLICATE,
        },
        latency={1: 5.0, 2: 0.5},
        detail={4: 2},
    )
    h = run(task, s, rounds=2, faults=faults)
    for m in h.metrics:
        assert (m["expected"], m["received"], m["valid"], m["accepted"]) == (6, 5, 2, 2)
        assert m["rejected"] == {"non_finite": 1, "stale": 1, "duplicate": 1}
        assert m["lost"] == {"dropped": 1, "late": 1}
        assert m["faults"] == {"drop": 1, "late": 2, "corrupt": 1, "stale": 1, "duplicate": 1}
    only = Scripted(kinds={c: FaultKind.DROP for c in (0, 1, 3, 4)})
    assert torch.equal(h.final_params, run(task, s, rounds=2, faults=only).final_params)
    counters = h.record["counters"]
    assert counters["lost"] == {"dropped": 2, "late": 2} and counters["rejected"]["duplicate"] == 2


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        (0, "non_finite"),
        (1, "non_finite"),
        (2, "wrong_shape"),
        (3, "wrong_dtype"),
        (4, "malformed"),
        (5, "oversized"),
    ],
)
def test_each_corruption_is_rejected(task, detail, reason):
    s = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4), server=Mean())
    h = run(task, s, rounds=1, faults=Scripted(kinds={2: FaultKind.CORRUPT}, detail={2: detail}))
    assert h.metrics[0]["rejected"] == {reason: 1} and h.metrics[0]["accepted"] == 5


def test_quorum_miss_keeps_the_parameters(task):
    s = fedkit.Strategy(client=fedkit.ClientConfig(batch_size=4), server=Mean(), quorum=2)
    x0 = task.init(fedkit.key(0))
    h = run(
        task,
        s,
        rounds=2,
        faults=Scripted(kinds={c: FaultKind.DROP for c in range(1, 6)}),
        init_params=x0,
    )
    assert all(m["quorum_missed"] and m["accepted"] == 0 and m["valid"] == 1 for m in h.metrics)
    assert torch.equal(h.final_params, x0) and h.state.round == 2
    assert h.record["counters"]["quorum_missed"] == 2


def test_dropped_stragglers_are_lost(task):
    s = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=3, batch_size=4),
        server=Mean(),
        stragglers=fedkit.PartialWork(0.5, "drop"),
    )
    h = run(task, s, rounds=2, engine="vectorized")
    assert all(
        m["lost"] == {"straggler": 3} and m["accepted"] == 3 and m["stragglers"] == 3
        for m in h.metrics
    )


def test_record_and_tensorboard_are_written(task, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    h = run(task, strategy(), rounds=3, key=11, log_dir=tmp_path, eval_every=2)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record == h.record
    assert record["format"] == "fedkit.run/1" and record["run"]["seed"] == 11
    assert record["run"]["key"] == fedkit.key(11).to_hex()
    assert record["strategy"]["_target_"] == "fedkit.strategy.Strategy"
    assert record["strategy"]["client"]["_target_"] == "fedkit.client.ClientConfig"
    assert set(record["versions"]) >= {"python", "torch", "fedkit", "flwr"}
    assert [m["round"] for m in record["metrics"]] == [1, 2, 3]
    assert "test_accuracy" not in record["metrics"][0] and "test_accuracy" in record["metrics"][1]
    assert record["final"]["test_accuracy"] == record["metrics"][2]["test_accuracy"]
    assert record["counters"]["expected"] == 12 and record["timings"]["total_s"] > 0
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.step for e in events.Scalars("test/accuracy")] == [2, 3]
    assert [e.step for e in events.Scalars("replies/accepted")] == [1, 2, 3]
    h.save(tmp_path / "again.json", params=True)
    assert fedkit.simulation.History.load_record(tmp_path / "again.json") == h.record
    assert (tmp_path / "again.safetensors").exists()


def test_bad_arguments_are_refused(task):
    with pytest.raises(ValueError, match="engine must be one of"):
        run(task, strategy(), engine="ray")
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_dir"):
        run(task, strategy(), resume=True)
    with pytest.raises(TypeError, match="does not implement"):
        run(task, strategy(), faults=object())
    with pytest.raises(TypeError, match="key must be"):
        run(task, strategy(), key="seed")


@attrs.frozen(eq=False)
class PullTowardsTargets:
    """A task with its own training loop: client c moves ``lr`` of the way to its target."""

    targets: torch.Tensor
    name = "pull"
    meta = {}  # noqa: RUF012

    @property
    def num_clients(self):
        return self.targets.shape[0]

    @property
    def spec(self):
        return fedkit.spec_of({"w": self.targets[0]})

    def client_size(self, client):
        return 1

    def init(self, key):
        return torch.zeros(self.targets.shape[1])

    def train_client(self, params, client, cfg, work, key):
        gap = self.targets[client] - params
        return cfg.lr * gap, 1, {"loss": float(gap.pow(2).sum()), "steps": work}

    def evaluate(self, params):
        return {"distance": float((params - self.targets.mean(0)).norm())}


def test_a_task_with_its_own_training_loop_runs_sequentially():
    task = PullTowardsTargets(torch.tensor([[1.0, 2.0], [3.0, -2.0], [5.0, 3.0]]))
    s = fedkit.Strategy(client=fedkit.ClientConfig(lr=1.0), server=Mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = fedkit.simulate(task, s, rounds=2, key=0, engine="auto", progress=False)
    torch.testing.assert_close(h.final_params, torch.tensor([3.0, 1.0]))
    assert h.record["run"]["engine_used"] == "sequential"
    assert h.metrics[-1]["distance"] == 0.0 and h.metrics[0]["train_loss"] == pytest.approx(52 / 3)


def test_vectorized_chunks_of_clients_give_the_same_result(task):
    s = strategy(momentum=0.5)
    whole = run(task, s, engine="vectorized")
    chunked = run(task, s, engine=VectorizedEngine(max_parallel=2))
    torch.testing.assert_close(whole.final_params, chunked.final_params, atol=1e-6, rtol=1e-5)
    assert chunked.record["run"]["engine"] == "VectorizedEngine"


def test_progress_bar_runs(task, capsys):
    h = fedkit.simulate(task, strategy(), rounds=2, key=0, progress=True)
    assert len(h.metrics) == 2
    assert "rounds" in capsys.readouterr().err


@pytest.mark.slow
def test_digits_engines_agree_and_learn():
    from fedkit.tasks import digits

    task = digits(20, partition="dirichlet", alpha=0.5, key=0)
    s = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.9),
        server=Mean(),
        clients_per_round=8,
        stragglers=fedkit.PartialWork(0.5, "partial"),
    )
    seq = fedkit.simulate(task, s, rounds=5, key=2, engine="sequential", progress=False)
    vec = fedkit.simulate(task, s, rounds=5, key=2, engine="vectorized", progress=False)
    torch.testing.assert_close(seq.final_params, vec.final_params, atol=1e-4, rtol=1e-4)
    assert vec.metrics[-1]["test_accuracy"] > 0.5
    assert vec.metrics[-1]["test_accuracy"] == pytest.approx(
        seq.metrics[-1]["test_accuracy"], abs=0.01
    )
