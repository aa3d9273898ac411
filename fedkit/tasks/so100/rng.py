"""A scoped global RNG seeded from a key, for library code that only reads the global RNG.

LeRobot policies draw from torch's global generator where we cannot pass one: weight
initialisation when a policy is built, and flow-matching noise and time, diffusion noise
and dropout inside ``policy.forward``. :func:`seeded_global_rng` runs such code inside
``torch.random.fork_rng`` seeded from a fedkit key, so the draws are a function of the key
and the caller's global RNG state is restored afterwards: nothing outside the block sees a
change, and nothing inside depends on what ran before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fedkit.core.keys import Key


@contextmanager
def seeded_global_rng(key: Key) -> Iterator[None]:
    """Fork torch's global RNG (CPU and every CUDA device), seed it from ``key``, and
    restore the previous state on exit."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(key.seed)
        yield
