"""A deployed adversary node answers with exactly the row the simulation's adversary would
send — the poisoned one, not its honest update — and refuses to guess when the request does
not match its copy of the experiment."""

from __future__ import annotations

import pytest
import torch

from experiments.adversary_node import AdversaryClient, AdversaryMismatch
from experiments.build import build
from experiments.flower_app import compose
from fedkit.core.keys import fold_in
from fedkit.core.keys import key as root_key
from fedkit.flower import HonestClient, Trained
from fedkit.flower.requests import TrainRequest
from fedkit.run.plan import RunKeys, plan_round
from fedkit.simulation import SequentialEngine
from fedkit.simulation.transport import train_planned
from fedkit.strategy import ServerState


@pytest.fixture(scope="module")
def setup():
    cfg = compose(["task=digits", "num_clients=5", "attack=sign_flip", "byzantine_fraction=0.2"])
    exp = build(cfg)
    node = AdversaryClient(exp, HonestClient(exp.task, partition=1))
    params = exp.task.init(RunKeys.of(root_key(exp.seed)).init)
    return exp, node, params


def request(node, exp, params, client, r=1, key=None):
    state = ServerState(round=r - 1, params=params, chain_state=None)
    plan = plan_round(exp.strategy, state, 5, node.controlled, node.keys)
    return TrainRequest(r, client, 1, key or plan.keys.client(client), exp.strategy.client), plan


def test_the_node_sends_the_simulations_poisoned_row(setup):
    exp, node, params = setup
    assert node.controlled.tolist() == [1]
    req, plan = request(node, exp, params, 1)
    out = node.train(req, params)
    assert isinstance(out, Trained) and out.client == 1
    local, rows = train_planned(
        exp.task, exp.strategy, exp.adversary, SequentialEngine(), params, plan
    )
    assert torch.equal(out.update, rows[1])  # bit for bit the simulation's row
    honest = HonestClient(exp.task, partition=1).train(req, params)
    assert float((out.update - honest.update).abs().max()) > 1e-3  # and not its honest one
    others = torch.cat([local.updates[:1], local.updates[2:]])
    assert torch.allclose(out.update, -others.mean(0), atol=1e-6)  # sign flip: -honest mean


def test_a_request_for_a_client_it_does_not_control_is_answered_honestly(setup):
    exp, node, params = setup
    req, _ = request(node, exp, params, 3)
    honest = HonestClient(exp.task, partition=1).train(req, params)
    assert torch.equal(node.train(req, params).update, honest.update)


def test_a_request_from_another_run_is_refused_not_guessed(setup):
    exp, node, params = setup
    req, _ = request(node, exp, params, 1, key=fold_in(root_key(99), 1))
    with pytest.raises(AdversaryMismatch, match="another seed or config"):
        node.train(req, params)
