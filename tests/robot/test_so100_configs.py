"""The SO-100 experiment configs and the GPU check script's CPU-safe parts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fedkit.tasks.so100 import So100Config
from fedkit.tasks.so100.fixture import SMOLVLM2_500M, TINY_SMOLVLM

ROOT = Path(__file__).resolve().parents[2]
# the so100(...) configs; fixture.yaml names the offline builder (test_so100_run_config.py)
CONFIGS = sorted(
    p
    for p in (ROOT / "experiments" / "configs" / "so100").glob("*.yaml")
    if OmegaConf.load(p).get("_target_") == "fedkit.tasks.so100.so100"
)


def _fields(path: Path) -> dict:
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert node.pop("_target_") == "fedkit.tasks.so100.so100"
    node.pop("key")
    return node


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_fields_build_a_valid_so100_config(path):
    fields = _fields(path)
    if path.stem == "tiny_offline":  # its two paths are left for the user (???)
        fields |= {"root": "/data/so100", "vlm_model_name": "/models/tiny"}
    config = So100Config(**fields)
    if path.stem != "tiny_offline":  # full size: hub data on a GPU
        assert config.device == "cuda" and None in config.root


def test_there_are_full_size_configs():
    stems = {p.stem for p in CONFIGS}
    assert {"smolvla_base", "smolvla_base_multi_arm", "tiny_offline"} <= stems


@pytest.mark.parametrize("dims", [TINY_SMOLVLM, SMOLVLM2_500M], ids=["tiny", "smolvlm2_500m"])
def test_smolvlm_dimensions_meet_smolvla_constraints(dims):
    vision, text = dims["vision"], dims["text"]
    grid = vision["image_size"] // vision["patch_size"]
    assert vision["image_size"] % vision["patch_size"] == 0 and grid % dims["scale_factor"] == 0
    assert text["num_attention_heads"] % text["num_key_value_heads"] == 0


@pytest.mark.robot
def test_full_size_matches_smolvla_defaults():
    """SmolVLA's default config (512-pixel images, 16 VLM layers) fits SMOLVLM2_500M."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    default = SmolVLAConfig()
    size = SMOLVLM2_500M["vision"]["image_size"]
    assert default.resize_imgs_with_padding == (size, size)
    assert default.num_vlm_layers <= SMOLVLM2_500M["text"]["num_hidden_layers"]


def test_gpu_check_fails_clearly_without_cuda():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check_so100.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert "needs a CUDA GPU" in done.stderr
