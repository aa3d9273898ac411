"""Core: explicit keys, flat parameters, the component protocol."""

from fedkit.core.components import (
    Chain,
    Component,
    Info,
    KernelFilter,
    KernelReducer,
    Reducer,
    Role,
    ServerTransform,
    Transform,
    as_weights,
    chain,
    hyperparameters,
    merge_info,
)
from fedkit.core.flat import Entry, ParamSpec, flatten, spec_of, unflatten
from fedkit.core.keys import (
    Key,
    bernoulli,
    choice,
    fold_in,
    generator,
    key,
    normal,
    permutation,
    randint,
    split,
    uniform,
)

__all__ = [
    "Chain", "Component", "Entry", "Info", "Key", "KernelFilter", "KernelReducer", "ParamSpec",
    "Reducer", "Role", "ServerTransform", "Transform", "as_weights", "bernoulli", "chain",
    "choice", "flatten", "fold_in", "generator", "hyperparameters", "key", "merge_info",
    "normal", "permutation", "randint", "spec_of", "split", "unflatten", "uniform",
]
