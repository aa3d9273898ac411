"""The SO-100 task on the offline fixture: a tiny SmolVLM and a generated SO-100 dataset.

Nothing here reaches the network (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). The task is built
once per module; the LeRobot imports dominate the run time.
"""

from __future__ import annotations

import os

import pytest
import torch

import fedkit
from fedkit.tasks.so100 import so100
from fedkit.tasks.so100.fixture import (
    CAMERAS,
    SMOLVLM_SPECIAL_TOKENS,
    TASKS,
    episode_goal,
    episode_images,
    episode_trajectory,
    make_so100_dataset,
    make_tiny_smolvlm,
    tiny_smolvla_overrides,
)

pytestmark = pytest.mark.robot

# Nothing may reach the network (conftest sets these too; LeRobot is imported only later,
# inside the fixtures, so setting them here still comes before huggingface_hub reads them).
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"

REPO = "fedkit/so100_fixture"
EPISODES, FRAMES, IMAGE = 12, 15, (24, 32)
HOLDOUT = (9, 10, 11)  # one episode of each task


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    base = tmp_path_factory.mktemp("so100")
    vlm = make_tiny_smolvlm(base / "vlm")
    data = make_so100_dataset(
        base / "data",
        key=fedkit.key(0),
        episodes=EPISODES,
        frames_per_episode=FRAMES,
        image_size=IMAGE,
        repo_id=REPO,
    )
    return vlm, data


def _task(assets, **kw):
    vlm, data = assets
    args = dict(
        repo_id=REPO,
        root=data,
        vlm_model_name=vlm,
        num_clients=3,
        holdout_episodes=HOLDOUT,
        batch_size=8,
        key=fedkit.key(0),
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
        max_eval_frames=None,
    )
    return so100(**{**args, **kw})


@pytest.fixture(scope="module")
def task(assets):
    return _task(assets)


# ---------------------------------------------------------------- fixture
def test_tiny_smolvlm_meets_smolvla_constraints(assets):
    from transformers import AutoConfig, AutoTokenizer

    vlm, _ = assets
    cfg = AutoConfig.from_pretrained(vlm)
    vision = cfg.vision_config
    assert (vision.image_size, vision.image_size) == tiny_smolvla_overrides()[
        "resize_imgs_with_padding"
    ]
    assert (vision.image_size // vision.patch_size) % cfg.scale_factor == 0
    assert tiny_smolvla_overrides()["num_vlm_layers"] <= cfg.text_config.num_hidden_layers
    tok = AutoTokenizer.from_pretrained(vlm)
    for name, text in SMOLVLM_SPECIAL_TOKENS.items():
        assert getattr(tok, name) == text
        assert getattr(tok, f"{name}_id") == tok.convert_tokens_to_ids(text) != tok.unk_token_id
    assert cfg.image_token_id == tok.image_token_id


def test_fixture_generators_are_keyed():
    k0, k1 = fedkit.key(0), fedkit.key(1)
    assert torch.equal(episode_trajectory(k0, 3, 7)[1], episode_trajectory(k0, 3, 7)[1])
    assert not torch.equal(episode_trajectory(k0, 3, 7)[1], episode_trajectory(k1, 3, 7)[1])
    assert torch.equal(episode_images(k0, 2, IMAGE)[0], episode_images(k0, 2, IMAGE)[0])
    states, actions = episode_trajectory(k0, 4, 30)
    goal = episode_goal(k0, 4)
    assert torch.allclose(actions, states + 0.2 * (goal - states), atol=1e-6)
    assert torch.equal(actions[:-1], states[1:])
    # episodes of one task aim at nearby goals, different tasks at different ones
    assert (episode_goal(k0, 0) - episode_goal(k0, 3)).abs().max() <= 0.2
    assert (episode_goal(k0, 0) - episode_goal(k0, 1)).abs().max() > 0.2


def test_dataset_is_so100_format_with_the_generated_values(assets):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    _, data = assets
    ds = LeRobotDataset(REPO, root=data, video_backend="pyav")
    meta = ds.meta
    assert (meta.robot_type, meta.fps, meta.total_episodes, meta.total_frames) == (
        "so100",
        30,
        EPISODES,
        EPISODES * FRAMES,
    )
    assert meta.video_keys == [] and sorted(meta.camera_keys) == sorted(CAMERAS)
    assert meta.features["action"]["shape"] == meta.features["observation.state"]["shape"] == (6,)
    assert list(meta.episodes["tasks"]) == [[TASKS[e % 3]] for e in range(EPISODES)]
    states, actions = episode_trajectory(fedkit.key(0), 5, FRAMES)
    top, wrist = episode_images(fedkit.key(0), 5, IMAGE)
    for t in (0, 7):
        frame = ds[5 * FRAMES + t]
        assert int(frame["episode_index"]) == 5 and frame["task"] == TASKS[5 % 3]
        assert torch.equal(frame["observation.state"], states[t])
        assert torch.equal(frame["action"], actions[t])
        for cam, image in zip(CAMERAS, (top, wrist)):
            stored = (frame[cam] * 255).round().to(torch.uint8).permute(1, 2, 0)
            assert torch.equal(stored, image)


# ---------------------------------------------------------------- task structure
def test_only_trainable_parameters_travel(task):
    policy = task._policy
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert list(task.spec.names) == trainable
    assert not any(".vlm." in n for n in task.spec.names)  # SmolVLA freezes its VLM
    assert task.spec.size < sum(p.numel() for p in policy.parameters())
    assert task.spec.dtype == "float32"


def test_clients_partition_the_training_episodes(task):
    assert task.num_clients == 3 and task.holdout_episodes == HOLDOUT
    owned = sorted(e for c in task.client_episodes for e in c)
    assert owned == sorted(set(range(EPISODES)) - set(HOLDOUT))
    assert [task.client_size(c) for c in range(3)] == [
        len(c) * FRAMES for c in task.client_episodes
    ]
    assert task.holdout_size == len(HOLDOUT) * FRAMES
    with pytest.raises(IndexError):
        task.client_size(3)


def test_init_is_keyed_and_restores_the_global_rng(task):
    state = torch.get_rng_state()
    a, b = task.init(fedkit.key(1)), task.init(fedkit.key(1))
    c = task.init(fedkit.key(2))
    assert torch.equal(torch.get_rng_state(), state)
    task.spec.check(a)
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------- training and evaluation
def test_train_client_is_keyed_pure_and_reports_frames(task):
    x = task.init(fedkit.key(1))
    before, state = x.clone(), torch.get_rng_state()
    k = fedkit.key(5)
    d1, n, metrics = task.train_client(x, 1, steps=2, lr=1e-3, key=k)
    d2, _, _ = task.train_client(x, 1, steps=2, lr=1e-3, key=k)
    d3, _, _ = task.train_client(x, 1, steps=2, lr=1e-3, key=fedkit.key(6))
    assert torch.equal(x, before) and torch.equal(torch.get_rng_state(), state)
    task.spec.check(d1)
    assert torch.equal(d1, d2) and not torch.equal(d1, d3)
    assert d1.abs().sum() > 0 and torch.isfinite(d1).all()
    assert n == task.client_size(1)
    assert metrics["steps"] == 2 and metrics["loss_first"] > 0
    zero, _, _ = task.train_client(x, 1, steps=0, lr=1e-3, key=k)
    assert torch.equal(zero, torch.zeros_like(x))


def test_train_client_works_under_no_grad(task):
    x = task.init(fedkit.key(1))
    with torch.no_grad():
        d, _, _ = task.train_client(x, 0, steps=1, lr=1e-3, key=fedkit.key(5))
    assert d.abs().sum() > 0


def test_fedprox_term(task):
    x = task.init(fedkit.key(1))
    k = fedkit.key(7)
    # The proximal gradient is zero at the global point: one step is the same either way.
    one, _, _ = task.train_client(x, 2, steps=1, lr=1e-3, key=k)
    one_prox, _, _ = task.train_client(x, 2, steps=1, lr=1e-3, prox_mu=50.0, key=k)
    assert torch.equal(one, one_prox)
    free, _, _ = task.train_client(x, 2, steps=4, lr=1e-3, key=k)
    held, _, _ = task.train_client(x, 2, steps=4, lr=1e-3, prox_mu=50.0, key=k)
    assert held.norm() < free.norm()


def test_evaluate_is_deterministic(task):
    x = task.init(fedkit.key(1))
    first = task.evaluate(x)
    assert first == task.evaluate(x)
    assert first["test_frames"] == task.holdout_size and first["test_loss"] > 0


def test_bad_input_is_named(task):
    x = task.init(fedkit.key(1))
    with pytest.raises(ValueError, match="length"):
        task.train_client(x[:-1], 0, steps=1, lr=1e-3, key=fedkit.key(0))
    with pytest.raises(TypeError, match="dtype"):
        task.evaluate(x.double())
    with pytest.raises(IndexError, match="out of range"):
        task.train_client(x, 3, steps=1, lr=1e-3, key=fedkit.key(0))
    with pytest.raises(ValueError, match="steps"):
        task.train_client(x, 0, steps=-1, lr=1e-3, key=fedkit.key(0))
    with pytest.raises(ValueError, match="prox_mu"):
        task.train_client(x, 0, steps=1, lr=1e-3, prox_mu=-1.0, key=fedkit.key(0))


def _weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """fedkit's mean kernel when it exists, else the plain weighted average."""
    try:
        from fedkit.aggregators.mean import mean
    except ImportError:
        return (weights[:, None] * updates).sum(0) / weights.sum()
    return mean(updates, weights)


@pytest.mark.slow
def test_fedavg_lowers_the_held_out_action_loss(task):
    """3 clients, a few rounds of FedAvg in process: the held-out loss falls."""
    x = task.init(fedkit.key(1))
    initial = task.evaluate(x)["test_loss"]
    root = fedkit.key(3)
    for r in range(4):
        replies = [
            task.train_client(
                x, c, steps=6, lr=3e-3, key=fedkit.fold_in(fedkit.fold_in(root, r), c)
            )
            for c in range(task.num_clients)
        ]
        updates = torch.stack([d for d, _, _ in replies])
        weights = torch.tensor([n for _, n, _ in replies], dtype=torch.float32)
        x = x + _weighted_mean(updates, weights)
    final = task.evaluate(x)["test_loss"]
    assert final < 0.75 * initial, (initial, final)


# ---------------------------------------------------------------- checkpoints
def test_save_pretrained_round_trip(task, assets, tmp_path):
    x = task.init(fedkit.key(1))
    d, _, _ = task.train_client(x, 0, steps=1, lr=1e-3, key=fedkit.key(8))
    trained = x + d
    out = task.save_pretrained(trained, tmp_path / "ckpt")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors"} <= names
    assert any(n.startswith("policy_preprocessor") for n in names)
    reloaded = _task(assets, pretrained_path=str(out))
    assert reloaded.spec == task.spec
    assert torch.equal(reloaded.init(fedkit.key(99)), trained)
    assert reloaded.evaluate(trained) == task.evaluate(trained)


# ---------------------------------------------------------------- other splits and policies
def test_task_split_gives_each_client_one_task(assets):
    t = _task(assets, split="task")
    for c, episodes in enumerate(t.client_episodes):
        assert {t.episodes[e].task for e in episodes} == {TASKS[c]}


def test_robot_split_gives_one_client_per_arm(assets, tmp_path):
    vlm, data = assets
    arm2 = make_so100_dataset(
        tmp_path / "arm2",
        key=fedkit.key(1),
        episodes=3,
        frames_per_episode=10,
        image_size=IMAGE,
        repo_id="fedkit/so100_arm2",
    )
    t = so100(
        repo_id=[REPO, "fedkit/so100_arm2"],
        root=[data, arm2],
        vlm_model_name=vlm,
        num_clients=2,
        split="robot",
        holdout_episodes=1,
        key=fedkit.key(0),
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
    )
    assert [{t.episodes[e].source for e in c} for c in t.client_episodes] == [{0}, {1}]
    assert t.client_size(1) == 2 * 10
    assert {t.episodes[e].source for e in t.holdout_episodes} == {0, 1}
    x = t.init(fedkit.key(1))
    d, n, _ = t.train_client(x, 1, steps=1, lr=1e-3, key=fedkit.key(2))
    assert n == 20 and torch.isfinite(d).all() and d.abs().sum() > 0
    assert t.evaluate(x)["test_frames"] == FRAMES + 10


SMALL_POLICIES = {
    "act": {
        "chunk_size": 10,
        "n_action_steps": 10,
        "dim_model": 32,
        "n_heads": 2,
        "dim_feedforward": 64,
        "n_encoder_layers": 1,
        "n_decoder_layers": 1,
        "n_vae_encoder_layers": 1,
        "latent_dim": 8,
    },
    "diffusion": {
        "horizon": 8,
        "n_action_steps": 4,
        "crop_shape": None,
        "down_dims": (16, 32),
        "diffusion_step_embed_dim": 16,
        "spatial_softmax_num_keypoints": 8,
        "num_train_timesteps": 20,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("policy", sorted(SMALL_POLICIES))
def test_other_policies_train_one_step(assets, policy):
    """ACT and Diffusion (ResNet-18 backbones without downloaded weights) are selectable.
    Diffusion needs ``diffusers`` (LeRobot's ``diffusion`` extra), which the robot extra
    does not install."""
    if policy == "diffusion":
        pytest.importorskip("diffusers", reason="Diffusion Policy needs lerobot[diffusion]")
    _, data = assets
    t = so100(
        repo_id=REPO,
        root=data,
        policy=policy,
        num_clients=3,
        holdout_episodes=HOLDOUT,
        key=fedkit.key(0),
        policy_overrides=SMALL_POLICIES[policy],
        cache_frames=True,
        max_eval_frames=8,
    )
    assert t.policy_config.type == policy
    x = t.init(fedkit.key(1))
    d, _, metrics = t.train_client(x, 0, steps=1, lr=1e-3, key=fedkit.key(2))
    assert torch.isfinite(d).all() and d.abs().sum() > 0 and metrics["loss"] > 0
    assert torch.isfinite(torch.tensor(t.evaluate(x + d)["test_loss"]))
