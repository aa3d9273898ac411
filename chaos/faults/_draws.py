"""Keyed uniforms per client: the only source of randomness of the fault models.

Draw ``j`` of client ``c`` in round ``r`` is the top 53 bits of
``fold_in(fold_in(fold_in(key, r), c), j)`` scaled to [0, 1). It depends on the key, the round,
the client id and ``j`` only — not on which other clients were sampled, on their order, or on
the engine — so a plan is reproducible across engines and after a resume. The bits come
straight from the key hash (no ``torch.Generator``), hence identical on every device and
torch version.
"""

from __future__ import annotations

import torch

from fedkit.core.keys import Key, fold_in

_SCALE = 2.0**-53


def client_uniforms(key: Key, clients: torch.Tensor, n: int) -> torch.Tensor:
    """``float64[m, n]`` uniforms on [0, 1): row ``i`` from ``fold_in(key, clients[i])``."""
    ids = clients.tolist()
    bits = []
    for c in ids:
        k_client = fold_in(key, c)
        bits.append([fold_in(k_client, j).bits >> 75 for j in range(n)])
    if not bits:
        return torch.zeros(0, n, dtype=torch.float64)
    return torch.tensor(bits, dtype=torch.int64).to(torch.float64) * _SCALE


def round_uniforms(key: Key, round: int, clients: torch.Tensor, n: int = 1) -> torch.Tensor:
    """``float64[m, n]`` uniforms of round ``round`` for the sampled ``clients``."""
    return client_uniforms(fold_in(key, round), clients, n)
