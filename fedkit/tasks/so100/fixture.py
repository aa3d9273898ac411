"""Offline fixtures for the SO-100 task: a tiny SmolVLM directory and a generated dataset.

Nothing here touches the network. ``make_tiny_smolvlm`` writes a directory that
``SmolVLAConfig(vlm_model_name=that_dir, load_vlm_weights=False)`` accepts in place of
``HuggingFaceTB/SmolVLM2-500M-Video-Instruct`` (``make_smolvlm`` with
:data:`SMOLVLM2_500M` writes one with the real model's dimensions, for the GPU check and
memory benchmarks; still no weights, no download); ``make_so100_dataset`` writes a
LeRobotDataset in the SO-100 format whose actions are a learnable function of the state and
of the camera images, so a falling action loss means the policy learns.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedkit.core.keys import Key, fold_in, randint, split, uniform

SO100_JOINTS = (
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
)
CAMERAS = ("observation.images.top", "observation.images.wrist")
TASKS = (
    "pick up the cube and place it in the box",
    "push the cube to the left",
    "stack the red block on the blue block",
)
SMOLVLM_SPECIAL_TOKENS = {
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
# Tiny SmolVLM sizes: the vision tower sees 32x32 images in 8x8 patches, a 4x4 grid that the
# connector's pixel shuffle (scale factor 2) turns into 4 image tokens.
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_SCALE_FACTOR = 2
TINY_TEXT_LAYERS = 2
TINY_SMOLVLM = {
    "vision": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": TINY_PATCH_SIZE,
    },
    "text": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": TINY_TEXT_LAYERS,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "max_position_embeddings": 512,
    },
    "scale_factor": TINY_SCALE_FACTOR,
}
# The dimensions of HuggingFaceTB/SmolVLM2-500M-Video-Instruct (SmolVLA's default VLM): a
# SigLIP-style vision tower on 512x512 images in 16x16 patches, pixel shuffle 4 (64 image
# tokens), and a SmolLM2-360M text model. With SmolVLA's defaults (16 VLM layers, expert
# width 0.75) the policy has about 450 M parameters, 100 M of them trainable.
SMOLVLM2_500M = {
    "vision": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
    },
    "text": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "vocab_size": 49280,
    },
    "scale_factor": 4,
}


def make_tiny_smolvlm(directory: str | Path, *, vocab_size: int = 320) -> Path:
    """Write a tiny SmolVLM (config, BPE tokenizer, processor; no weights) to ``directory``.

    One 32-wide vision layer and two 32-wide Llama text layers (:data:`TINY_SMOLVLM`).
    SmolVLA must be configured with :func:`tiny_smolvla_overrides` (image size 32, two VLM
    layers). Deterministic: the same call writes the same files. Returns the directory.
    """
    return make_smolvlm(directory, **TINY_SMOLVLM, vocab_size=vocab_size)


def make_smolvlm(
    directory: str | Path,
    *,
    vision: dict,
    text: dict,
    scale_factor: int,
    vocab_size: int = 320,
) -> Path:
    """Write a SmolVLM directory (config, tokenizer, processor; no weights) with the given
    vision and Llama text config fields, for ``SmolVLAConfig(vlm_model_name=directory,
    load_vlm_weights=False)``.

    The tokenizer is a byte-level BPE of ``vocab_size`` tokens trained with ``tokenizers``
    on the fixture's task strings; it exposes the fake-image, image, global-image and
    end-of-utterance tokens SmolVLA reads. The text model's vocabulary is ``text
    ["vocab_size"]`` when given (e.g. the real model's 49280, for realistic sizes), else
    the tokenizer's. Checks SmolVLM's constraints: square images, and a patch grid
    (``image_size / patch_size``) divisible by ``scale_factor``. Returns the directory.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    image_size, patch_size = int(vision["image_size"]), int(vision["patch_size"])
    grid = image_size // patch_size
    if image_size % patch_size or grid % scale_factor:
        raise ValueError(
            f"SmolVLM needs image_size / patch_size ({image_size} / {patch_size}) to be an "
            f"integer divisible by scale_factor {scale_factor}"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<pad>", "<|im_start|>", *dict.fromkeys(SMOLVLM_SPECIAL_TOKENS.values())]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([f"{t}\n" for t in TASKS], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token=SMOLVLM_SPECIAL_TOKENS["end_of_utterance_token"],
        extra_special_tokens=dict(SMOLVLM_SPECIAL_TOKENS),
    )
    text_config = {
        "model_type": "llama",
        "rms_norm_eps": 1e-5,
        "vocab_size": len(tokenizer),
        **text,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if text_config["vocab_size"] < len(tokenizer):
        raise ValueError(
            f"text vocab_size {text_config['vocab_size']} < tokenizer's {len(tokenizer)}"
        )
    config = SmolVLMConfig(
        vision_config=dict(vision),
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids(SMOLVLM_SPECIAL_TOKENS["image_token"]),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.save_pretrained(out)
    edge = {"longest_edge": image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            do_image_splitting=False, size=edge, max_image_size=edge
        ),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(size=edge),
        image_seq_len=grid**2 // scale_factor**2,
    )
    processor.save_pretrained(out)
    return out


def tiny_smolvla_overrides() -> dict:
    """SmolVLA config fields that match :func:`make_tiny_smolvlm` (pass them as the task's
    ``policy_overrides``): image size, VLM depth, and short action chunks and prompts."""
    return {
        "resize_imgs_with_padding": (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE),
        "num_vlm_layers": TINY_TEXT_LAYERS,
        "chunk_size": 10,
        "n_action_steps": 10,
        "tokenizer_max_length": 16,
    }


def so100_features(image_size: tuple[int, int]) -> dict:
    """LeRobot feature spec of an SO-100 arm: 6 joint positions in and out, two cameras."""
    h, w = image_size
    joint = {"dtype": "float32", "shape": (len(SO100_JOINTS),), "names": list(SO100_JOINTS)}
    image = {"dtype": "image", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
    return {"action": joint, "observation.state": dict(joint), **{c: dict(image) for c in CAMERAS}}


def episode_goal(key: Key, episode: int, num_tasks: int = len(TASKS)) -> torch.Tensor:
    """The target joint positions of ``episode``: its task's goal (task
    ``episode % num_tasks``, uniform in ``[-0.8, 0.8]^6``) plus a per-episode offset uniform
    in ``[-0.1, 0.1]^6``. Episodes of one task aim at nearby poses, so a policy can learn
    the goal of a held-out episode from its images."""
    task = episode % num_tasks
    centre = uniform(fold_in(fold_in(key, -1), task), len(SO100_JOINTS), low=-0.8, high=0.8)
    offset = uniform(fold_in(fold_in(key, episode), 0), len(SO100_JOINTS), low=-0.1, high=0.1)
    return centre + offset


def episode_trajectory(
    key: Key, episode: int, frames: int, *, num_tasks: int = len(TASKS), gain: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """States and actions ``[frames, 6]`` of one episode.

    The arm starts at a random pose (uniform in ``[-1, 1]^6``) and moves toward the
    episode's goal: ``action_t = state_t + gain * (goal - state_t)`` and
    ``state_{t+1} = action_t``. The goal is shown by the cameras (:func:`episode_images`),
    so a whole action chunk is a function of the current state and the images.
    """
    goal = episode_goal(key, episode, num_tasks)
    start = uniform(fold_in(fold_in(key, episode), 1), len(SO100_JOINTS), low=-1.0, high=1.0)
    # Closed form of the recursion: state_t = goal + (1 - gain)^t (start - goal).
    decay = (1.0 - gain) ** torch.arange(frames + 1, dtype=torch.float32)
    path = goal + decay[:, None] * (start - goal)
    return path[:-1], path[1:]


def episode_images(
    key: Key, episode: int, image_size: tuple[int, int], *, num_tasks: int = len(TASKS)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two cameras' uint8 HWC images of ``episode`` (constant over its frames).

    The top camera's colour encodes the goal's first three joints, the wrist camera's the
    last three (``[-1, 1]`` mapped to ``[16, 240]``), plus a small fixed speckle so the
    images are not flat.
    """
    goal = episode_goal(key, episode, num_tasks)
    colour = (128.0 + 112.0 * goal).round().to(torch.int16)
    k_top, k_wrist = split(fold_in(fold_in(key, episode), 2), 2)
    images = []
    for k, rgb in ((k_top, colour[:3]), (k_wrist, colour[3:])):
        speckle = randint(k, -8, 9, (*image_size, 3)).to(torch.int16)
        images.append((rgb + speckle).clamp(0, 255).to(torch.uint8))
    return images[0], images[1]


def make_so100_dataset(
    root: str | Path,
    *,
    key: Key,
    episodes: int = 8,
    frames_per_episode: int = 20,
    image_size: tuple[int, int] = (24, 32),
    repo_id: str = "fedkit/so100_fixture",
    fps: int = 30,
    tasks: tuple[str, ...] = TASKS,
    robot_type: str = "so100",
) -> Path:
    """Write a LeRobotDataset in the SO-100 format to ``root`` (which must not exist yet).

    ``episodes`` episodes of ``frames_per_episode`` frames at ``fps``: 6-DoF
    ``observation.state`` and ``action`` (:func:`episode_trajectory`), two camera images
    (:func:`episode_images`, stored as images, no videos), and the task string
    ``tasks[episode % len(tasks)]`` (whose goal the episode's arm moves to). Everything is
    drawn from ``key``: the same key gives the same data. Returns ``root``; reload it with
    ``LeRobotDataset(repo_id, root=root, video_backend="pyav")``.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if episodes < 1 or frames_per_episode < 1:
        raise ValueError(
            f"need at least one episode of one frame, got episodes={episodes}, "
            f"frames_per_episode={frames_per_episode}"
        )
    if not tasks:
        raise ValueError("tasks must hold at least one task string")
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"dataset root {root} already exists; pass a fresh directory")
    dataset = LeRobotDataset.create(
        repo_id,
        fps=fps,
        features=so100_features(image_size),
        root=root,
        robot_type=robot_type,
        use_videos=False,
        video_backend="pyav",
    )
    for episode in range(episodes):
        states, actions = episode_trajectory(key, episode, frames_per_episode, num_tasks=len(tasks))
        top, wrist = episode_images(key, episode, image_size, num_tasks=len(tasks))
        for t in range(frames_per_episode):
            dataset.add_frame(
                {
                    "observation.state": states[t].numpy(),
                    "action": actions[t].numpy(),
                    CAMERAS[0]: top.numpy(),
                    CAMERAS[1]: wrist.numpy(),
                    "task": tasks[episode % len(tasks)],
                }
            )
        dataset.save_episode()
    dataset.finalize()
    return root


# The offline fixture a Flower deployment shares (``task = "so100"``, ``task-dir = DIR``):
# DIR/vlm is the tiny SmolVLM, DIR/data a dataset of 12 episodes of 15 frames drawn from
# key 0 (three tasks, four episodes each).
FIXTURE_REPO_ID = "fedkit/so100_fixture"
FIXTURE_EPISODES = 12
FIXTURE_FRAMES = 15
FIXTURE_IMAGE_SIZE = (24, 32)


def make_offline_fixture(directory: str | Path) -> tuple[Path, Path]:
    """Write the offline fixture to ``directory``: ``(directory/"vlm", directory/"data")``,
    the tiny SmolVLM and a generated SO-100 dataset (:data:`FIXTURE_EPISODES` episodes of
    :data:`FIXTURE_FRAMES` frames, key 0). A part that already exists is kept, so a second
    call is cheap. Build it once, before the processes that read it start."""
    from fedkit.core.keys import key as make_key

    base = Path(directory)
    vlm, data = base / "vlm", base / "data"
    if not (vlm / "config.json").exists():
        make_tiny_smolvlm(vlm)
    if not (data / "meta" / "info.json").exists():
        make_so100_dataset(
            data,
            key=make_key(0),
            episodes=FIXTURE_EPISODES,
            frames_per_episode=FIXTURE_FRAMES,
            image_size=FIXTURE_IMAGE_SIZE,
            repo_id=FIXTURE_REPO_ID,
        )
    return vlm, data


def main(argv: list[str] | None = None) -> int:
    """``python -m fedkit.tasks.so100.fixture DIR``: write the offline fixture to DIR."""
    import argparse
    import os

    parser = argparse.ArgumentParser(
        prog="python -m fedkit.tasks.so100.fixture",
        description="Write the offline SO-100 fixture (tiny SmolVLM + generated dataset).",
    )
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    vlm, data = make_offline_fixture(args.directory)
    print(f"tiny SmolVLM: {vlm.resolve()}\ndataset:      {data.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
