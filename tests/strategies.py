"""hypothesis strategies shared by the tests: update matrices, weights, keys."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import fedkit


@st.composite
def updates(draw, min_n=1, max_n=12, min_d=1, max_d=24, scale=10.0, dtype=torch.float64):
    """A ``Tensor[n, d]`` of finite values, drawn from a seed (fast to shrink)."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(min_d, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.normal(0.0, scale, size=(n, d)), dtype=dtype)


@st.composite
def positive_weights(draw, n):
    """Weights in [0.5, 10] for ``n`` clients (all strictly positive)."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(0.5, 10.0, size=n), dtype=torch.float64)


@st.composite
def permutations(draw, n):
    """A permutation of ``range(n)`` as an int64 tensor."""
    return torch.as_tensor(draw(st.permutations(list(range(n)))), dtype=torch.int64)


keys = st.integers(0, 2**32).map(fedkit.key)
