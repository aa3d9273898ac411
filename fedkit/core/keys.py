"""Explicit, splittable random keys (in the style of JAX's PRNG keys).

A :class:`Key` is an immutable 128-bit value. New keys are derived with :func:`split` and
:func:`fold_in` through a cryptographic hash (BLAKE2b), so derived streams are independent
and the same seed gives the same keys in every process, on every machine. Samplers take a key
and draw from a private ``torch.Generator`` seeded from it; nothing here reads or writes the
global torch, NumPy or Python RNG state.
"""

from __future__ import annotations

import hashlib

import attrs
import torch

_MASK128 = (1 << 128) - 1


def _hash(*parts: bytes) -> int:
    digest = hashlib.blake2b(b"\x00".join(parts), digest_size=16).digest()
    return int.from_bytes(digest, "little")


@attrs.frozen
class Key:
    """An immutable 128-bit random key. Build one with :func:`key`; derive new ones with
    :func:`split` or :func:`fold_in`; never reuse a key for two different draws."""

    bits: int = attrs.field(validator=attrs.validators.instance_of(int))

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.bits <= _MASK128:
            raise ValueError(f"Key bits must fit in 128 unsigned bits, got {self.bits}")

    @property
    def seed(self) -> int:
        """A 63-bit seed for a ``torch.Generator`` (deterministic function of the key)."""
        return _hash(b"seed", self.bits.to_bytes(16, "little")) & ((1 << 63) - 1)

    def to_hex(self) -> str:
        return f"{self.bits:032x}"

    @classmethod
    def from_hex(cls, text: str) -> Key:
        return cls(int(text, 16))

    def __repr__(self) -> str:
        return f"Key({self.to_hex()})"


def key(seed: int) -> Key:
    """Root key from an integer seed (any Python int, negative ones included)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    raw = seed.to_bytes((seed.bit_length() + 8) // 8 or 1, "little", signed=True)
    return Key(_hash(b"root", raw))


def _check(k: Key) -> None:
    if not isinstance(k, Key):
        raise TypeError(f"expected a fedkit Key, got {type(k).__name__}")


def fold_in(k: Key, data: int) -> Key:
    """A new key that depends on ``k`` and the integer ``data`` (a round, a client id, ...)."""
    _check(k)
    if not isinstance(data, int) or isinstance(data, bool):
        raise TypeError(f"fold_in data must be an int, got {type(data).__name__}")
    raw = data.to_bytes((data.bit_length() + 8) // 8 or 1, "little", signed=True)
    return Key(_hash(b"fold", k.bits.to_bytes(16, "little"), raw))


def split(k: Key, num: int = 2) -> tuple[Key, ...]:
    """``num`` new independent keys derived from ``k``."""
    _check(k)
    if num < 1:
        raise ValueError(f"split needs num >= 1, got {num}")
    base = k.bits.to_bytes(16, "little")
    return tuple(Key(_hash(b"split", base, i.to_bytes(8, "little"))) for i in range(num))


def generator(k: Key, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` seeded from ``k`` (for APIs that take a generator)."""
    _check(k)
    gen = torch.Generator(device=device)
    gen.manual_seed(k.seed)
    return gen


def _shape(shape: int | tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


# Samplers draw on the CPU generator and move the result, so the bits are the same on every
# device (a CUDA generator would give a different stream).


def normal(
    k: Key,
    shape: int | tuple[int, ...] | torch.Size,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Gaussian samples N(mean, std²)."""
    out = torch.randn(_shape(shape), generator=generator(k), dtype=dtype)
    if std != 1.0:
        out.mul_(std)
    if mean != 0.0:
        out.add_(mean)
    return out.to(device)


def uniform(
    k: Key,
    shape: int | tuple[int, ...] | torch.Size,
    *,
    low: float = 0.0,
    high: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Uniform samples on [low, high)."""
    out = torch.rand(_shape(shape), generator=generator(k), dtype=dtype)
    return (out * (high - low) + low).to(device)


def bernoulli(
    k: Key,
    p: float | torch.Tensor,
    shape: int | tuple[int, ...] | torch.Size | None = None,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Boolean samples that are True with probability ``p`` (a float or a tensor of them)."""
    probs = torch.as_tensor(p, dtype=torch.float64)
    if shape is not None:
        probs = probs.expand(_shape(shape))
    if torch.any((probs < 0) | (probs > 1)):
        raise ValueError("bernoulli probabilities must lie in [0, 1]")
    draw = torch.rand(probs.shape, generator=generator(k), dtype=torch.float64)
    return (draw < probs).to(device)


def permutation(k: Key, n: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """A uniformly random permutation of ``range(n)`` (int64)."""
    return torch.randperm(n, generator=generator(k)).to(device)


def randint(
    k: Key,
    low: int,
    high: int,
    shape: int | tuple[int, ...] | torch.Size,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Integers uniform on [low, high)."""
    return torch.randint(low, high, _shape(shape), generator=generator(k)).to(device)


def choice(
    k: Key,
    n: int,
    size: int,
    *,
    replace: bool = False,
    p: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``size`` indices from ``range(n)``, with or without replacement, optionally weighted
    by probabilities ``p`` (non-negative, need not sum to one)."""
    if size < 0 or n < 0:
        raise ValueError(f"choice needs non-negative n and size, got n={n}, size={size}")
    if not replace and size > n:
        raise ValueError(f"cannot choose {size} of {n} items without replacement")
    gen = generator(k)
    if p is None:
        if replace:
            return torch.randint(0, n, (size,), generator=gen).to(device)
        return torch.randperm(n, generator=gen)[:size].to(device)
    probs = torch.as_tensor(p, dtype=torch.float64)
    if probs.shape != (n,):
        raise ValueError(f"choice probabilities must have shape ({n},), got {tuple(probs.shape)}")
    if torch.any(probs < 0) or probs.sum() <= 0:
        raise ValueError("choice probabilities must be non-negative with a positive sum")
    if not replace and int((probs > 0).sum()) < size:
        raise ValueError(
            f"only {int((probs > 0).sum())} items have positive probability, need {size}"
        )
    return torch.multinomial(probs, size, replacement=replace, generator=gen).to(device)
