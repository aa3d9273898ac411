"""The component protocol and :func:`chain`.

A component is a frozen attrs value with ``init(d) -> state`` and a pure call

    component(updates, weights, state, key) -> (out, state, info)

in one of three roles, in this order inside a chain (docs/architecture.md, "Components"):

* ``transform``: ``Tensor[n, d], Tensor[n] -> (Tensor[n, d], Tensor[n])`` — acts on client
  rows; it may zero a weight to exclude a client (shapes stay static);
* ``reducer``: ``Tensor[n, d], Tensor[n] -> Tensor[d]`` — exactly one per chain;
* ``server``: ``Tensor[d] -> Tensor[d]`` — acts on the aggregate (noise, server optimizers);
  it receives the aggregate as ``updates`` and the reducer's input weights as ``weights``.

``info`` is a dict. Keys with a shared meaning, merged by :func:`chain`:

* ``"rejected"``: ``{reason: BoolTensor[n]}`` clients this component excluded (a
  transform that regroups rows, like bucketing, reports none: its output rows are not
  clients);
* ``"clipped"``: ``BoolTensor[n]`` clients whose row was scaled down;
* ``"scores"``: ``{name: Tensor[n]}`` per-client scores;
* anything else is kept under the component's position and class name.

Components never mutate their inputs and never read global state: randomness comes only
from ``key``.

Context. A component that needs to know more than the rows (which client sent each row,
the global parameters, the server's own update on its trusted root data) sets the class
attribute ``uses_context = True`` and takes a keyword ``context`` (a :class:`RoundContext`,
``None`` outside a strategy) in ``__call__``; :class:`Chain` hands it on. Everything else is
called without it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar

import attrs
import torch

from fedkit.core.keys import Key, split

Info = dict[str, Any]


@attrs.frozen(eq=False)
class RoundContext:
    """What the server knows about a round besides the rows.

    ``round`` (1-based); ``clients``: int64 ``[n]``, the client id of each row of ``updates``
    (``-1`` for a padding row); ``num_clients``: clients in the federation; ``params``: the
    global parameters before the round (``[d]``); ``reference``: the server's own update on
    its trusted root data (``[d]``, computed by the run driver when the strategy has
    ``root_examples``; ``None`` otherwise). Components read it, never change it.
    """

    round: int
    clients: torch.Tensor
    num_clients: int
    params: torch.Tensor
    reference: torch.Tensor | None = None


def require_context(context: RoundContext | None, who: str, *, reference: bool = False):
    """``context`` or a ``ValueError`` saying ``who`` needs one (and a root-data reference
    when ``reference``)."""
    if context is None:
        raise ValueError(
            f"{who} needs the round's context (client ids, global parameters): call it "
            "through a fedkit.Strategy, or pass context=RoundContext(...)"
        )
    if reference and context.reference is None:
        raise ValueError(
            f"{who} needs the server's own update on its trusted root data: build the "
            "strategy with Strategy(root_examples=...) (e.g. 100), so the run driver trains "
            "the global model on root data held by the server each round"
        )
    return context


def call(component: Any, updates, weights, state, key, context: RoundContext | None):
    """``component(updates, weights, state, key)``, with ``context=`` when it uses one."""
    if getattr(component, "uses_context", False):
        return component(updates, weights, state, key, context=context)
    return component(updates, weights, state, key)


class Role(StrEnum):
    TRANSFORM = "transform"
    REDUCER = "reducer"
    SERVER = "server"


class Component:
    """Base of every component; subclasses are ``@attrs.frozen`` and set ``role``."""

    role: ClassVar[Role]
    uses_context: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False  # reads context.reference (a trust anchor)

    def init(self, d: int) -> Any:
        """The initial state for parameter dimension ``d`` (stateless: ``()``)."""
        return ()

    def __call__(
        self, updates: torch.Tensor, weights: torch.Tensor, state: Any, key: Key | None
    ) -> tuple[Any, Any, Info]:
        raise TypeError(f"{type(self).__name__} does not define __call__")


class Transform(Component):
    role = Role.TRANSFORM


class Reducer(Component):
    role = Role.REDUCER


class ServerTransform(Component):
    role = Role.SERVER


def hyperparameters(component: Any) -> dict[str, Any]:
    """The component's attrs fields as a dict (its constructor arguments)."""
    return {f.name: getattr(component, f.name) for f in attrs.fields(type(component))}


class KernelReducer(Reducer):
    """A stateless reducer that calls a plain kernel ``kernel(U, w, **fields, key=key)``."""

    kernel: ClassVar[Callable[..., torch.Tensor]]

    def __call__(self, updates, weights, state, key):
        out = type(self).kernel(updates, weights, key=key, **hyperparameters(self))
        return out, state, {}


class KernelFilter(Transform):
    """A stateless transform that calls ``kernel(U, w, **fields, key=key) -> (U, w)`` and
    reports rows whose weight it zeroed as rejected with reason ``reason``."""

    kernel: ClassVar[Callable[..., tuple[torch.Tensor, torch.Tensor]]]
    reason: ClassVar[str]

    def __call__(self, updates, weights, state, key):
        new_u, new_w = type(self).kernel(updates, weights, key=key, **hyperparameters(self))
        rejected = (weights > 0) & (new_w <= 0)
        return (new_u, new_w), state, {"rejected": {type(self).reason: rejected}}


def as_weights(weights: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """``weights`` as a float tensor of shape ``[n]`` on ``like``'s device (ones if None)."""
    if weights is None:
        return torch.ones(n, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, device=like.device)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(w.shape)}")
    if not torch.is_floating_point(w):
        w = w.to(like.dtype if torch.is_floating_point(like) else torch.float32)
    if torch.any(w < 0) or not torch.all(torch.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    return w


def merge_info(into: Info, info: Info, label: str) -> Info:
    """Merge one component's ``info`` into the chain's (new dict; inputs untouched)."""
    out = dict(into)
    for k, v in info.items():
        if k == "rejected":
            rej = dict(out.get("rejected", {}))
            for reason, mask in v.items():
                rej[reason] = rej[reason] | mask if reason in rej else mask
            out["rejected"] = rej
        elif k == "clipped":
            out["clipped"] = out["clipped"] | v if "clipped" in out else v
        elif k == "scores":
            out["scores"] = {**out.get("scores", {}), **{f"{label}.{n}": s for n, s in v.items()}}
        else:
            out[f"{label}.{k}"] = v
    return out


@attrs.frozen
class Chain(Reducer):
    """Transforms, then one reducer, then server transforms, composed into one reducer.

    ``init(d)`` returns a tuple of the components' states; the call returns the aggregate,
    the tuple of new states and the merged info, which also holds ``"accepted"``
    (BoolTensor[n]: clients that came with a positive weight and that no component
    rejected).
    """

    components: tuple[Component, ...] = attrs.field(converter=tuple)
    uses_context: ClassVar[bool] = True

    def __attrs_post_init__(self) -> None:
        _check_roles(self.components)

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        """Whether a component reads the server's root-data update (``context.reference``)."""
        return any(getattr(c, "needs_reference", False) for c in self.components)

    def init(self, d: int) -> tuple:
        return tuple(c.init(d) for c in self.components)

    def __call__(self, updates, weights, state, key, *, context: RoundContext | None = None):
        if updates.ndim != 2:
            raise ValueError(f"chain expects updates of shape [n, d], got {tuple(updates.shape)}")
        n = updates.shape[0]
        weights = as_weights(weights, n, updates)
        initial_weights = weights
        if state is None:
            state = self.init(updates.shape[1])
        if len(state) != len(self.components):
            raise ValueError(
                f"chain state has {len(state)} entries for {len(self.components)} components"
            )
        keys = (
            split(key, len(self.components)) if key is not None else (None,) * len(self.components)
        )
        info: Info = {}
        new_states = []
        out: Any = updates
        reducer_weights = weights
        for i, (comp, st, k) in enumerate(zip(self.components, state, keys, strict=True)):
            label = f"{i}.{type(comp).__name__}"
            if comp.role is Role.TRANSFORM:
                (out, weights), st, ci = call(comp, out, weights, st, k, context)
            elif comp.role is Role.REDUCER:
                reducer_weights = weights
                out, st, ci = call(comp, out, weights, st, k, context)
            else:
                out, st, ci = call(comp, out, reducer_weights, st, k, context)
            new_states.append(st)
            info = merge_info(info, ci, label)
        accepted = initial_weights > 0
        for mask in info.get("rejected", {}).values():
            accepted = accepted & ~mask
        info["accepted"] = accepted
        return out, tuple(new_states), info


def _check_roles(components: tuple[Component, ...]) -> None:
    if not components:
        raise ValueError("chain needs at least one component (a reducer)")
    order = {Role.TRANSFORM: 0, Role.REDUCER: 1, Role.SERVER: 2}
    roles = []
    for i, c in enumerate(components):
        role = getattr(c, "role", None)
        if role not in order:
            raise TypeError(
                f"chain position {i}: {type(c).__name__} is not a fedkit component (no role)"
            )
        roles.append(role)
    described = ", ".join(
        f"{i}:{type(c).__name__}({r})" for i, (c, r) in enumerate(zip(components, roles))
    )
    reducers = [i for i, r in enumerate(roles) if r is Role.REDUCER]
    if len(reducers) != 1:
        raise ValueError(
            f"chain needs exactly one reducer, got {len(reducers)} at positions {reducers}: [{described}]"
        )
    for i in range(1, len(roles)):
        if order[roles[i]] < order[roles[i - 1]]:
            raise ValueError(
                f"chain position {i}: a {roles[i]} cannot follow a {roles[i - 1]} "
                f"(order is transforms, one reducer, server transforms): [{described}]"
            )


def chain(*components: Component) -> Chain:
    """Compose components like optax's ``chain``: transforms, one reducer, server transforms."""
    return Chain(components)
