"""What crosses the wire to a client is data: the train request and its client config have
a closed schema; the privacy floor refuses any request less private than itself; the
task a client builds comes from a closed set; the CLI composes fedkit run's config."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedkit.client import ClientConfig
from fedkit.client_dp import DPSGDConfig
from fedkit.core.keys import key
from fedkit.flower.privacy_floor import FloorError, PrivacyFloor
from fedkit.flower.requests import (
    RequestError,
    client_config_from_json,
    client_config_to_json,
    parse_request,
    request_fields,
)
from fedkit.tasks.registry import TaskConfigError, build_task


@pytest.mark.parametrize("with_dp", [False, True])
def test_client_config_travels_as_plain_data(with_dp):
    from privacy.dpsgd import DPSGD

    dp = DPSGD(max_grad_norm=0.7, noise_multiplier=1.3, batch_size=8) if with_dp else None
    cfg = ClientConfig(epochs=2, lr=0.1, optimizer="adam", betas=(0.8, 0.9), dp_sgd=dp)
    text = client_config_to_json(cfg)
    assert "privacy" not in text and "module" not in text  # no code is named
    back = client_config_from_json(text)
    expected = None if dp is None else DPSGDConfig(0.7, 1.3, 8)
    assert back == ClientConfig(
        epochs=2, lr=0.1, optimizer="adam", betas=(0.8, 0.9), dp_sgd=expected
    )
    if dp is not None:
        assert back.dp_sgd.sample_rate(40) == dp.sample_rate(40)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f: f.update(dp_sgd={"class": "os:system", "fields": {}}), "kind None"),
        (lambda f: f.update(dp_sgd={"kind": "module:Evil"}), "kind 'module:Evil'"),
        (lambda f: f.update(dp_sgd={"kind": "dpsgd", "max_grad_norm": 1.0}), "missing fields"),
        (lambda f: f.update(lr=-1.0), "lr must be positive"),
        (lambda f: f.update(extra=1), r"unknown fields \['extra'\]"),
        (
            lambda f: f.update(
                dp_sgd={
                    "kind": "dpsgd",
                    "max_grad_norm": 1.0,
                    "noise_multiplier": "1.0",
                    "batch_size": 4,
                }
            ),
            "noise_multiplier must be a finite number",
        ),
    ],
)
def test_a_malformed_client_config_is_refused_naming_what_is_wrong(mutate, match):
    fields = json.loads(client_config_to_json(ClientConfig()))
    mutate(fields)
    with pytest.raises(RequestError, match=match):
        client_config_from_json(json.dumps(fields))


def test_a_request_round_trips_and_a_broken_one_names_its_field():
    fields = request_fields(3, 1, 2, key(5), ClientConfig(lr=0.2))
    req = parse_request(fields)
    assert (req.round, req.client, req.work, req.key, req.config.lr) == (3, 1, 2, key(5), 0.2)
    with pytest.raises(RequestError, match="without field 'work'"):
        parse_request({k: v for k, v in fields.items() if k != "work"})
    with pytest.raises(RequestError, match="'client' must be an int"):
        parse_request({**fields, "client": "0"})
    with pytest.raises(RequestError, match="not a 128-bit hex key"):
        parse_request({**fields, "key": "zz"})


dp = st.builds(
    DPSGDConfig,
    max_grad_norm=st.floats(0.1, 5),
    noise_multiplier=st.floats(0, 3),
    batch_size=st.integers(1, 64),
)


@given(
    z=st.floats(0, 3),
    q=st.one_of(st.none(), st.floats(0.01, 1)),
    t=st.one_of(st.none(), st.integers(1, 50)),
    setting=st.one_of(st.none(), dp),
    examples=st.integers(1, 200),
    epochs=st.integers(1, 3),
)
def test_the_floor_accepts_exactly_the_requests_at_least_as_private(
    z, q, t, setting, examples, epochs
):
    """Accepted iff DP-SGD is on, z >= floor z, q <= floor q, steps <= floor steps."""
    floor = PrivacyFloor(min_noise_multiplier=z, max_sample_rate=q, max_steps=t)
    cfg = ClientConfig(epochs=epochs, dp_sgd=setting)
    reason = floor.refusal(cfg, examples, epochs)
    if setting is None:
        assert reason.startswith("no_dp_sgd")
        return
    from fedkit.client import num_steps

    private_enough = (
        setting.noise_multiplier >= z
        and (q is None or setting.sample_rate(examples) <= q)
        and (t is None or num_steps(examples, epochs, cfg) <= t)
    )
    assert (reason is None) == private_enough, reason


def test_a_floor_from_node_config_names_unknown_fields():
    assert PrivacyFloor.from_node_config("") is None
    got = PrivacyFloor.from_node_config('{"min_noise_multiplier": 1.0, "max_steps": 4}')
    assert got == PrivacyFloor(1.0, None, 4)
    with pytest.raises(FloorError, match=r"unknown fields \['epsilon'\]"):
        PrivacyFloor.from_node_config('{"epsilon": 1}')


def test_a_client_builds_only_tasks_of_the_closed_set():
    task = build_task({"_target_": "fedkit.tasks.digits", "num_clients": 2, "key": 0})
    assert task.num_clients == 2
    with pytest.raises(TaskConfigError, match=r"unknown task 'os\.system'"):
        build_task({"_target_": "os.system", "command": "true"})
    with pytest.raises(TaskConfigError, match="nested _target_"):
        build_task({"_target_": "fedkit.tasks.digits", "key": {"_target_": "os.getcwd"}})
    with pytest.raises(TaskConfigError, match="unexpected keyword argument 'evil'"):
        build_task({"_target_": "fedkit.tasks.digits", "key": 0, "evil": 1})


def test_the_server_refuses_a_config_naming_code_outside_fedkit():
    from experiments.flower_app import ExperimentConfigError, check_targets, compose

    cfg = compose(["task=digits"])
    check_targets(cfg)
    cfg["server"]["mean"] = {"_target_": "subprocess.run", "args": ["true"]}
    with pytest.raises(ExperimentConfigError, match=r"config\.server\.mean\._target_"):
        check_targets(cfg)


def test_deploy_cli_composes_fedkit_runs_config_and_defaults_to_tls_with_auth(tmp_path):
    from experiments.deploy_cli import parse_args, resolve
    from experiments.flower_app import APP
    from fedkit.flower.local import LocalDeployment, toml_value
    from fedkit.flower.pki import make_server_pki

    args = parse_args(["local", "--nodes", "2", "defense=krum", "rounds=3"])
    assert (args.nodes, args.insecure, args.no_auth) == (2, False, False)
    cfg = resolve(args.overrides, args.nodes)
    assert cfg["num_clients"] == 2 and cfg["rounds"] == 3 and "krum" in cfg["server"]
    assert cfg["labels"]["defense"] == "krum"
    assert resolve(["num_clients=7"], 2)["num_clients"] == 7
    assert [toml_value(v) for v in (True, 3, 0.5, "a")] == ["true", "3", "0.5", '"a"']
    secure = LocalDeployment(tmp_path / "s", nodes=1, app=APP)
    assert (secure.insecure, secure.auth) == (False, True)
    secure.pki = make_server_pki(tmp_path / "pki")
    assert {"--enable-supernode-auth", "--ssl-certfile"} <= set(secure.superlink_cmd())
    insecure = LocalDeployment(tmp_path / "i", nodes=1, insecure=True, app=APP)
    assert insecure.auth is False
    assert "--insecure" in insecure.superlink_cmd()


def test_a_deployment_refuses_simulated_faults():
    from experiments.deploy_cli import resolve
    from experiments.flower_app import ExperimentConfigError

    with pytest.raises(ExperimentConfigError, match="simulated fault model"):
        resolve(["chaos=dropout"], 3)


def test_under_dp_sgd_an_honest_node_keeps_its_noise_secret_from_the_server():
    """The server proposes the key; under DP-SGD a node mixes in local entropy (the server
    cannot regenerate and subtract the noise) unless configured for reproducible runs."""
    import torch

    from fedkit.flower.client import HonestClient
    from fedkit.flower.requests import TrainRequest
    from fedkit.tasks import digits

    task = digits(3, key=0)
    params = task.init(key(1))
    dp = DPSGDConfig(max_grad_norm=1.0, noise_multiplier=1.0, batch_size=16)
    request = TrainRequest(1, 0, 2, key(7), ClientConfig(steps=2, dp_sgd=dp))
    secret = HonestClient.from_node_config(task, {"partition-id": 0})
    a, b = secret.train(request, params), secret.train(request, params)
    assert not torch.equal(a.update, b.update)
    shared = HonestClient.from_node_config(task, {"partition-id": 0, "dp-noise": "server-key"})
    expected, _, _ = task.train_client(params, 0, request.config, 2, request.key)
    assert torch.equal(shared.train(request, params).update, expected)
    plain = TrainRequest(1, 0, 2, key(7), ClientConfig(steps=2))  # no DP: the server key
    assert torch.equal(secret.train(plain, params).update, secret.train(plain, params).update)
