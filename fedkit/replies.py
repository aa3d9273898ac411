"""Client replies and their validation, shared by the simulation and the Flower deployment.

A reply carries a client's update ``Δ = local − global`` as a flat tensor, its example count
and its metrics, tagged with the round it answers. :func:`validate` decides, reply by reply
and in arrival order, which ones the server may aggregate; every other reply is rejected
with one reason, and no malformed reply can raise. Reasons, in the order they are checked:

* ``unexpected``: the sender was not sampled this round;
* ``stale``: the round tag is older than the current round (a replay);
* ``wrong_round``: the round tag is newer than the current round or not an integer;
* ``duplicate``: the sender already replied this round (only its first reply counts);
* ``oversized``: the payload is larger than the byte limit;
* ``malformed``: the payload is not a tensor (raw bytes, ``None``, ...);
* ``wrong_dtype``: the tensor's dtype is not the parameters' dtype;
* ``wrong_shape``: the tensor is not 1-D of length ``d`` (a truncated vector, say);
* ``non_finite``: the tensor holds NaN or ±Inf;
* ``bad_num_examples``: the example count is not a positive integer.

A :class:`Verdict` is the fate of one sampled client's reply in a round (accepted, rejected
with its reason, or lost on the way), as the audit log records it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import torch

REASONS = (
    "unexpected",
    "stale",
    "wrong_round",
    "duplicate",
    "oversized",
    "malformed",
    "wrong_dtype",
    "wrong_shape",
    "non_finite",
    "bad_num_examples",
)


@attrs.frozen(eq=False)
class Reply:
    """One client's answer to round ``round``: its update, example count and metrics."""

    client: int
    round: int
    update: Any
    num_examples: int
    metrics: Mapping[str, float] = attrs.field(factory=dict)


VERDICTS = ("accepted", "rejected", "lost")


@attrs.frozen
class Verdict:
    """What became of one reply (or of a sampled client's missing reply): ``status`` is
    ``"accepted"``, ``"rejected"`` (``reason``: a validation reason, a chain filter's reason,
    ``quorum_missed`` or a transport's refusal) or ``"lost"`` (``reason``: why it did not
    arrive); ``node`` is the deployment node it came from, when there is one."""

    client: int
    status: str
    reason: str | None = None
    node: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.status not in VERDICTS:
            raise ValueError(f"Verdict.status must be one of {VERDICTS}, got {self.status!r}")
        if (self.status == "accepted") != (self.reason is None):
            raise ValueError(
                f"Verdict.reason must be None exactly when accepted, got status "
                f"{self.status!r} with reason {self.reason!r}"
            )

    def to_dict(self) -> dict[str, int | str | None]:
        return {
            "client": self.client,
            "status": self.status,
            "reason": self.reason,
            "node": self.node,
        }


@attrs.frozen(eq=False)
class Validation:
    """Outcome of :func:`validate`: the accepted replies (at most one per client, in arrival
    order) and ``(client, reason)`` for every rejected one."""

    accepted: tuple[Reply, ...]
    rejected: tuple[tuple[int, str], ...]

    @property
    def reasons(self) -> dict[str, int]:
        """Rejections counted by reason."""
        return dict(Counter(reason for _, reason in self.rejected))


def payload_bytes(update: Any) -> int:
    """Size of a payload in bytes (tensor storage, or ``len`` of a bytes-like object)."""
    if isinstance(update, torch.Tensor):
        return update.numel() * update.element_size()
    if isinstance(update, bytes | bytearray | memoryview):
        return len(update)
    return 0


def _finite(update: torch.Tensor) -> bool:
    """No NaN or ±Inf in ``update``. Fast path: one float64 sum, which is finite iff every
    entry is (a sum of float32 values cannot overflow float64); only a non-finite sum of a
    float64 tensor, which may be an overflow, is checked entry by entry."""
    if math.isfinite(update.sum(dtype=torch.float64).item()):
        return True
    return update.dtype == torch.float64 and bool(torch.isfinite(update).all())


def check(
    reply: Any,
    *,
    round: int,
    d: int,
    dtype: torch.dtype,
    max_bytes: int,
    expected: frozenset[int] | None,
    seen: set[int],
) -> str | None:
    """The reason ``reply`` must be rejected, or ``None`` if it is valid (see module doc).
    ``seen`` holds the clients that already replied; this function does not modify it."""
    client = getattr(reply, "client", None)
    if not isinstance(client, int) or (expected is not None and client not in expected):
        return "unexpected"
    tag = getattr(reply, "round", None)
    if isinstance(tag, int) and not isinstance(tag, bool) and tag < round:
        return "stale"
    if not isinstance(tag, int) or isinstance(tag, bool) or tag != round:
        return "wrong_round"
    if client in seen:
        return "duplicate"
    update = getattr(reply, "update", None)
    if payload_bytes(update) > max_bytes:
        return "oversized"
    if not isinstance(update, torch.Tensor):
        return "malformed"
    if update.dtype != dtype:
        return "wrong_dtype"
    if update.ndim != 1 or update.shape[0] != d:
        return "wrong_shape"
    if not _finite(update):
        return "non_finite"
    n = getattr(reply, "num_examples", None)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return "bad_num_examples"
    return None


def validate(
    replies: Iterable[Any],
    *,
    round: int,
    d: int,
    dtype: torch.dtype,
    expected: Iterable[int] | None = None,
    max_bytes: int | None = None,
) -> Validation:
    """Validate replies to round ``round`` for parameters of length ``d`` and ``dtype``.

    ``expected``: the sampled client ids (``None`` accepts any sender). ``max_bytes``: the
    payload limit (default twice the size of a valid update). A client's first reply
    claims its slot, so any later reply from it is a ``duplicate`` whatever its fate.
    """
    limit = 2 * d * torch.empty((), dtype=dtype).element_size() if max_bytes is None else max_bytes
    allowed = None if expected is None else frozenset(int(c) for c in expected)
    seen: set[int] = set()
    accepted: list[Reply] = []
    rejected: list[tuple[int, str]] = []
    for reply in replies:
        reason = check(
            reply, round=round, d=d, dtype=dtype, max_bytes=limit, expected=allowed, seen=seen
        )
        client = getattr(reply, "client", -1)
        if reason is None:
            accepted.append(reply)
        else:
            rejected.append((client if isinstance(client, int) else -1, reason))
        if reason not in ("unexpected", "stale", "wrong_round", "duplicate"):
            seen.add(client)
    return Validation(accepted=tuple(accepted), rejected=tuple(rejected))
