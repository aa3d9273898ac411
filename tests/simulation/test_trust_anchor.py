"""The server's root data is the trust anchor (Cao et al. 2021): drawn by the server from
clean data, trained by the server, never a client's reply; FLTrust with it survives a
majority of attackers."""

from __future__ import annotations

import attrs
import pytest
import torch
from helpers import strategy, tiny_task

import fedkit
from fedkit.aggregators import FLTrust, Mean
from fedkit.core.keys import key
from fedkit.run.reference import root_dataset, server_update


@pytest.fixture(scope="module")
def task():
    return tiny_task(sizes=(30, 30, 30, 30, 30, 30))


def test_root_data_is_a_keyed_sample_of_the_clients_clean_examples(task):
    root = root_dataset(task, 20, key(1))
    again = root_dataset(task, 20, key(1))
    assert torch.equal(root.x, again.x) and torch.equal(root.y, again.y)
    pool = torch.cat(task.client_x)
    # every root example is one of the clients' examples, and no example is drawn twice
    matches = (root.x[:, None, :] == pool[None]).all(-1)
    assert bool(matches.any(1).all())
    assert torch.unique(root.x, dim=0).shape[0] == 20
    assert not torch.equal(root_dataset(task, 20, key(2)).x, root.x)
    with pytest.raises(ValueError, match="root_examples=999"):
        root_dataset(task, 999, key(1))


def test_the_reference_depends_on_nothing_a_client_sends(task):
    strat = attrs.evolve(strategy(lr=0.1), server=FLTrust(), root_examples=20)
    root = root_dataset(task, 20, key(1))
    params = task.init(key(0))
    ref = server_update(task, strat, params, root, key(9))
    from fedkit.training import train_local

    expected, _, _ = train_local(
        task,
        params,
        root.x,
        root.y,
        strat.client.work,
        fedkit.fold_in(key(9), 0x7257),
        strat.client,
    )
    assert torch.equal(ref, expected)


class EveryoneButTwo:
    """Controls clients 0..3 of 6 (a majority) and sends -10x the honest mean."""

    def controlled(self, num_clients, key):
        return torch.arange(4)

    def poison_data(self, client, x, y, key):
        return x, y

    def poison_updates(self, updates, byzantine, weights, round, key):
        honest = updates[~byzantine].mean(0)
        return torch.where(byzantine[:, None], -10.0 * honest, updates)


def test_fltrust_with_root_data_survives_a_majority_of_attackers(task):
    base = strategy(lr=0.1)
    run = dict(rounds=8, key=0, engine="sequential", progress=False, adversary=EveryoneButTwo())
    clean = fedkit.simulate(task, base, **{**run, "adversary": None})
    fltrust = fedkit.simulate(task, attrs.evolve(base, server=FLTrust(), root_examples=30), **run)
    mean = fedkit.simulate(task, attrs.evolve(base, server=Mean()), **run)
    acc = lambda h: h.metrics[-1]["test_accuracy"]  # noqa: E731
    assert acc(fltrust) >= acc(clean) - 0.1
    assert acc(mean) < acc(fltrust) - 0.2
    det = fltrust.record["counters"]["detection"]
    assert det["tpr"] == 1.0 and det["fp"] == 0  # every poisoned reply got trust 0
    assert mean.metrics[0]["detection"]["tp"] == 0  # the mean rejects nobody (until its
    # model diverges and the clients' replies turn non-finite: validation rejects those)
    for m in fltrust.metrics:  # trust scores per sampled client (rounds that aggregated)
        if m["quorum_missed"]:  # only attackers sampled: their NaN rows fail validation
            continue
        chain = m["chain"]
        scores = dict(zip(chain["clients"], chain["scores"]["0.FLTrust.trust"], strict=True))
        assert all((s == 0.0) == (c < 4) for c, s in scores.items())
