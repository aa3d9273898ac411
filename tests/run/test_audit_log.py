"""The tamper-evident audit log: a real run's trail covers the run (start with the config
fingerprint, every round's open, verdicts and close with DP spend, budget alerts,
checkpoints, stop, end) and verifies against the record's head; edits, deletions,
reorderings, duplicates, forged lines, a cut tail and a torn write are each caught at the
right line; a resumed run continues the chain."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from faults_for_tests import PowerCut, Scripted
from helpers import strategy, tiny_task
from hypothesis import given
from hypothesis import strategies as st

import fedkit
from experiments.audit_cli import main as audit_main
from fedkit.protocols import FaultKind
from fedkit.run.audit_log import (
    GENESIS,
    AuditLog,
    AuditLogError,
    Head,
    canonical,
    check_line,
    entry_hash,
    seal,
    verify,
)
from privacy.accounting import epsilon
from privacy.budget import CentralDPAccountant
from privacy.mechanisms import dp_fedavg

DELTA = 1e-5
Z, M = 1.2, 3


@pytest.fixture(scope="module")
def task():
    return tiny_task()


def dp_strategy(target: float) -> fedkit.Strategy:
    return fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, batch_size=4, lr=0.1),
        server=fedkit.chain(*dp_fedavg(0.5, Z, M)),
        clients_per_round=M,
        sampling="poisson",
        quorum=0,
        accountant=CentralDPAccountant(noise_multiplier=Z, delta=DELTA, target_epsilon=target),
    )


@pytest.fixture(scope="module")
def dp_run(task, tmp_path_factory):
    """Central DP with a budget that stops the run after round 3, checkpoints, and faults:
    client 0's replies are dropped, client 1's corrupted (NaN), client 2's replayed."""
    out = tmp_path_factory.mktemp("dp_run")
    eps = [epsilon(noise_multiplier=Z, sample_rate=M / 6, steps=r, delta=DELTA) for r in (3, 4)]
    faults = Scripted(
        kinds={0: FaultKind.DROP, 1: FaultKind.CORRUPT, 2: FaultKind.STALE}, detail={2: 1}
    )
    h = fedkit.simulate(
        task,
        dp_strategy(target=sum(eps) / 2),
        rounds=6,
        key=5,
        faults=faults,
        log_dir=out,
        checkpoint_dir=out / "checkpoints",
        progress=False,
    )
    record = json.loads((out / "record.json").read_text())
    return h, record, out


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_a_run_writes_a_log_that_verifies_against_the_record_head(dp_run):
    _h, record, out = dp_run
    log = out / "audit.jsonl"
    result = verify(log, Head.from_record(record))
    assert result.ok, result
    assert result.entries == len(lines_of(log)) == record["audit"]["entries"]
    assert result.head == record["audit"]["head"] == entries(log)[-1]["hash"]
    trail = entries(log)
    assert trail[0]["prev"] == GENESIS and [e["seq"] for e in trail] == list(
        range(1, len(trail) + 1)
    )
    assert trail[0]["event"] == "run_start"
    assert trail[0]["data"]["fingerprint"] == record["run"]["fingerprint"]
    assert [e["event"] for e in trail[-2:]] == ["checkpoint", "run_end"]
    assert trail[-1]["data"]["stopped"]["reason"] == "privacy_budget"


def test_every_round_is_opened_judged_and_closed_in_order(dp_run):
    h, _record, out = dp_run
    trail = entries(out / "audit.jsonl")
    assert h.state.round == 3
    per_round = [
        [e["event"] for e in trail if e["data"].get("round") == r and "round_" in e["event"]]
        for r in (1, 2, 3)
    ]
    assert per_round == [["round_open", "round_close"]] * 3
    for r, metrics in enumerate(h.metrics, start=1):
        (opened,) = [e for e in trail if e["event"] == "round_open" and e["data"]["round"] == r]
        (judged,) = [e for e in trail if e["event"] == "replies" and e["data"]["round"] == r]
        (closed,) = [e for e in trail if e["event"] == "round_close" and e["data"]["round"] == r]
        assert opened["seq"] < judged["seq"] < closed["seq"]
        verdicts = judged["data"]["verdicts"]
        sampled = opened["data"]["clients"]
        # one verdict per sampled client (no duplicate faults here), each of the round
        assert sorted(v["client"] for v in verdicts) == sorted(sampled)
        by = Counter((v["status"], v["reason"]) for v in verdicts)
        assert by[("accepted", None)] == metrics["accepted"]
        rejected = {reason: n for (s, reason), n in by.items() if s == "rejected"}
        lost = {reason: n for (s, reason), n in by.items() if s == "lost"}
        assert rejected == metrics["rejected"] and lost == metrics["lost"]
        assert metrics["accepted"] + sum(rejected.values()) + sum(lost.values()) == len(sampled)
        expected_fate = {
            0: ("lost", "dropped"),
            1: ("rejected", "non_finite"),
            2: ("rejected", "stale"),
        }
        for v in verdicts:
            assert (v["status"], v["reason"]) == expected_fate.get(v["client"], ("accepted", None))
        assert closed["data"]["epsilon"] == metrics["epsilon"]


def test_the_log_holds_the_dp_spend_alerts_checkpoints_and_stop(dp_run):
    h, record, out = dp_run
    trail = entries(out / "audit.jsonl")
    closes = [e["data"] for e in trail if e["event"] == "round_close"]
    spent = [c["epsilon_spent"] for c in closes]
    assert all(s > 0 for s in spent)
    assert sum(spent) == pytest.approx(record["privacy_budget"]["epsilon"], rel=1e-9)
    alerts = [e["data"] for e in trail if e["event"] == "budget_alert"]
    assert [a["fraction"] for a in alerts] == [
        e["fraction"] for e in h.events if e["event"] == "budget_alert"
    ]
    assert alerts and alerts[-1]["fraction"] == 1.0
    (stop,) = [e["data"] for e in trail if e["event"] == "stop"]
    assert stop["reason"] == "privacy_budget" and stop["after_round"] == 3
    saved = [e["data"] for e in trail if e["event"] == "checkpoint"]
    assert [c["round"] for c in saved] == [1, 2, 3, 3]  # every round, then on the stop
    newest = out / "checkpoints" / saved[-1]["file"]
    assert hashlib.sha256(newest.read_bytes()).hexdigest() == saved[-1]["sha256"]
    # a checkpoint is logged after its round closed
    seq = {(e["event"], e["data"].get("round")): e["seq"] for e in trail}
    assert all(seq[("round_close", r)] < seq[("checkpoint", r)] for r in (1, 2, 3))
    # the course of the run stays out of the record's events
    assert {e["event"] for e in h.events} <= {"budget_alert", "resume", "server_crash"}


def test_the_cli_exits_0_on_the_intact_log(dp_run, capsys):
    _, _, out = dp_run
    assert (
        audit_main(["verify", str(out / "audit.jsonl"), "--record", str(out / "record.json")]) == 0
    )
    assert "intact" in capsys.readouterr().out


# --- tampering ----------------------------------------------------------------------------


@pytest.fixture
def copy(dp_run, tmp_path):
    """A copy of the run's log and its head, to tamper with."""
    _, record, out = dp_run
    log = tmp_path / "audit.jsonl"
    shutil.copy(out / "audit.jsonl", log)
    return log, Head.from_record(record)


def rewrite(log: Path, lines: list[bytes]) -> None:
    log.write_bytes(b"".join(lines))


def edit_data(line: bytes, rehash: bool) -> bytes:
    entry = json.loads(line)
    entry["data"]["tampered"] = True
    if rehash:
        entry["hash"] = entry_hash(entry)
    return canonical(entry) + b"\n"


def test_an_edited_middle_line_is_named(copy):
    log, head = copy
    lines = lines_of(log)
    k = len(lines) // 2
    lines[k - 1] = edit_data(lines[k - 1], rehash=False)
    rewrite(log, lines)
    result = verify(log, head)
    assert (result.line, result.ok) == (k, False) and "hash does not match" in result.problem


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(copy):
    log, head = copy
    lines = lines_of(log)
    k = len(lines) // 2
    lines[k - 1] = edit_data(lines[k - 1], rehash=True)
    rewrite(log, lines)
    result = verify(log, head)
    assert result.line == k + 1 and "not the hash of line" in result.problem


def test_a_whitespace_edit_is_not_canonical(copy):
    log, head = copy
    lines = lines_of(log)
    lines[2] = lines[2].replace(b",", b", ", 1)
    rewrite(log, lines)
    result = verify(log, head)
    assert result.line == 3 and "canonical" in result.problem


def test_a_deleted_line_is_named(copy):
    log, head = copy
    lines = lines_of(log)
    del lines[4]
    rewrite(log, lines)
    result = verify(log, head)
    assert result.line == 5 and "deleted" in result.problem


def test_swapped_lines_are_named(copy):
    log, head = copy
    lines = lines_of(log)
    lines[5], lines[6] = lines[6], lines[5]
    rewrite(log, lines)
    result = verify(log, head)
    assert result.line == 6 and not result.ok


def test_a_duplicated_line_is_named(copy):
    log, head = copy
    lines = lines_of(log)
    lines.insert(4, lines[3])
    rewrite(log, lines)
    result = verify(log, head)
    assert result.line == 5 and result.problem == "a duplicate of line 4"


def test_a_cut_tail_is_seen_only_against_the_record_head(copy):
    log, head = copy
    lines = lines_of(log)
    rewrite(log, lines[:-3])
    assert verify(log).ok  # a hash chain alone cannot see truncation
    result = verify(log, head)
    assert result.line == len(lines) - 2 and "the tail was cut" in result.problem


def test_a_forged_appended_line_is_caught(copy):
    log, head = copy
    lines = lines_of(log)
    trail = [json.loads(x) for x in lines]
    # a correct hash over its content, but chained to the line before the last
    forged = seal(len(lines) + 1, trail[-2]["hash"], "run_end", {"round": 99}, 1.0)
    rewrite(log, [*lines, canonical(forged) + b"\n"])
    result = verify(log)
    assert result.line == len(lines) + 1
    assert f"hash of line {len(lines) - 1}, not of line {len(lines)}" in result.problem
    # chained correctly, it passes the chain but not the record's head
    forged = seal(len(lines) + 1, trail[-1]["hash"], "run_end", {"round": 99}, 1.0)
    rewrite(log, [*lines, canonical(forged) + b"\n"])
    assert verify(log).ok
    result = verify(log, head)
    assert result.line == len(lines) + 1 and "after the record's head" in result.problem


def test_a_head_that_names_another_entry_is_caught(copy):
    log, head = copy
    other = Head(head.entries, "f" * 64)
    result = verify(log, other)
    assert result.line == head.entries and "differs from the record's head" in result.problem


def test_the_cli_names_the_first_bad_line(copy, capsys):
    log, _head = copy
    lines = lines_of(log)
    del lines[2]
    rewrite(log, lines)
    assert audit_main(["verify", str(log)]) == 1
    assert "line 3:" in capsys.readouterr().err
    assert audit_main(["verify", str(log.parent / "missing.jsonl")]) == 2


# --- torn writes and continuing a log ------------------------------------------------------


def small_log(path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("note", {"i": i})
    return log


def test_a_torn_last_line_is_reported_and_the_next_writer_cuts_it(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    small_log(path).close()
    whole = path.read_bytes()
    entry = seal(5, json.loads(whole.splitlines()[-1])["hash"], "note", {"i": 4}, 2.0)
    with open(path, "ab") as f:  # a crash after half of the write
        f.write(canonical(entry)[:40])
    result = verify(path)
    assert (result.ok, result.torn, result.entries, result.line) == (False, True, 4, 5)
    assert "torn tail: 40 bytes" in result.problem
    assert audit_main(["verify", str(path)]) == 1
    assert audit_main(["verify", str(path), "--allow-torn"]) == 0
    capsys.readouterr()
    log = AuditLog(path)  # the restarted writer
    log.append("note", {"i": 5})
    log.close()
    trail = entries(path)
    assert path.read_bytes().startswith(whole) and verify(path).ok
    assert [e["event"] for e in trail[4:]] == ["torn_tail", "note"]
    assert trail[4]["data"]["bytes"] == 40
    assert trail[4]["data"]["sha256"] == hashlib.sha256(canonical(entry)[:40]).hexdigest()


def test_a_log_whose_last_entry_is_damaged_is_not_continued(tmp_path):
    path = tmp_path / "audit.jsonl"
    small_log(path).close()
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b'"note"', b'"nope"')
    rewrite(path, lines)
    with pytest.raises(AuditLogError, match="last whole line is not a valid audit entry"):
        AuditLog(path).append("note", {})


def test_a_second_writer_is_refused_while_the_first_holds_the_log(tmp_path):
    path = tmp_path / "audit.jsonl"
    first = small_log(path, n=1)
    with pytest.raises(AuditLogError, match="another writer holds"):
        AuditLog(path).append("fork", {})
    first.append("still", {})
    first.close()
    again = AuditLog(path)  # free again once closed
    again.append("after", {})
    again.close()
    assert [e["event"] for e in entries(path)] == ["note", "still", "after"]
    assert verify(path).ok


def test_the_writer_finds_the_tail_of_a_long_log(tmp_path):
    """The tail is read from the end in blocks; an entry longer than a block still works."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("big", {"blob": "x" * 200_000})
    log.close()
    again = AuditLog(path)
    again.append("after", {})
    again.close()
    assert verify(path).ok and verify(path).entries == 2


def test_a_resumed_run_continues_the_chain(task, tmp_path):
    out = tmp_path / "run"
    kwargs = dict(rounds=4, key=1, log_dir=out, checkpoint_dir=out / "ck", progress=False)
    with pytest.raises(RuntimeError, match="power cut"):
        fedkit.simulate(task, strategy(), faults=PowerCut(at=3), **kwargs)
    crashed = entries(out / "audit.jsonl")
    assert crashed[-1]["event"] == "round_open" and crashed[-1]["data"]["round"] == 3
    h = fedkit.simulate(task, strategy(), resume=True, **kwargs)
    record = json.loads((out / "record.json").read_text())
    result = verify(out / "audit.jsonl", Head.from_record(record))
    assert result.ok, result
    trail = entries(out / "audit.jsonl")
    assert trail[: len(crashed)] == crashed
    after = [e["event"] for e in trail[len(crashed) :]]
    assert after[:3] == ["run_start", "resume", "round_open"]
    assert trail[len(crashed) + 1]["data"]["restored_round"] == 2
    assert [e["data"]["round"] for e in trail if e["event"] == "round_close"] == [1, 2, 3, 4]
    assert h.record["audit"]["entries"] == len(trail)


# --- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=4), min_size=1, max_size=5)
)
def test_any_logged_data_verifies_and_each_line_is_canonical(tmp_path_factory, items):
    path = tmp_path_factory.mktemp("prop") / "audit.jsonl"
    log = AuditLog(path)
    written = [log.append("note", data) for data in items]
    log.close()
    assert verify(path, Head(len(items), written[-1]["hash"])).ok
    for raw, entry in zip(path.read_bytes().splitlines(), written, strict=True):
        assert check_line(raw) == (entry, None)


@pytest.fixture(scope="module")
def sample_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "audit.jsonl"
    log = AuditLog(path)
    log.append("run_start", {"fingerprint": "ab" * 32, "note": "ünïcode"})
    log.append("replies", {"verdicts": [{"client": 3, "status": "lost", "reason": "late"}]})
    log.append("round_close", {"round": 1, "epsilon": 0.25, "accepted": 4})
    log.close()
    return path.read_bytes()


@given(st.data())
def test_any_single_byte_change_is_detected(tmp_path_factory, sample_log, data):
    pos = data.draw(st.integers(0, len(sample_log) - 1), label="position")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != sample_log[pos]), label="byte")
    changed = bytearray(sample_log)
    changed[pos] = byte
    path = tmp_path_factory.mktemp("flip") / "audit.jsonl"
    path.write_bytes(bytes(changed))
    result = verify(path)
    assert not result.ok
    # named at the changed line (a changed newline merges its line with the next one)
    assert result.line == sample_log[:pos].count(b"\n") + 1


def test_the_cli_refuses_a_record_without_a_head(dp_run, tmp_path, capsys):
    _, record, out = dp_run
    bare = tmp_path / "record.json"
    bare.write_text(json.dumps({k: v for k, v in record.items() if k != "audit"}))
    assert audit_main(["verify", str(out / "audit.jsonl"), "--record", str(bare)]) == 2
    assert "no audit section" in capsys.readouterr().err
    assert audit_main(["verify"]) == 2  # usage


@pytest.mark.slow
def test_fedkit_run_appends_to_one_chain_across_runs(tmp_path):
    from experiments.audit_cli import compose_config
    from experiments.run import run_experiment

    cfg = compose_config(["num_clients=4", "rounds=2", "tensorboard=false"])
    first = run_experiment(cfg, tmp_path, progress=False)
    second = run_experiment(cfg, tmp_path, progress=False)  # the same directory again
    assert second["audit"]["entries"] == 2 * first["audit"]["entries"]
    head = Head.from_record(json.loads((tmp_path / "record.json").read_text()))
    assert verify(tmp_path / "audit.jsonl", head).ok
    starts = [e for e in entries(tmp_path / "audit.jsonl") if e["event"] == "run_start"]
    assert [e["data"]["fingerprint"] for e in starts] == [second["run"]["fingerprint"]] * 2
