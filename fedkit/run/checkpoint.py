"""Checkpoints: ``ckpt_000012.safetensors`` (every tensor of the saved tree) plus
``ckpt_000012.json`` (the tree's structure, metadata and checksums).

Both files are written to a temporary name, flushed to disk and renamed (``os.replace`` is
atomic), the blob first and the JSON last, so a checkpoint exists only once it is whole.
The JSON holds the SHA-256 of the blob and of its own body: a truncated, partial or
bit-flipped checkpoint is detected on load, reported with a warning naming the file and
the reason, and the next older checkpoint is used instead.

A directory holds the checkpoints of one run: saving round ``r`` removes any checkpoint of
a later round (another run's leftovers, or rounds a restart abandoned), :func:`restore`
(used by the run driver, :class:`fedkit.run.callbacks.Checkpoints`) never goes past the round asked
for and refuses checkpoints of another run key or model, and :func:`require_fresh` lets a
run that does not resume refuse a directory that already holds checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import attrs

from fedkit.core.flat import ParamSpec
from fedkit.core.tree import from_bytes, to_bytes

FORMAT = "fedkit.checkpoint/1"
_NAME = re.compile(r"^ckpt_(\d{6,})\.(json|safetensors)$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (corrupted, partial, or from another run)."""


@attrs.frozen(eq=False)
class Checkpoint:
    round: int
    tree: Any
    meta: dict
    path: Path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def paths(directory: Path, round: int) -> tuple[Path, Path]:
    """``(json, safetensors)`` paths of the checkpoint after ``round`` rounds."""
    stem = f"ckpt_{round:06d}"
    return directory / f"{stem}.json", directory / f"{stem}.safetensors"


def rounds_on_disk(directory: str | Path) -> list[int]:
    """Rounds with at least one checkpoint file, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = {int(m.group(1)) for p in directory.iterdir() if (m := _NAME.match(p.name))}
    return sorted(found, reverse=True)


def save(
    directory: str | Path, round: int, tree: Any, meta: dict, *, keep: int | None = None
) -> Path:
    """Write the checkpoint of ``round`` atomically; remove those of later rounds (they
    belong to another run or to rounds a restart abandoned); keep only the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    skeleton, blob = to_bytes(tree)
    body = {
        "format": FORMAT,
        "round": round,
        "tree": skeleton,
        "meta": meta,
        "blob_sha256": _sha256(blob),
        "blob_bytes": len(blob),
    }
    json_path, blob_path = paths(directory, round)
    _write_atomic(blob_path, blob)
    doc = {"body_sha256": _sha256(_canonical(body)), "body": body}
    _write_atomic(json_path, json.dumps(doc, sort_keys=True, indent=1).encode())
    stale = [r for r in rounds_on_disk(directory) if r > round]
    kept = [r for r in rounds_on_disk(directory) if r <= round]
    for old in stale + ([] if keep is None else kept[keep:]):
        for p in paths(directory, old):
            p.unlink(missing_ok=True)
    return json_path


def load(directory: str | Path, round: int) -> Checkpoint:
    """Load and verify the checkpoint of ``round``; :class:`CheckpointError` says why not."""
    json_path, blob_path = paths(Path(directory), round)
    if not json_path.exists():
        raise CheckpointError(f"{json_path.name} is missing (partial checkpoint)")
    if not blob_path.exists():
        raise CheckpointError(f"{blob_path.name} is missing (partial checkpoint)")
    try:
        doc = json.loads(json_path.read_text())
        body = doc["body"]
        claimed = doc["body_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{json_path.name} is not a valid checkpoint JSON ({exc})") from None
    if _sha256(_canonical(body)) != claimed:
        raise CheckpointError(f"{json_path.name} fails its checksum (corrupted)")
    if body.get("format") != FORMAT or body.get("round") != round:
        raise CheckpointError(
            f"{json_path.name} has format {body.get('format')!r}, round {body.get('round')}"
        )
    blob = blob_path.read_bytes()
    if len(blob) != body["blob_bytes"] or _sha256(blob) != body["blob_sha256"]:
        raise CheckpointError(f"{blob_path.name} fails its checksum (corrupted or truncated)")
    try:
        tree = from_bytes(body["tree"], blob)
    except Exception as exc:
        raise CheckpointError(f"{blob_path.name} cannot be decoded ({exc})") from None
    return Checkpoint(round=round, tree=tree, meta=body["meta"], path=json_path)


def load_latest(directory: str | Path, upto: int | None = None) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` (of a round ``<= upto`` when given) that loads
    and verifies; each unusable newer one gives a warning. ``None`` if there is none at all;
    :class:`CheckpointError` if there are checkpoint files but none is usable."""
    problems = []
    for round in rounds_on_disk(directory):
        if upto is not None and round > upto:
            continue
        try:
            found = load(directory, round)
        except CheckpointError as exc:
            problems.append(f"round {round}: {exc}")
            warnings.warn(
                f"checkpoint of round {round} in {directory} is unusable: {exc}; "
                "falling back to the previous one",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        return found
    if problems:
        raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(problems))
    return None


def require_fresh(directory: str | Path) -> None:
    """Raise :class:`CheckpointError` if ``directory`` already holds checkpoints: a run that
    does not resume must not mix its checkpoints with another run's."""
    found = rounds_on_disk(directory)
    if found:
        raise CheckpointError(
            f"{directory} already holds checkpoints (rounds {sorted(found)}) of an earlier run: "
            "resume from them or use an empty checkpoint directory"
        )


@attrs.frozen(eq=False)
class Restored:
    """What a run continues from: its server ``state``, the metrics ``history`` and
    ``events`` so far, the whole saved ``tree`` (extra entries such as a privacy ledger;
    ``{}`` when starting fresh), and the checkpoint's ``meta`` and ``path`` (``None`` when
    starting fresh)."""

    state: Any
    history: list[dict]
    events: list[dict]
    tree: dict
    meta: dict | None = None
    path: Path | None = None


def restore(
    state0: Any,
    directory: str | Path | None,
    run_key: Any,
    spec: ParamSpec,
    *,
    upto: int | None = None,
) -> Restored:
    """The newest usable checkpoint in ``directory`` of a round ``<= upto`` (any round when
    ``None``), or ``state0`` with empty history when there is none (or no directory). The
    checkpoint's tree must hold ``state`` and ``key == run_key`` and its meta a ``spec``
    equal to ``spec``, else :class:`CheckpointError` (it belongs to another run or model)."""
    found = None if directory is None else load_latest(directory, upto=upto)
    if found is None:
        return Restored(state0, [], [], {})
    if found.tree["key"] != run_key:
        raise CheckpointError(
            f"{found.path} was written by a run with key {found.tree['key'].to_hex()}, "
            f"not {run_key.to_hex()}"
        )
    if ParamSpec.from_dict(found.meta["spec"]) != spec:
        raise CheckpointError(f"{found.path} holds parameters of another model (ParamSpec differs)")
    meta = found.meta
    return Restored(
        found.tree["state"],
        list(meta["history"]),
        list(meta.get("events", [])),
        found.tree,
        meta,
        found.path,
    )
