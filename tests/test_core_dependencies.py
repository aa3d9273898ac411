"""The core installs with torch, attrs, numpy and safetensors alone: ``import fedkit`` and a
whole simulated run (robust chain, checkpoints, record files) never import an extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

EXTRAS = (
    "hydra",
    "omegaconf",
    "matplotlib",
    "opacus",
    "sklearn",
    "tensorboard",
    "flwr",
    "rich",
    "cryptography",
    "scipy",
    "lerobot",
    "ray",
    "privacy",
    "attacks",
    "chaos",
    "experiments",
    "paper",
)

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys, tempfile, warnings
    from pathlib import Path
    BLOCKED = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
    import fedkit
    task = fedkit.tasks.synthetic(num_users=6, key=0)
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, lr=0.1),
        server=fedkit.chain(fedkit.Clip(clip_norm=1.0), fedkit.Krum(f=1)),
    )
    out = Path(tempfile.mkdtemp())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = fedkit.simulate(task, strategy, rounds=2, key=0, checkpoint_dir=out / "ck", log_dir=out)
    print(json.dumps({
        "rounds": len(h.metrics),
        "files": sorted(p.name for p in out.iterdir()),
        "warned": [str(w.message) for w in caught],
        "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED),
    }))
    """
)


def test_core_runs_without_any_extra():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(EXTRAS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["rounds"] == 2 and got["loaded"] == []
    assert {"record.json", "record.safetensors", "ck"} <= set(got["files"])
    assert any("no TensorBoard scalars" in w for w in got["warned"])
