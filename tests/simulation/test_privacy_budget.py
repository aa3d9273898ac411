"""The privacy budget inside a run: ε per round in the record, a clean stop before the round
that would exceed the target (checkpoint written, reason recorded), resumable ledgers."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from helpers import tiny_task

import fedkit
from fedkit.aggregators import Mean
from fedkit.client import num_steps
from fedkit.run import checkpoint as ckpt
from privacy.accounting import epsilon, epsilon_of_history
from privacy.budget import CentralDPAccountant, DPSGDAccountant
from privacy.dpsgd import DPSGD
from privacy.mechanisms import dp_fedavg

DELTA = 1e-5


def _central(z=1.2, m=3, target=None):
    return fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, batch_size=4, lr=0.1),
        server=fedkit.chain(*dp_fedavg(0.5, z, m)),
        clients_per_round=m,
        sampling="poisson",
        quorum=0,
        accountant=CentralDPAccountant(noise_multiplier=z, delta=DELTA, target_epsilon=target),
    )


def _central_by_hand(rounds, z=1.2, q=0.5):
    return [epsilon(noise_multiplier=z, sample_rate=q, steps=r, delta=DELTA) for r in rounds]


def test_central_epsilon_per_round_matches_the_accountant_by_hand(tmp_path):
    task = tiny_task()  # 6 clients, 3 per round: q = 1/2
    h = fedkit.simulate(task, _central(), rounds=4, key=0, progress=False, log_dir=tmp_path)
    expected = _central_by_hand(range(1, 5))
    assert [m["epsilon"] for m in h.metrics] == pytest.approx(expected, rel=1e-12)
    budget = h.record["privacy_budget"]
    assert budget["epsilon"] == pytest.approx(expected[-1]) and budget["delta"] == DELTA
    assert budget["stopped"] is False and h.record["run"]["stopped"] is None
    assert budget["accountant"]["_target_"] == "privacy.budget.CentralDPAccountant"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    logged = events.Scalars("privacy/epsilon")
    assert [e.step for e in logged] == [1, 2, 3, 4]
    assert [e.value for e in logged] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("stop_after", [0, 2, 3])
def test_central_run_stops_before_the_round_that_would_exceed_the_target(tmp_path, stop_after):
    eps = _central_by_hand(range(1, 6))
    target = (eps[stop_after - 1] + eps[stop_after]) / 2 if stop_after else eps[0] / 2
    task = tiny_task()
    h = fedkit.simulate(
        task,
        _central(target=target),
        rounds=10,
        key=3,
        eval_every=5,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert h.state.round == stop_after and len(h.metrics) == stop_after
    stopped = h.record["run"]["stopped"]
    assert stopped["reason"] == "privacy_budget" and stopped["after_round"] == stop_after
    assert stopped["next_round_epsilon"] == pytest.approx(eps[stop_after])
    assert stopped["epsilon"] == pytest.approx(eps[stop_after - 1] if stop_after else 0.0)
    assert all(m["epsilon"] <= target for m in h.metrics)
    assert h.record["privacy_budget"]["stopped"] is True
    latest = ckpt.load_latest(tmp_path)
    assert latest.round == stop_after
    assert latest.tree["ledger"].steps == stop_after
    if stop_after:  # the last completed round is evaluated even off the eval schedule
        assert h.metrics[-1]["test_accuracy"] is not None


def test_dpsgd_budget_is_the_largest_client_epsilon_by_hand():
    task = tiny_task(sizes=(7, 12, 3, 9))
    setting = DPSGD(max_grad_norm=1.0, noise_multiplier=1.1, batch_size=3)
    cfg = fedkit.ClientConfig(epochs=1, lr=0.1, dp_sgd=setting)

    def eps_after(r):  # every client trains every round: r · steps local steps each
        return max(
            epsilon_of_history([(1.1, min(1.0, 3 / n), r * num_steps(n, 1, cfg))], delta=DELTA)
            for n in (7, 12, 3, 9)
        )

    expected = [eps_after(r) for r in range(1, 6)]
    target = (expected[2] + expected[3]) / 2
    strategy = fedkit.Strategy(
        client=cfg, server=Mean(), accountant=DPSGDAccountant(delta=DELTA, target_epsilon=target)
    )
    h = fedkit.simulate(task, strategy, rounds=8, key=1, progress=False, engine="vectorized")
    assert [m["epsilon"] for m in h.metrics] == pytest.approx(expected[:3], rel=1e-12)
    assert h.record["run"]["stopped"]["after_round"] == 3


def test_central_accountant_refuses_fixed_size_sampling_it_does_not_analyse():
    task = tiny_task()  # 6 clients, 3 per round drawn without replacement
    strategy = attrs.evolve(_central(), sampling="fixed")
    with pytest.raises(ValueError, match=r"Poisson client sampling.*sampling='fixed'"):
        fedkit.simulate(task, strategy, rounds=1, key=0, progress=False)
    # every client in every round (q = 1) needs no sampling analysis
    full = attrs.evolve(_central(m=6), clients_per_round=None, sampling="fixed")
    h = fedkit.simulate(task, full, rounds=2, key=0, progress=False)
    assert [m["epsilon"] for m in h.metrics] == pytest.approx(
        _central_by_hand([1, 2], q=1.0), rel=1e-12
    )


def test_budget_alerts_fire_once_per_fraction_and_at_the_stop(tmp_path, caplog):
    eps = _central_by_hand(range(1, 8))
    target = (eps[4] + eps[5]) / 2  # the run stops after round 5
    task = tiny_task()
    with caplog.at_level("WARNING", logger="fedkit.privacy"):
        h = fedkit.simulate(
            task, _central(target=target), rounds=8, key=0, progress=False, log_dir=tmp_path
        )
    fractions = [m["budget_fraction"] for m in h.metrics]
    assert fractions == pytest.approx([e / target for e in eps[:5]], rel=1e-12)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path))
    board.Reload()
    logged = {e.step: e.value for e in board.Scalars("privacy/budget_fraction")}
    assert [logged[r] for r in range(1, 6)] == pytest.approx(fractions, rel=1e-6)
    alerts = [e for e in h.events if e["event"] == "budget_alert"]
    expected = [f for f in (0.5, 0.8) if any(x >= f for x in fractions)] + [1.0]
    assert [a["fraction"] for a in alerts] == expected
    for a in alerts[:-1]:  # the first round at or past the fraction
        first = next(i for i, x in enumerate(fractions, 1) if x >= a["fraction"])
        assert a["round"] == first and a["epsilon"] == pytest.approx(eps[first - 1])
    assert alerts[-1]["reason"] == "exhausted" and alerts[-1]["round"] == 5
    assert len([r for r in caplog.records if "privacy budget" in r.getMessage()]) == len(alerts)


def test_poisson_sampling_runs_empty_rounds_and_still_releases_noise():
    task = tiny_task()
    z = 1.0
    strategy = attrs.evolve(_central(z=z, m=1), clients_per_round=1)  # q = 1/6
    h = fedkit.simulate(task, strategy, rounds=12, key=3, progress=False)
    sampled = [m["expected"] for m in h.metrics]
    assert 0 in sampled and len(set(sampled)) > 1  # Poisson: the count varies, may be 0
    empty = sampled.index(0) + 1
    # the empty round still moves the model (pure noise) and is charged like any other
    before = fedkit.simulate(task, strategy, rounds=empty - 1, key=3, progress=False)
    after = fedkit.simulate(task, strategy, rounds=empty, key=3, progress=False)
    assert not torch.equal(before.final_params, after.final_params)
    assert h.metrics[empty - 1]["accepted"] == 0
    assert [m["epsilon"] for m in h.metrics] == pytest.approx(
        _central_by_hand(range(1, 13), z=z, q=1 / 6), rel=1e-12
    )


def test_dpsgd_accountant_charges_only_the_clients_that_train():
    task = tiny_task()
    setting = DPSGD(max_grad_norm=1.0, noise_multiplier=1.0, batch_size=4)
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, lr=0.1, dp_sgd=setting),
        server=Mean(),
        clients_per_round=2,
        accountant=DPSGDAccountant(delta=DELTA),
    )
    h = fedkit.simulate(task, strategy, rounds=3, key=5, progress=False)
    sizes = [task.client_size(c) for c in range(task.num_clients)]
    rounds_in = {c: 0 for c in range(task.num_clients)}
    k_rounds = fedkit.split(fedkit.key(5), 4)[2]
    for r in range(1, 4):
        k_sample = fedkit.split(fedkit.fold_in(k_rounds, r), 6)[0]
        for c in strategy.sample(None, task.num_clients, k_sample).tolist():
            rounds_in[c] += 1
    by_hand = max(
        epsilon_of_history(
            [(1.0, min(1.0, 4 / sizes[c]), k * math.ceil(sizes[c] / min(4, sizes[c])))],
            delta=DELTA,
        )
        for c, k in rounds_in.items()
    )
    assert h.metrics[-1]["epsilon"] == pytest.approx(by_hand, rel=1e-12)


def test_a_resumed_run_continues_the_same_ledger(tmp_path):
    eps = _central_by_hand(range(1, 6))
    target = (eps[3] + eps[4]) / 2
    task = tiny_task()
    fedkit.simulate(
        task, _central(target=target), rounds=2, key=4, checkpoint_dir=tmp_path, progress=False
    )
    resumed = fedkit.simulate(
        task,
        _central(target=target),
        rounds=9,
        key=4,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    whole = fedkit.simulate(task, _central(target=target), rounds=9, key=4, progress=False)
    assert resumed.state.round == whole.state.round == 4
    assert [m["epsilon"] for m in resumed.metrics] == [m["epsilon"] for m in whole.metrics]
    assert torch.equal(resumed.final_params, whole.final_params)


def test_without_an_accountant_nothing_changes():
    h = fedkit.simulate(
        tiny_task(), fedkit.Strategy(server=Mean()), rounds=2, key=0, progress=False
    )
    assert "epsilon" not in h.metrics[-1] and "privacy_budget" not in h.record
    assert h.record["run"]["stopped"] is None


def test_accountants_validate_their_settings():
    with pytest.raises(ValueError, match="delta"):
        CentralDPAccountant(noise_multiplier=1.0, delta=0.0)
    with pytest.raises(ValueError, match="target_epsilon"):
        DPSGDAccountant(target_epsilon=-1.0)
    with pytest.raises(TypeError, match="PrivacyAccountant"):
        fedkit.Strategy(accountant=object())
    strategy = fedkit.Strategy(server=Mean(), accountant=DPSGDAccountant())
    with pytest.raises(ValueError, match="dp_sgd"):
        fedkit.simulate(tiny_task(), strategy, rounds=1, key=0, progress=False)
