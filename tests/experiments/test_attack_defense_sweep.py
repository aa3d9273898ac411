"""The attack x defense sweep file (issue 5): it parses and expands to the expected grid, its
points compose, and the sweep's ``settings`` axis, task cache and backdoor metric behave."""

from __future__ import annotations

import itertools

import pytest
import torch

from experiments import CONFIG_DIR, SWEEP_DIR
from experiments.bench import Point, Sweep, TaskCache, compose_configs
from experiments.build import build, make
from experiments.run import backdoor_metrics

SWEEP = SWEEP_DIR / "attack_defense.yaml"

ATTACKS = [
    "none", "sign_flip", "gaussian", "scaling", "alie", "ipm", "min_max", "min_sum",
    "fang_krum", "fang_trimmed_mean", "mimic", "non_finite", "optimal_alie", "optimal_ipm",
    "label_flip", "backdoor",
]  # fmt: skip
DEFENSES = [
    "fedavg", "median", "trimmed_mean", "krum", "geometric_median", "cc_momentum",
    "nnm_trimmed_mean", "bucketing_geometric_median", "dp_trimmed_mean",
]  # fmt: skip
SETTINGS = ["digits-iid", "digits-dir0.5", "fmnist-iid", "fmnist-dir0.5"]


@pytest.fixture(scope="module")
def sweep() -> Sweep:
    return Sweep.load(SWEEP)


def test_sweep_names_every_attack_and_defense_of_the_issue(sweep):
    assert list(sweep.attacks) == ATTACKS and list(sweep.defenses) == DEFENSES
    assert list(sweep.settings) == SETTINGS and sweep.chaos == ("none",)
    assert len(sweep.seeds) >= 3 and sweep.jobs == 1
    for group, names in (("attack", sweep.attacks), ("defense", sweep.defenses)):
        for name in names:
            assert (CONFIG_DIR / group / f"{name}.yaml").is_file(), f"{group}/{name}.yaml"


def test_sweep_expands_to_the_full_grid_with_unique_names(sweep):
    points = sweep.points()
    assert len(points) == 4 * 9 * 16 * len(sweep.seeds)
    assert len({p.name for p in points}) == len(points)
    expected = itertools.product(SETTINGS, DEFENSES, ATTACKS, sweep.seeds)
    assert [(p.setting, p.defense, p.attack, p.seed) for p in points] == list(expected)
    first = points[0]
    assert first.name == "digits-iid__fedavg__none__none__seed0"
    assert first.labels()["task"] == "digits-iid"
    assert sweep.order()["task"] == SETTINGS


def test_each_setting_composes_with_its_dataset_and_partition(sweep):
    picks = [p for p in sweep.points() if p.defense == "bucketing_geometric_median"]
    picks = [
        next(p for p in picks if p.setting == s and p.attack == "optimal_ipm") for s in SETTINGS
    ]
    configs = compose_configs(picks, sweep.overrides)
    tasks = [c["task"] for c in configs]
    assert [t["_target_"].rsplit(".", 1)[1] for t in tasks] == ["digits"] * 2 + [
        "fashion_mnist"
    ] * 2
    assert [t["partition"] for t in tasks] == ["iid", "dirichlet"] * 2
    assert all(t["alpha"] == 0.5 and t["model"] == "mlp" and t["num_clients"] == 20 for t in tasks)
    assert tasks[2]["max_train"] == 2000 and tasks[3]["max_test"] == 500
    for c in configs:
        assert c["f"] == 4 and c["byzantine_fraction"] == 0.2 and c["label"] == picks[0].defense
        assert list(c["server"]) == ["bucketing", "geometric_median"]
        assert c["attack"]["attack"]["_target_"] == "attacks.OptimalIPM"


def test_a_sweep_without_settings_keeps_its_point_names():
    sweep = Sweep(defenses=["krum"], attacks=["alie"], chaos=["none"], seeds=[3])
    (point,) = sweep.points()
    assert point == Point("krum", "alie", "none", 3)
    assert point.name == "krum__alie__none__seed3" and "task" not in point.labels()
    assert "task" not in sweep.order()
    assert point.overrides(["rounds=2"]) == [
        "rounds=2", "defense=krum", "attack=alie", "chaos=none", "seed=3"
    ]  # fmt: skip


def test_setting_overrides_come_after_the_base_and_before_the_point():
    p = Point("krum", "alie", "none", 0, setting="s", setting_overrides=["task=fashion_mnist"])
    assert p.overrides(["f=2"]) == [
        "f=2", "task=fashion_mnist", "defense=krum", "attack=alie", "chaos=none", "seed=0"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"a__b": ["x=1"]}, ValueError),
        ({"a/b": ["x=1"]}, ValueError),
        ({"": ["x=1"]}, ValueError),
        ({"a": "x=1"}, TypeError),
        (["x=1"], TypeError),
    ],
)
def test_bad_settings_are_rejected(settings, error):
    with pytest.raises(error):
        Sweep(defenses=["krum"], attacks=["none"], chaos=["none"], seeds=[0], settings=settings)


def test_unknown_sweep_keys_are_rejected(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("defenses: [krum]\nattacks: [none]\nchaos: [none]\nseeds: [0]\nsetting: {}\n")
    with pytest.raises(ValueError, match="unknown sweep keys"):
        Sweep.load(path)


DIGITS = {
    "_target_": "fedkit.tasks.digits",
    "num_clients": 4,
    "partition": "iid",
    "model": "mlp",
    "hidden": [8],
    "key": 0,
}


def test_task_cache_shares_equal_configs_and_evicts_the_oldest():
    cache = TaskCache(size=2)
    first = cache.get(DIGITS)
    assert cache.get(dict(DIGITS)) is first
    other = cache.get({**DIGITS, "key": 1})
    assert other is not first and other.num_clients == 4
    cache.get({**DIGITS, "key": 2})  # evicts key 0 (least recently used)
    assert cache.get(DIGITS) is not first
    assert torch.equal(cache.get(DIGITS).test_y, first.test_y)  # rebuilt: same data


def test_build_uses_a_given_task():
    cfg = compose_configs([Point("fedavg", "none", "none", 0)], ["num_clients=4", "f=0"])[0]
    task = make(cfg["task"])
    assert build(cfg, task=task).task is task


def test_backdoor_metrics_match_the_success_rate_of_the_final_model():
    from attacks import (
        Backdoor,
        DataPoisoning,
        LabelFlip,
        ModelPoisoning,
        SignFlip,
        backdoor_success_rate,
    )
    from fedkit import key

    task = make(DIGITS)
    params = task.init(key(0))
    poison = Backdoor(target=3)
    got = backdoor_metrics(DataPoisoning(poison=poison, fraction=0.25), task, params)
    want = backdoor_success_rate(
        lambda x: task.apply(params, x), task.test_x, task.test_y, poison.trigger, 3
    )
    assert got == {"backdoor_success": want} and 0.0 <= want <= 1.0
    assert (
        backdoor_metrics(
            DataPoisoning(poison=LabelFlip(num_classes=10), fraction=0.25), task, params
        )
        == {}
    )
    assert backdoor_metrics(ModelPoisoning(attack=SignFlip(), fraction=0.25), task, params) == {}


def test_points_that_differ_in_their_seed_compose_as_if_composed_alone():
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    base = ["num_clients=4", "f=0"]
    points = [Point("krum", "backdoor", "none", s, "x", ["partition=dirichlet"]) for s in (0, 5)]
    got = compose_configs(points, base)
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        want = [
            OmegaConf.to_container(compose("config", overrides=p.overrides(base)), resolve=True)
            for p in points
        ]
    assert got == want and [c["task"]["key"] for c in got] == [0, 5]
