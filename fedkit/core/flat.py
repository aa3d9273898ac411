"""Flat parameter vectors: a model's tensors as one 1-D tensor plus a :class:`ParamSpec`.

``flatten`` copies the tensors once into a single vector; ``unflatten`` gives views into
that vector (no copies), reshaped to each tensor's shape, so a whole model travels, is
aggregated and is noised as one ``Tensor[d]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

import attrs
import torch

_DTYPES = {
    str(t).removeprefix("torch."): t
    for t in (
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.uint8,
        torch.bool,
    )
}


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise TypeError(f"unsupported dtype {dtype} in a flat parameter vector")
    return name


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise TypeError(f"unknown dtype name {name!r}; known: {sorted(_DTYPES)}") from None


@attrs.frozen
class Entry:
    """One named tensor inside a flat vector: ``flat[offset : offset + numel]``."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=lambda s: tuple(int(x) for x in s))
    dtype: str
    offset: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _entries(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(entries)


@attrs.frozen
class ParamSpec:
    """Names, shapes, dtypes and offsets of the tensors packed in a flat vector.

    ``dtype`` is the flat vector's dtype (the promotion of all entries' dtypes). Hashable,
    comparable, and JSON round-trippable with :meth:`to_json` / :meth:`from_json`.
    """

    entries: tuple[Entry, ...] = attrs.field(converter=_entries)
    dtype: str = "float32"

    def __attrs_post_init__(self) -> None:
        offset = 0
        seen = set()
        for e in self.entries:
            if e.name in seen:
                raise ValueError(f"duplicate parameter name {e.name!r} in ParamSpec")
            seen.add(e.name)
            if e.offset != offset:
                raise ValueError(f"entry {e.name!r} has offset {e.offset}, expected {offset}")
            offset += e.numel
        dtype_from_name(self.dtype)

    @property
    def size(self) -> int:
        """Length ``d`` of the flat vector."""
        return sum(e.numel for e in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def torch_dtype(self) -> torch.dtype:
        return dtype_from_name(self.dtype)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no parameter named {name!r}; have {list(self.names)}")

    def select(self, names: Iterable[str] | Callable[[str], bool]) -> ParamSpec:
        """A spec over a subset of the entries (kept in this spec's order), with offsets
        recomputed; e.g. ``spec.select(trainable_names)``."""
        if callable(names):
            keep = [e.name for e in self.entries if names(e.name)]
        else:
            keep = list(names)
            missing = [n for n in keep if n not in self.names]
            if missing:
                raise KeyError(f"select: unknown parameter names {missing}")
        keep_set = set(keep)
        return _build([(e.name, e.shape, e.dtype) for e in self.entries if e.name in keep_set])

    def check(self, flat: torch.Tensor, *, what: str = "flat vector") -> None:
        """Raise a clear error unless ``flat`` is a 1-D tensor matching this spec."""
        if not isinstance(flat, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(flat).__name__}")
        if flat.ndim != 1:
            raise ValueError(f"{what} must be 1-D, got shape {tuple(flat.shape)}")
        if flat.numel() != self.size:
            raise ValueError(f"{what} has length {flat.numel()}, ParamSpec expects {self.size}")
        if flat.dtype != self.torch_dtype:
            raise TypeError(
                f"{what} has dtype {flat.dtype}, ParamSpec expects {self.torch_dtype} (no silent "
                f"cast: convert it explicitly, e.g. flat.to(spec.torch_dtype))"
            )

    def to_dict(self) -> dict:
        return {
            "dtype": self.dtype,
            "entries": [
                {"name": e.name, "shape": list(e.shape), "dtype": e.dtype, "offset": e.offset}
                for e in self.entries
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> ParamSpec:
        return cls(entries=[Entry(**e) for e in data["entries"]], dtype=data["dtype"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ParamSpec:
        return cls.from_dict(json.loads(text))


def _build(items: Iterable[tuple[str, tuple[int, ...], str]]) -> ParamSpec:
    entries, offset, dtype = [], 0, None
    for name, shape, dt in items:
        e = Entry(name=name, shape=shape, dtype=dt, offset=offset)
        entries.append(e)
        offset += e.numel
        t = dtype_from_name(dt)
        dtype = t if dtype is None else torch.promote_types(dtype, t)
    return ParamSpec(entries=entries, dtype=dtype_name(dtype or torch.float32))


def spec_of(tensors: Mapping[str, torch.Tensor]) -> ParamSpec:
    """The ParamSpec that :func:`flatten` would produce for ``tensors``."""
    return _build((n, tuple(t.shape), dtype_name(t.dtype)) for n, t in tensors.items())


def flatten(
    tensors: Mapping[str, torch.Tensor], spec: ParamSpec | None = None
) -> tuple[torch.Tensor, ParamSpec]:
    """Pack ``tensors`` into one 1-D tensor (one copy) and return it with its ParamSpec.

    With ``spec`` given, only the spec's entries are packed (in its order) and their shapes
    are checked, e.g. ``flatten(model.state_dict(), spec=trainable_spec)``.
    """
    if spec is None:
        spec = spec_of(tensors)
    flat_dtype = spec.torch_dtype
    parts = []
    for e in spec.entries:
        if e.name not in tensors:
            raise KeyError(f"flatten: tensor {e.name!r} of the ParamSpec is missing")
        t = tensors[e.name]
        if tuple(t.shape) != e.shape:
            raise ValueError(f"flatten: {e.name!r} has shape {tuple(t.shape)}, spec says {e.shape}")
        parts.append(t.detach().reshape(-1).to(flat_dtype))
    if not parts:
        return torch.zeros(0, dtype=flat_dtype), spec
    return torch.cat(parts), spec


def unflatten(
    flat: torch.Tensor, spec: ParamSpec, *, cast: bool = False
) -> dict[str, torch.Tensor]:
    """Named tensors as views into ``flat`` (no copies).

    ``flat`` must have the spec's dtype (:meth:`ParamSpec.check`). An entry whose own dtype
    differs from it (a float32 weight in a float64 vector, an integer buffer in a float
    vector) is refused with a ``TypeError`` naming both dtypes, since returning it would
    silently round or truncate the values: pass ``cast=True`` when that cast is intended;
    those entries then come back converted to their own dtype (a copy)."""
    spec.check(flat)
    out = {}
    for e in spec.entries:
        view = flat[e.offset : e.offset + e.numel].view(e.shape)
        target = dtype_from_name(e.dtype)
        if target != flat.dtype and not cast:
            raise TypeError(
                f"unflatten: entry {e.name!r} has dtype {target} but the flat vector has dtype "
                f"{flat.dtype}; a value is never cast silently: pass cast=True to convert it"
            )
        out[e.name] = view if target == flat.dtype else view.to(target)
    return out
