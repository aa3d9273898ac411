"""Nested states as safetensors + JSON: tensors go to a safetensors blob, structure to JSON.

A *tree* is any nesting of tuples, lists, dicts with string keys, frozen attrs values,
named tuples, tensors, fedkit keys, dtypes, enums and JSON scalars (None, bool, int,
float — NaN and ±Inf included — and str). :func:`encode` splits a tree into a JSON-able
skeleton and a ``{name: tensor}`` dict; :func:`decode` puts it back together, rebuilding
attrs values and named tuples from their import path. Component states (tuples of tensors,
attrs values) and whole server states round-trip exactly, bits included.
"""

from __future__ import annotations

import enum
import importlib
import math
from typing import Any

import attrs
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from fedkit.core.flat import dtype_from_name, dtype_name
from fedkit.core.keys import Key

_TAG = "__tree__"


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    while module:
        try:
            obj: Any = importlib.import_module(module)
        except ModuleNotFoundError:
            module, _, head = module.rpartition(".")
            name = f"{head}.{name}"
            continue
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"cannot import {path!r} while decoding a tree")


def encode(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``tree`` into ``(skeleton, tensors)``: a JSON-able skeleton whose tensor leaves
    name entries of ``tensors`` (contiguous CPU copies, safe to hand to safetensors)."""
    tensors: dict[str, torch.Tensor] = {}

    def go(x: Any, where: str) -> Any:
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().to("cpu").contiguous().clone()
            return {_TAG: "tensor", "name": name}
        if isinstance(x, Key):
            return {_TAG: "key", "hex": x.to_hex()}
        if isinstance(x, torch.dtype):
            return {_TAG: "dtype", "name": dtype_name(x)}
        if isinstance(x, enum.Enum):
            return {_TAG: "enum", "class": _path(type(x)), "value": go(x.value, where)}
        if x is None or isinstance(x, bool | int | str):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {_TAG: "float", "repr": repr(x)}
        if attrs.has(type(x)):
            fields = {
                f.name: go(getattr(x, f.name), f"{where}.{f.name}") for f in attrs.fields(type(x))
            }
            return {_TAG: "attrs", "class": _path(type(x)), "fields": fields}
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            items = [go(v, f"{where}[{i}]") for i, v in enumerate(x)]
            return {_TAG: "namedtuple", "class": _path(type(x)), "items": items}
        if isinstance(x, tuple):
            return {_TAG: "tuple", "items": [go(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [go(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            bad = [k for k in x if not isinstance(k, str)]
            if bad:
                raise TypeError(f"tree dict at {where} has non-string keys {bad[:3]}")
            return {_TAG: "dict", "items": {k: go(v, f"{where}.{k}") for k, v in x.items()}}
        raise TypeError(f"cannot serialise a {type(x).__name__} at {where} of a tree")

    return go(tree, "root"), tensors


def decode(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(skeleton, list):
        return [decode(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    kind = skeleton.get(_TAG)
    if kind == "tensor":
        name = skeleton["name"]
        if name not in tensors:
            raise KeyError(f"tree references tensor {name!r}, which the blob does not hold")
        return tensors[name]
    if kind == "key":
        return Key.from_hex(skeleton["hex"])
    if kind == "dtype":
        return dtype_from_name(skeleton["name"])
    if kind == "float":
        return float(skeleton["repr"])
    if kind == "enum":
        return _import(skeleton["class"])(decode(skeleton["value"], tensors))
    if kind == "tuple":
        return tuple(decode(v, tensors) for v in skeleton["items"])
    if kind == "namedtuple":
        return _import(skeleton["class"])(*(decode(v, tensors) for v in skeleton["items"]))
    if kind == "dict":
        return {k: decode(v, tensors) for k, v in skeleton["items"].items()}
    if kind == "attrs":
        cls = _import(skeleton["class"])
        values = {k: decode(v, tensors) for k, v in skeleton["fields"].items()}
        init = {f.name: values[f.name] for f in attrs.fields(cls) if f.init and f.name in values}
        # attrs strips a leading underscore from private fields' init arguments.
        init = {(f.alias or f.name): init[f.name] for f in attrs.fields(cls) if f.name in init}
        obj = cls(**init)
        for f in attrs.fields(cls):
            if not f.init and f.name in values:
                object.__setattr__(obj, f.name, values[f.name])
        return obj
    raise ValueError(f"unknown tree node {skeleton!r}")


def to_bytes(tree: Any) -> tuple[Any, bytes]:
    """``(skeleton, safetensors_bytes)`` for ``tree``."""
    skeleton, tensors = encode(tree)
    return skeleton, _st_save(tensors)


def from_bytes(skeleton: Any, blob: bytes) -> Any:
    """Inverse of :func:`to_bytes`."""
    return decode(skeleton, _st_load(blob))
