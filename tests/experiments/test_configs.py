"""Every config in experiments/configs composes with Hydra's compose API and instantiates
(task builders, strategies, attacks, faults) without running a simulation."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_object
from omegaconf import OmegaConf

from experiments import CONFIG_DIR
from experiments.build import build, compose_chain, make
from experiments.dp import calibrate_local, local_epsilon
from experiments.run import default_labels
from fedkit import Chain, ClientConfig, Strategy
from fedkit.core.components import Role
from fedkit.protocols import Adversary, FaultModel
from fedkit.simulation.simulate import ENGINES

SMALL = ["num_clients=10", "f=2", "rounds=2"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def cfg_of(*overrides: str):
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=[*SMALL, *overrides])


@pytest.fixture(scope="module")
def digits_task():
    return make(cfg_of().task)


def test_every_group_has_its_options():
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert groups >= {
        "task", "model", "partition", "client", "server", "privacy", "attack", "chaos",
        "engine", "defense", "so100",
    }  # fmt: skip
    assert len(options("server")) >= 20 and len(options("attack")) >= 10


def test_default_config_builds_a_fedavg_experiment():
    exp = build(cfg_of())
    assert isinstance(exp.strategy, Strategy)
    assert [type(c).__name__ for c in exp.strategy.server.components] == ["Mean"]
    assert exp.task.num_clients == 10 and exp.rounds == 2 and exp.engine == "auto"
    assert exp.privacy.mechanism == "none" and exp.privacy.epsilon(5) is None


@pytest.mark.parametrize("name", [n for n in options("task") if n != "so100"])
def test_task_options_instantiate(name):
    overrides = [f"task={name}"]
    if name == "fashion_mnist":
        overrides += ["task.max_train=200", "task.max_test=50"]
    task = make(cfg_of(*overrides).task)
    assert task.num_clients == 10
    assert task.init(__import__("fedkit").key(0)).numel() == task.spec.size


@pytest.mark.parametrize("name", options("so100"))
def test_so100_configs_compose_against_the_builder_signature(name):
    cfg = cfg_of("task=so100", f"so100@task={name}")
    builder = get_object(cfg.task._target_)
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    required = {
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty and p.kind is p.KEYWORD_ONLY
    }
    keys = set(cfg.task) - {"_target_"}
    assert required <= keys
    assert takes_any or keys <= set(params)


@pytest.mark.parametrize("group", ["model", "partition"])
def test_model_and_partition_options_instantiate_with_digits(group):
    for name in options(group):
        task = make(cfg_of(f"{group}={name}").task)
        assert task.num_clients == 10, name


@pytest.mark.parametrize("name", options("client"))
def test_client_options_instantiate(name):
    assert isinstance(make(cfg_of(f"client={name}").client), ClientConfig)


@pytest.mark.parametrize("name", options("server"))
def test_every_server_component_instantiates_in_a_chain(name):
    cfg = cfg_of(f"server=[{name}]")
    (component,) = [make(node) for node in cfg.server.values()]
    role = component.role
    parts = {Role.TRANSFORM: [name, "mean"], Role.REDUCER: [name], Role.SERVER: ["mean", name]}[
        role
    ]
    exp = build(cfg_of(f"server=[{','.join(parts)}]"))
    names = [type(c).__name__ for c in exp.strategy.server.components]
    assert type(component).__name__ in names and len(names) == len(parts)


def test_server_list_keeps_its_order_and_privacy_wraps_the_reducer():
    cfg = cfg_of("server=[clip,nnm,trimmed_mean,server_momentum]", "privacy=central")
    chain = build(cfg).strategy.server
    assert isinstance(chain, Chain)
    assert [type(c).__name__ for c in chain.components] == [
        "ClipUpdates", "UniformWeights", "Clip", "NNM", "TrimmedMean", "GaussianNoise", "FedAvgM",
    ]  # fmt: skip
    noise = chain.components[5]
    assert noise.expected_clients == 10.0  # filled in: every client is sampled
    assert noise.noise_multiplier == cfg.privacy.noise_multiplier


def test_compose_chain_puts_post_after_the_reducer():
    comps = [make(n) for n in cfg_of("server=[nnm,median,server_lr]").server.values()]
    out = compose_chain(comps, ["PRE"], ["POST"])
    assert out[0] == "PRE" and out[3] == "POST" and type(out[4]).__name__ == "ServerLR"


@pytest.mark.parametrize("name", options("privacy"))
def test_privacy_options_build_and_account(name):
    exp = build(cfg_of(f"privacy={name}"))
    eps = exp.privacy.epsilon(2)
    assert (eps is None) == (name == "none")
    if eps is not None:
        assert eps > 0 and math.isfinite(eps)


def test_central_target_epsilon_is_calibrated():
    exp = build(cfg_of("privacy=central", "privacy.target_epsilon=4.0", "rounds=5"))
    eps = exp.privacy.epsilon(5)
    assert 3.9 <= eps <= 4.0
    assert exp.strategy.server.components[-1].noise_multiplier == exp.privacy.noise_multiplier


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_local_calibration_meets_its_target(kind):
    z = calibrate_local(20.0, 7, kind, 1e-5)
    assert local_epsilon(z, 7, kind, 1e-5) <= 20.0 + 1e-9
    assert local_epsilon(0.98 * z, 7, kind, 1e-5) > 20.0 - 1e-6


@pytest.mark.parametrize("name", options("attack"))
def test_attack_options_instantiate(name):
    adversary = make(cfg_of(f"attack={name}").attack)
    assert isinstance(adversary, Adversary)
    assert len(adversary.controlled(10, __import__("fedkit").key(0))) == (
        0 if name == "none" else 2
    )


@pytest.mark.parametrize("name", options("chaos"))
def test_chaos_options_instantiate_and_plan(name):
    import torch

    cfg = cfg_of(f"chaos={name}")
    faults = make(cfg.chaos)
    assert isinstance(faults, FaultModel)
    plan = faults.plan(1, torch.arange(10), __import__("fedkit").key(0))
    assert tuple(plan.kind.shape) == (10,)
    assert cfg.checkpoint == (name == "server_crash")


@pytest.mark.parametrize("name", options("engine"))
def test_engine_options_name_an_engine(name):
    assert cfg_of(f"engine={name}").engine.name in ENGINES


@pytest.mark.parametrize("name", options("defense"))
def test_defense_presets_build_and_label_themselves(name):
    cfg = cfg_of(f"defense={name}")
    exp = build(cfg)
    assert cfg.label == name and default_labels(cfg)["defense"] == name
    assert exp.strategy.server.components
    if name.startswith("dp_"):
        assert exp.privacy.mechanism != "none"


def test_labels_without_a_preset_name_the_components():
    cfg = cfg_of("server=[clip,trimmed_mean]", "privacy=central")
    labels = default_labels(cfg, {"attack": "alie", "chaos": "dropout", "defense": None})
    assert labels == {
        "task": None, "defense": "clip+trimmed_mean+central_dp", "attack": "alie",
        "chaos": "dropout", "privacy": "central", "seed": 0,
    }  # fmt: skip


def test_every_yaml_file_is_valid_yaml():
    for path in Path(CONFIG_DIR).rglob("*.yaml"):
        assert OmegaConf.load(path) is not None, path


@pytest.mark.parametrize("name", ["bench", "quick"])
def test_bench_sweeps_compose_for_every_point(name):
    from experiments import SWEEP_DIR
    from experiments.bench import Point, Sweep, compose_configs

    sweep = Sweep.load(SWEEP_DIR / f"{name}.yaml")
    assert len(sweep.points()) == (
        len(sweep.defenses) * len(sweep.attacks) * len(sweep.chaos) * len(sweep.seeds)
    )
    # every name of the grid once: a diagonal through defenses, attacks and fault settings
    width = max(len(sweep.defenses), len(sweep.attacks), len(sweep.chaos))
    points = [
        Point(
            sweep.defenses[i % len(sweep.defenses)],
            sweep.attacks[i % len(sweep.attacks)],
            sweep.chaos[i % len(sweep.chaos)],
            sweep.seeds[0],
        )
        for i in range(width)
    ]
    configs = compose_configs(points, sweep.overrides)
    for p, cfg in zip(points, configs, strict=True):
        assert cfg["label"] == p.defense and cfg["seed"] == p.seed
    if name == "bench":
        assert len(sweep.defenses) >= 5 and len(sweep.attacks) >= 5 and "none" in sweep.attacks
        assert len(sweep.chaos) == 2 and len(sweep.seeds) == 3
        assert any(d.startswith("dp_") for d in sweep.defenses)
        assert configs[0]["task"]["partition"] == "dirichlet" and configs[0]["task"]["alpha"] == 1.0
