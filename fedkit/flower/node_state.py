"""State a deployed node keeps between rounds: its worker momentum
(:mod:`fedkit.run.client_state`), in Flower's per-node ``Context.state`` (a ``RecordDict``
the SuperNode keeps for the run across messages; a restarted SuperNode starts from zero,
as a restarted worker would).

A record holds the momenta before and after the last round the node trained, with that
round's number, so a request repeated for the same round (a retry) mixes from the same
starting point and a node never folds one round in twice.
"""

from __future__ import annotations

from typing import Any

import torch

RECORD = "fedkit.worker-momentum"  # an ArrayRecord: the momenta before and after
ROUND = "fedkit.worker-momentum.round"  # a ConfigRecord: the round they are about (one
# namespace holds every record of a RecordDict: the two need different names)


def momentum_before(state: Any, round: int) -> torch.Tensor | None:
    """The momenta to mix round ``round`` into (``None``: none kept yet)."""
    if state is None or RECORD not in state.array_records:
        return None
    arrays = state.array_records[RECORD].to_torch_state_dict()
    last = int(state.config_records[ROUND]["round"])
    if round == last:
        return arrays["before"]
    if round < last:
        raise ValueError(
            f"worker momentum: a request for round {round} after round {last} was trained"
        )
    return arrays["after"]


def keep_momentum(state: Any, round: int, before: torch.Tensor, after: torch.Tensor) -> None:
    """Record the momenta around round ``round`` in the node's ``Context.state``."""
    from flwr.app import ArrayRecord, ConfigRecord

    if state is None:
        return
    state.array_records[RECORD] = ArrayRecord(
        {"before": before.detach().clone(), "after": after.detach().clone()}
    )
    state.config_records[ROUND] = ConfigRecord({"round": int(round)})
