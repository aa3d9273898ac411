"""The tamper-evident audit log: ``audit.jsonl``, one hash-chained JSON entry per line.

An entry is ``{"seq", "at", "prev", "event", "data", "hash"}``: ``seq`` its 1-based line
number, ``at`` a Unix timestamp, ``prev`` the ``hash`` of the entry before it (for the first
entry :data:`GENESIS`, 64 zeros), ``event`` its name and ``data`` its fields. ``hash`` is the
SHA-256 (hex) of the entry without ``hash`` in canonical form (:func:`canonical`: sorted
keys, no whitespace, ASCII, no NaN), and every line is exactly the canonical form of its
entry, so any changed byte is seen. The record (``record.json``) holds the head
(``{"audit": {"entries": n, "head": hash of entry n}}``).

:class:`AuditLog` is the run callback that writes it: run start (config fingerprint), every
event of the run (round open with the sampled clients, the round's reply verdicts, round
close with its counts and DP spend, budget alerts, checkpoints written, nodes registered or
refused, resume, server crash, stop, run end). It only appends: one write, flush and
``fsync`` per entry, under an exclusive lock (one writer per log). An existing log is
continued (a resumed run, or another run in the same directory): the writer reads its last
entry's hash. A crash mid-write can leave a partial last line (a *torn tail*); the next
writer cuts it off and records that as its first entry (``torn_tail``, with the fragment's
size and SHA-256).

:func:`verify` checks a log line by line and names the first bad line (1-based) and what is
wrong. A hash chain alone cannot see a cut tail (the shorter log is a valid chain): only the
head kept elsewhere (the record) can, so pass it; with a head, entries after it are an error
too (appended after the record was written: a run that crashed before writing its next
record, or a forgery; a complete run writes its record after its last entry). A torn tail
is reported as such (``VerifyResult.torn``), with the whole entries before it checked.
Nothing here is keyed: whoever can rewrite both the log and the record can forge both; the
head is worth what the place it is kept is worth.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from fedkit.run.callbacks import Callback
from fedkit.run.records import jsonable

if TYPE_CHECKING:
    from fedkit.run.driver import Run

GENESIS = "0" * 64
AUDIT_FILE = "audit.jsonl"  # the log's name in a run's directory
FIELDS = frozenset({"seq", "at", "prev", "event", "data", "hash"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


class AuditLogError(ValueError):
    """An audit log that cannot be continued (its last entry is not a valid entry)."""


def canonical(obj: Any) -> bytes:
    """The canonical serialisation: JSON with sorted keys, no whitespace, ASCII only, no
    NaN or infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``entry`` without its ``hash`` field, in canonical form."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def seal(seq: int, prev: str, event: str, data: Mapping[str, Any], at: float) -> dict[str, Any]:
    """The entry ``seq`` after the entry hashed ``prev``, with its own hash."""
    entry = {"seq": seq, "at": at, "prev": prev, "event": event, "data": jsonable(dict(data))}
    return {**entry, "hash": entry_hash(entry)}


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def check_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(entry, None)`` when ``raw`` (a line without its newline) is a well-formed, canonical
    entry whose hash matches its content, else ``(None, what is wrong)``. The chain (``prev``,
    ``seq``) is the caller's to check."""
    if not raw:
        return None, "empty line"
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return None, f"not JSON ({type(exc).__name__}: {exc})"
    if not isinstance(entry, dict):
        return None, f"not a JSON object but a {type(entry).__name__}"
    if set(entry) != FIELDS:
        return None, f"fields {sorted(entry)}, expected exactly {sorted(FIELDS)}"
    seq, at = entry["seq"], entry["at"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None, f"seq must be a positive integer, got {seq!r}"
    if not isinstance(at, int | float) or isinstance(at, bool):
        return None, f"at must be a number, got {at!r}"
    for name in ("prev", "hash"):
        if not _is_hex64(entry[name]):
            return None, f"{name} must be 64 lowercase hex digits, got {entry[name]!r}"
    if not isinstance(entry["event"], str) or not isinstance(entry["data"], dict):
        return None, "event must be a string and data an object"
    try:
        if canonical(entry) != raw:
            return None, "not in canonical form (sorted keys, no whitespace): the line was edited"
    except ValueError as exc:  # NaN or infinity parsed from the line
        return None, f"not canonical JSON: {exc}"
    if entry_hash(entry) != entry["hash"]:
        return None, "hash does not match the entry's content: the line was edited"
    return entry, None


@attrs.frozen
class Head:
    """What the record keeps of a log: how many entries it had and the last one's hash."""

    entries: int
    hash: str

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.entries, int) or isinstance(self.entries, bool) or self.entries < 0:
            raise ValueError(f"Head.entries must be a non-negative int, got {self.entries!r}")
        if not _is_hex64(self.hash):
            raise ValueError(f"Head.hash must be 64 lowercase hex digits, got {self.hash!r}")

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Head:
        """The head in a results record's ``audit`` section."""
        section = record.get("audit")
        if not isinstance(section, Mapping) or "entries" not in section or "head" not in section:
            raise ValueError(
                "record has no audit section with 'entries' and 'head' "
                "(the run was made without an AuditLog)"
            )
        return cls(section["entries"], section["head"])


@attrs.frozen
class VerifyResult:
    """Outcome of :func:`verify`. ``entries``: whole entries that verify (a prefix of the
    log); ``head``: the hash of the last of them; ``line`` (1-based) and ``problem``: the
    first bad line and what is wrong (``None`` when intact); ``torn``: the problem is a
    partial last line (and the only one)."""

    entries: int
    head: str
    line: int | None = None
    problem: str | None = None
    torn: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.ok:
            return f"intact: {self.entries} entries, head {self.head}"
        return f"line {self.line}: {self.problem}"


def verify(path: str | Path, head: Head | None = None) -> VerifyResult:
    """Check the audit log at ``path`` (module doc); ``head``: the record's, to see a cut
    tail. A missing file is an error (:class:`FileNotFoundError`)."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline (or is empty)
    prev, seen = GENESIS, {}
    for n, raw in enumerate(lines, start=1):
        entry, problem = check_line(raw)
        if problem is None:
            problem = _chain_problem(entry, n, prev, seen)
        if problem is not None:
            return VerifyResult(n - 1, prev, n, problem)
        seen[entry["hash"]] = n
        prev = entry["hash"]
    count = len(lines)
    if tail:
        problem = (
            f"torn tail: {len(tail)} bytes without a newline (a write cut short, e.g. by a "
            f"crash); the {count} whole entries before it verify"
        )
        cut = _head_problem(lines, count, head)
        if cut is not None:
            return VerifyResult(count, prev, cut[0], cut[1])
        return VerifyResult(count, prev, count + 1, problem, torn=True)
    cut = _head_problem(lines, count, head)
    if cut is not None:
        return VerifyResult(count, prev, cut[0], cut[1])
    return VerifyResult(count, prev)


def _chain_problem(entry: dict[str, Any], n: int, prev: str, seen: dict[str, int]) -> str | None:
    if entry["hash"] in seen:
        return f"a duplicate of line {seen[entry['hash']]}"
    if entry["prev"] != prev:
        if n == 1:
            return "prev is not the genesis value (64 zeros): lines before it were deleted"
        if entry["prev"] in seen:
            return (
                f"prev is the hash of line {seen[entry['prev']]}, not of line {n - 1}: "
                "lines were reordered or deleted"
            )
        return f"prev is not the hash of line {n - 1}: a line was deleted, inserted or forged"
    if entry["seq"] != n:
        return f"seq {entry['seq']}, expected {n}"
    return None


def _head_problem(lines: list[bytes], count: int, head: Head | None) -> tuple[int, str] | None:
    if head is None:
        return None
    if count < head.entries:
        return (
            count + 1,
            f"the log ends after {count} entries but the record's head has {head.entries}: "
            "the tail was cut",
        )
    found = json.loads(lines[head.entries - 1])["hash"] if head.entries else GENESIS
    if found != head.hash:
        return head.entries, f"hash {found} differs from the record's head {head.hash}"
    if count > head.entries:
        return (
            head.entries + 1,
            f"{count - head.entries} entries after the record's head ({head.entries} "
            "entries): appended after the record was written (a run that crashed before "
            "its next record) or forged",
        )
    return None


@attrs.frozen
class Tail:
    """The end of an existing log: the last whole entry's ``seq`` and ``hash`` (0 and
    :data:`GENESIS` for an empty log) and the bytes after the last newline (a torn write)."""

    seq: int
    hash: str
    torn: bytes


def read_tail(path: Path, block: int = 1 << 16) -> Tail:
    """The :class:`Tail` of the log at ``path``, reading only its end; raises
    :class:`AuditLogError` when the last whole line is not a valid entry."""
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return Tail(0, GENESIS, b"")
    window = min(size, block)
    with open(path, "rb") as f:
        while True:
            f.seek(size - window)
            data = f.read(window)
            end = data.rfind(b"\n")
            start = data.rfind(b"\n", 0, max(end, 0))
            if (end >= 0 and start >= 0) or window == size:
                break
            window = min(size, 2 * window)
    torn = data[end + 1 :]
    if end < 0:
        return Tail(0, GENESIS, torn)
    entry, problem = check_line(data[start + 1 : end])
    if problem is not None:
        raise AuditLogError(
            f"{path}: its last whole line is not a valid audit entry ({problem}); "
            f"check it with `fedkit audit verify {path}` and move it aside to start a new log"
        )
    return Tail(entry["seq"], entry["hash"], torn)


def _lock(file: Any, path: Path) -> None:
    """Hold an exclusive advisory lock on the open log (POSIX; a no-op elsewhere): a second
    writer would fork the chain."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise AuditLogError(f"{path}: another writer holds this audit log") from None


class AuditLog(Callback):
    """Appends the run's audit trail to ``path`` (module doc) and puts the head into the
    record (``record["audit"]``). Independent of the order of callbacks: everything it
    writes reaches it as an event, and the driver emits ``run_end`` before it builds the
    final record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file: Any = None
        self.seq, self.prev = 0, GENESIS

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "ab")
        try:
            _lock(file, self.path)  # one writer per log, before its tail is read
            tail = read_tail(self.path)
        except BaseException:
            file.close()
            raise
        if tail.torn:  # a write a crash cut short: never a committed entry
            os.truncate(self.path, self.path.stat().st_size - len(tail.torn))
        self.file = file
        self.seq, self.prev = tail.seq, tail.hash
        if tail.torn:
            digest = hashlib.sha256(tail.torn).hexdigest()
            self.append("torn_tail", {"bytes": len(tail.torn), "sha256": digest})

    def append(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Write one entry (flushed and fsynced) and return it."""
        if self.file is None:
            self._open()
        entry = seal(self.seq + 1, self.prev, event, data, time.time())
        self.file.write(canonical(entry) + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.seq, self.prev = entry["seq"], entry["hash"]
        return entry

    def on_run_start(self, run: Run) -> None:
        self.append(
            "run_start",
            {
                "fingerprint": run.fingerprint,
                "key": run.key.to_hex(),
                "seed": run.seed,
                "task": run.task.name,
                "num_clients": run.num_clients,
                "rounds": run.rounds,
                "round": run.state.round,
                "transport": run.transport.name,
                "target_epsilon": None if run.accountant is None else run.accountant.target_epsilon,
            },
        )

    def on_event(self, run: Run, event: dict[str, Any]) -> None:
        self.append(str(event.get("event")), {k: v for k, v in event.items() if k != "event"})

    def record_extras(self, run: Run) -> dict[str, Any]:
        return {
            "audit": {
                "file": self.path.name,
                "entries": self.seq,
                "head": self.prev,
                "genesis": GENESIS,
            }
        }

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
