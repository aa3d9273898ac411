"""Run-driver tests use the simulation tests' tiny tasks (``helpers``) and, for a Flower
transport in this process, the deployment tests' harness (``flower_harness``)."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
TESTS = Path(__file__).parents[1]
for folder in ("simulation", "deploy"):
    if str(TESTS / folder) not in sys.path:
        sys.path.insert(0, str(TESTS / folder))
