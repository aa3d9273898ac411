"""The server's own update on its trusted root data: the trust anchor of FLTrust (Cao et
al. 2021) and of MoNNA with a server pivot (Farhadkhani et al. 2023).

With ``Strategy.root_examples = N`` the driver draws the root dataset once per run from
the run key (:meth:`fedkit.tasks.SupervisedTask.root_data`: ``N`` clean examples held by
the server) and, every round, trains the global parameters on it exactly as a client
would (the strategy's client config, without client DP-SGD: the server's own data needs no
protection from itself), with a key of its own. The update goes to the chain as
``RoundContext.reference``. Nothing a client sends enters it.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from fedkit.core.keys import Key, fold_in

ROOT_TAG = 0x7257  # folded into the run key (root data) and a round's server key (training)


@attrs.frozen(eq=False)
class RootData:
    """The server's root dataset (inputs and labels)."""

    x: torch.Tensor
    y: torch.Tensor


def root_dataset(task: Any, size: int | None, run_key: Key) -> RootData | None:
    """``size`` root examples of ``task`` drawn from the run key (``None`` without)."""
    if size is None:
        return None
    draw = getattr(task, "root_data", None)
    if draw is None:
        raise ValueError(
            f"Strategy.root_examples={size}: task {getattr(task, 'name', task)!r} has no "
            "root_data(size, key) to give the server a trusted root dataset"
        )
    x, y = draw(size, fold_in(run_key, ROOT_TAG))
    return RootData(x, y)


def server_update(
    task: Any, strategy: Any, params: torch.Tensor, root: RootData, server_key: Key
) -> torch.Tensor:
    """The global parameters trained on the root data with the strategy's client config
    (one full client's work, no DP-SGD): ``trained - params``."""
    from fedkit.training import train_local

    cfg = attrs.evolve(strategy.client, dp_sgd=None)
    with torch.no_grad():
        update, _, _ = train_local(
            task, params, root.x, root.y, cfg.work, fold_in(server_key, ROOT_TAG), cfg
        )
    return update
