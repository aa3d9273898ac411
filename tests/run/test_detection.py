"""Detection counts: every reply that reached the server is exactly one of tp/fp/tn/fn."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fedkit.replies import Verdict
from fedkit.run.records import rates, totals
from fedkit.run.verdicts import detection

STATUS = st.sampled_from(
    [
        ("accepted", None),
        ("rejected", "krum"),
        ("rejected", "non_finite"),
        ("rejected", "quorum_missed"),
        ("lost", "dropout"),
    ]
)


@given(st.lists(st.tuples(st.integers(0, 30), STATUS), max_size=30), st.sets(st.integers(0, 30)))
def test_every_decided_reply_is_counted_once(rows, controlled):
    verdicts = tuple(Verdict(c, status, reason) for c, (status, reason) in rows)
    d = detection(verdicts, controlled)
    decided = [v for v in verdicts if v.status != "lost" and v.reason != "quorum_missed"]
    assert sum(d.values()) == len(decided)
    bad = [v for v in decided if v.client in controlled]
    assert d["tp"] + d["fn"] == len(bad)
    assert d["tp"] == sum(v.status == "rejected" for v in bad)
    assert d["fp"] == sum(v.status == "rejected" and v.client not in controlled for v in decided)


def test_rates_and_run_totals():
    assert rates({"tp": 3, "fn": 1, "fp": 0, "tn": 0}) == {"tpr": 0.75, "fpr": None}
    metrics = [
        {"detection": {"tp": 1, "fp": 1, "tn": 3, "fn": 1}},
        {"detection": {"tp": 2, "fp": 0, "tn": 4, "fn": 0}},
        {},
    ]
    out = totals(metrics, [])["detection"]
    assert out == {"tp": 3, "fp": 1, "tn": 7, "fn": 1, "tpr": 0.75, "fpr": 0.125}
    assert "detection" not in totals([{}], [])
