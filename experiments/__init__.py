"""experiments (docs/architecture.md): the Hydra config tree and the sweep entry points.

* ``experiments/configs/``: groups task, model, partition, client, server (a list of
  components composed with ``fedkit.chain``), privacy, attack, chaos, engine and defense
  presets; every object is a ``_target_`` with its constructor's argument names;
* :func:`experiments.build.build`: a config to task, strategy, adversary and faults;
* :func:`experiments.run.run_experiment`: one simulation and its results record;
* :mod:`experiments.bench`: the default benchmark (``fedkit bench``);
* :mod:`experiments.cli`: the ``fedkit`` console script (``run``, ``bench``, ``tables``).
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
SWEEP_DIR = Path(__file__).parent / "sweeps"
