"""Flat vectors on the wire: a flat tensor <-> a Flower ``ArrayRecord``, with the ParamSpec.

Both directions carry the model's :class:`~fedkit.core.flat.ParamSpec` as JSON in a
``ConfigRecord`` next to the arrays, so each side checks that the other speaks about the
same model. The client side is strict (:func:`read_params` raises on anything unexpected:
its input comes from the server it chose to trust); the server side is lenient
(:func:`read_update` never raises: whatever a client sent becomes a payload that
:func:`fedkit.replies.validate` accepts or rejects with a reason).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedkit.core.flat import ParamSpec

PARAMS = "params"
UPDATE = "update"
SPEC = "spec"
NPY_HEADER_SLACK = 4096  # bytes of serialisation overhead allowed beyond the elements


class SpecMismatch(ValueError):
    """The peer's parameters describe another model (ParamSpec or shape differ)."""


def to_array_record(flat: torch.Tensor, name: str) -> ArrayRecord:
    """One flat tensor as an ``ArrayRecord`` holding a single array ``name``."""
    if not isinstance(flat, torch.Tensor) or flat.ndim != 1:
        raise ValueError(f"to_array_record expects a 1-D tensor, got {type(flat).__name__}")
    array = Array(flat.detach().cpu().contiguous().numpy())
    return ArrayRecord(array_dict={name: array})


def spec_record(spec: ParamSpec) -> ConfigRecord:
    """The ParamSpec as a ``ConfigRecord`` (``{"spec": json}``)."""
    return ConfigRecord({SPEC: spec.to_json()})


def write_params(content: RecordDict, flat: torch.Tensor, spec: ParamSpec) -> None:
    """Put the global parameters and their spec into ``content`` (server -> client)."""
    spec.check(flat, what="global parameters")
    content[PARAMS] = to_array_record(flat, PARAMS)
    content[SPEC] = spec_record(spec)


def read_params(content: RecordDict, spec: ParamSpec) -> torch.Tensor:
    """The global parameters sent by the server, checked against the local ``spec``.

    Raises :class:`SpecMismatch` if the server's spec differs from the local one or the
    vector does not match it."""
    try:
        theirs = ParamSpec.from_json(str(content.config_records[SPEC][SPEC]))
    except KeyError:
        raise SpecMismatch("the server's message carries no ParamSpec") from None
    if theirs != spec:
        raise SpecMismatch("the server's ParamSpec differs from this client's model")
    record = content.array_records.get(PARAMS)
    if record is None or list(record.keys()) != [PARAMS]:
        raise SpecMismatch("the server's message carries no 'params' array")
    flat = torch.from_numpy(np.array(record[PARAMS].numpy(), copy=True))
    try:
        spec.check(flat, what="global parameters")
    except ValueError as exc:
        raise SpecMismatch(str(exc)) from None
    return flat


def write_update(content: RecordDict, update: Any, spec: ParamSpec) -> None:
    """Put a client's update and the client's spec into ``content`` (client -> server).
    ``update`` is normally a flat tensor; raw bytes are sent as a ``uint8`` array (this is
    how a broken or malicious client's payload reaches the server)."""
    if isinstance(update, bytes | bytearray):
        update = torch.frombuffer(bytearray(update), dtype=torch.uint8)
    content[UPDATE] = to_array_record(update, UPDATE)
    content[SPEC] = spec_record(spec)


def payload_size(content: RecordDict) -> int:
    """Bytes of array data in ``content``'s ``update`` record (0 if there is none)."""
    record = content.array_records.get(UPDATE)
    if record is None:
        return 0
    return sum(array_bytes(a) for a in record.values())


def array_bytes(array: Array) -> int:
    """Bytes of an array's elements (as declared by its dtype and shape; the raw buffer's
    length when those do not parse), so sizes compare as in the simulation."""
    try:
        declared = int(np.dtype(array.dtype).itemsize * math.prod(array.shape))
    except (TypeError, ValueError):
        return len(array.data)
    return max(declared, len(array.data) - NPY_HEADER_SLACK)  # a lying header cannot hide bytes


def read_update(content: RecordDict, spec: ParamSpec, max_bytes: int) -> Any:
    """A client's payload as :func:`fedkit.replies.validate` expects it, never raising:
    the flat tensor when the message decodes; ``bytes`` of the size sent when it is larger
    than ``max_bytes`` (not decoded: rejected as ``oversized``); ``None`` when there is no
    update, the client's spec differs from ``spec``, or the array cannot be decoded
    (rejected as ``malformed``). Shape and dtype are left to validation."""
    size = payload_size(content)
    if size > max_bytes:
        return bytes(size)  # counted, not decoded
    try:
        theirs = ParamSpec.from_json(str(content.config_records[SPEC][SPEC]))
        record = content.array_records[UPDATE]
        if theirs != spec or list(record.keys()) != [UPDATE]:
            return None
        array = record[UPDATE].numpy()
        if array.dtype.kind not in "fiub":
            return None
        return torch.from_numpy(np.array(array, copy=True))
    except Exception:
        return None
