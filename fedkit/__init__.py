"""fedkit: robust and private federated learning over PyTorch.

Pure components on flat parameter tensors (docs/architecture.md). The top level holds what a
researcher composes: keys, flat parameters, ``chain``, the component classes, the strategy
and the simulation. The kernels (plain functions) are in :mod:`fedkit.kernels`, the key
samplers in :mod:`fedkit.core.keys` (docs/api.md: the top-level rule).
"""

import warnings as _warnings

from fedkit import kernels
from fedkit._components import *  # noqa: F403
from fedkit._components import DEPRECATED_ALIASES as _DEPRECATED_ALIASES
from fedkit._components import __all__ as _components_all
from fedkit.client import ClientConfig
from fedkit.core import (
    Chain,
    Component,
    Entry,
    Info,
    KernelFilter,
    KernelReducer,
    Key,
    ParamSpec,
    Reducer,
    Role,
    RoundContext,
    ServerTransform,
    Transform,
    as_weights,
    chain,
    checks,
    flatten,
    fold_in,
    hyperparameters,
    key,
    merge_info,
    require_context,
    spec_of,
    split,
    unflatten,
)
from fedkit.core import keys as _keys
from fedkit.simulation import History, simulate
from fedkit.strategy import PartialWork, ServerState, Strategy
from fedkit.strategy import deprecated_stragglers as _deprecated_stragglers

__version__ = "0.1.0"
__all__ = [
    "Chain",
    "ClientConfig",
    "Component",
    "Entry",
    "History",
    "Info",
    "KernelFilter",
    "KernelReducer",
    "Key",
    "ParamSpec",
    "PartialWork",
    "Reducer",
    "Role",
    "RoundContext",
    "ServerState",
    "ServerTransform",
    "Strategy",
    "Transform",
    *_components_all,
    "as_weights",
    "chain",
    "checks",
    "flatten",
    "fold_in",
    "hyperparameters",
    "kernels",
    "key",
    "merge_info",
    "require_context",
    "simulate",
    "spec_of",
    "split",
    "unflatten",
]

# The key samplers left the top level in 0.2: they live in fedkit.core.keys.
_DEPRECATED_SAMPLERS = (
    "bernoulli",
    "choice",
    "generator",
    "normal",
    "permutation",
    "randint",
    "uniform",
)


def __getattr__(name: str):
    """Deprecated top-level names (removed in 0.3): the lowercase aliases of the component
    classes, the key samplers and ``Stragglers`` (now :class:`PartialWork`)."""
    if name in _DEPRECATED_ALIASES:
        cls, kernel = _DEPRECATED_ALIASES[name]
        _warnings.warn(
            f"fedkit.{name} is deprecated: use fedkit.{cls.__name__} (the component) or "
            f"fedkit.kernels.{kernel} (the kernel)",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls
    if name in _DEPRECATED_SAMPLERS:
        _warnings.warn(
            f"fedkit.{name} is deprecated: use fedkit.core.keys.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_keys, name)
    if name == "Stragglers":
        return _deprecated_stragglers(stacklevel=2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
