"""Reader for the IDX format of (Fashion-)MNIST: a 4-byte magic (two zero bytes, a type
code, the number of dimensions), big-endian uint32 dimensions, then the raw array.
Gzipped files (as Debian ships them) are recognised by their content."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes, *, source: str = "IDX data") -> np.ndarray:
    """The array stored in the IDX bytes ``raw`` (native byte order, writable)."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{source}: not an IDX file (bad magic {raw[:4]!r})")
    code, ndim = raw[2], raw[3]
    if code not in _TYPES:
        raise ValueError(f"{source}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{source}: IDX body has {len(raw) - header} bytes, dimensions {dims} need {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """The array in the IDX file at ``path`` (plain or gzipped)."""
    path = Path(path)
    return parse_idx(path.read_bytes(), source=str(path))
