"""Shared pieces of the model-poisoning kernels: input checks, honest statistics, the
:class:`Attack` base of the attack values, and how an aggregator is called.

Every kernel has the signature ``attack(honest: Tensor[h, d], *, num_byzantine, <params>,
key=None) -> Tensor[b, d]``: ``honest`` holds the honest updates the adversary may see (see
:mod:`attacks.knowledge` for what that is under each knowledge level) and the result holds
the ``b = num_byzantine`` Byzantine rows, in ``honest``'s dtype and device. Kernels never
write into ``honest``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from fedkit.core.checks import floating_tensor
from fedkit.core.components import Role, hyperparameters
from fedkit.core.keys import Key
from fedkit.core.rows import coordinate_chunks


def check_honest(honest: torch.Tensor, num_byzantine: int, name: str, *, min_rows: int = 1) -> int:
    """Validate ``honest: Tensor[h, d]`` (floating, at least ``min_rows`` rows) and
    ``num_byzantine`` (an int >= 0); return ``num_byzantine``."""
    floating_tensor(honest, name, "honest", "[h, d]")
    if honest.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} honest row(s), got {honest.shape[0]}")
    if isinstance(num_byzantine, bool) or not isinstance(num_byzantine, int):
        raise TypeError(f"{name}: num_byzantine must be an int, got {type(num_byzantine).__name__}")
    if num_byzantine < 0:
        raise ValueError(f"{name}: num_byzantine must be >= 0, got {num_byzantine}")
    return num_byzantine


def require_key(key: Key | None, name: str) -> Key:
    if key is None:
        raise ValueError(f"{name} draws random numbers and needs a key")
    return key


def _by_chunks(honest: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` (a column-wise reduction, float64) applied chunk by chunk: ``Tensor[d]`` in
    ``honest``'s dtype, without a float64 copy of the whole matrix."""
    h, d = honest.shape
    out = torch.empty(d, dtype=honest.dtype, device=honest.device)
    for cols in coordinate_chunks(h, d):
        out[cols] = fn(honest[:, cols].double()).to(honest.dtype)
    return out


def honest_mean(honest: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise mean ``μ`` of the honest rows (``Tensor[d]``, accumulated in float64)."""
    return _by_chunks(honest, lambda block: block.mean(dim=0))


def honest_std(honest: torch.Tensor, name: str) -> torch.Tensor:
    """Coordinate-wise sample standard deviation ``σ`` (unbiased, divisor ``h − 1``)."""
    if honest.shape[0] < 2:
        raise ValueError(f"{name}: the standard deviation needs at least 2 honest rows, got 1")
    return _by_chunks(honest, lambda block: block.std(dim=0, correction=1))


def row_dots(rows: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``rows @ vector`` in float64 (``Tensor[h]``), accumulated over coordinate chunks."""
    h, d = rows.shape
    acc = torch.zeros(h, dtype=torch.float64, device=rows.device)
    for cols in coordinate_chunks(h, d):
        acc += rows[:, cols].double() @ vector[cols].double()
    return acc


def repeat_row(row: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``Tensor[num_rows, d]`` whose rows all equal ``row`` (a new tensor, not a view)."""
    return row.unsqueeze(0).repeat(num_rows, 1)


def check_positive(value: float, name: str) -> float:
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def aggregate_fn(
    aggregator: Any,
) -> Callable[[torch.Tensor, torch.Tensor, Key | None], torch.Tensor]:
    """``aggregator`` as a function ``(U, w, key) -> Tensor[d]``.

    Accepted: a fedkit reducer component (a :class:`~fedkit.core.components.Reducer` such as
    a ``Chain`` of filters and a reducer; it is called with a fresh ``init(d)`` state), or a
    plain callable ``(updates, weights) -> Tensor[d]`` such as an aggregation kernel with its
    hyper-parameters bound (``functools.partial(trimmed_mean, f=2)``); a callable that takes a
    ``key`` keyword also gets the key.
    """
    role = getattr(aggregator, "role", None)
    if role is not None:
        if role is not Role.REDUCER:
            raise TypeError(
                f"aggregator must be a reducer (or a chain ending in one), "
                f"got a {role} component {type(aggregator).__name__}"
            )

        def call_component(u: torch.Tensor, w: torch.Tensor, key: Key | None) -> torch.Tensor:
            out, _, _ = aggregator(u, w, aggregator.init(u.shape[1]), key)
            return out

        return call_component
    if not callable(aggregator):
        raise TypeError(f"aggregator must be callable, got {type(aggregator).__name__}")
    try:
        takes_key = "key" in inspect.signature(aggregator).parameters
    except (TypeError, ValueError):
        takes_key = False

    def call_plain(u: torch.Tensor, w: torch.Tensor, key: Key | None) -> torch.Tensor:
        return aggregator(u, w, key=key) if takes_key else aggregator(u, w)

    return call_plain


class Attack:
    """Base of the attack values: a frozen attrs class whose fields have the names of its
    kernel's parameters. ``attack(honest, num_byzantine=b, num_clients=n, own=o, key=k)``
    calls the kernel, forwarding only what the kernel lists in ``context``:

    * ``num_clients``: the number of clients the server aggregates, Byzantine ones included;
    * ``own``: the adversary's own clients' honest updates (``Tensor[b, d]``, one per
      Byzantine row, in row order), for attacks that transform their own update (e.g.
      :class:`~attacks.poisoning.neurotoxin.Neurotoxin`).

    ``reads_own`` says whether the rows depend on the adversary's own updates beyond what its
    knowledge level shows (``own`` in ``context``); ``knowledge_levels`` lists the levels the
    attack makes sense under (the adversaries check it)."""

    kernel: ClassVar[Callable[..., torch.Tensor]]
    context: ClassVar[tuple[str, ...]] = ()
    knowledge_levels: ClassVar[tuple[str, ...]] = ("omniscient", "partial")

    @property
    def reads_own(self) -> bool:
        return "own" in type(self).context

    def __call__(
        self,
        honest: torch.Tensor,
        *,
        num_byzantine: int,
        num_clients: int | None = None,
        own: torch.Tensor | None = None,
        key: Key | None = None,
    ) -> torch.Tensor:
        given = {"num_clients": num_clients, "own": own}
        extra = {name: given[name] for name in type(self).context}
        return type(self).kernel(
            honest, num_byzantine=num_byzantine, key=key, **extra, **hyperparameters(self)
        )
