"""fedkit works from an installed wheel, not only from a source checkout: the wheel carries
the config tree, and a deployment stages its Flower App from the installed packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys, tomllib
from pathlib import Path
import fedkit, experiments
import attrs
from experiments.flower_app import APP, PACKAGES, compose
cfg = compose(["task=digits", "defense=krum"])
app = attrs.evolve(APP, packages=PACKAGES).stage(Path(sys.argv[1]))
config = tomllib.loads((app / "pyproject.toml").read_text())
print(json.dumps({
    "fedkit": fedkit.__file__, "experiments": experiments.__file__,
    "server": cfg["server"]["krum"]["_target_"],
    "components": config["tool"]["flwr"]["app"]["components"],
    "staged_yaml": (app / "experiments" / "configs" / "config.yaml").exists(),
}))
"""


def test_an_unpacked_wheel_composes_configs_and_stages_the_app(tmp_path):
    uv = [sys.executable, "-m", "uv"]
    build = subprocess.run(
        [*uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("fedkit-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "experiments/configs/config.yaml" in names
        zf.extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "app")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["fedkit"].startswith(str(site)) and got["experiments"].startswith(str(site))
    assert got["server"] == "fedkit.aggregators.Krum"
    assert got["components"]["serverapp"] == "experiments.flower_app:server_app"
    assert got["staged_yaml"]
