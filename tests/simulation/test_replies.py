"""Reply validation: every malformed kind is rejected with its reason, nothing raises."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedkit.replies import REASONS, Reply, validate

D = 6


def good(client=1, round=3, **kw):
    return Reply(
        client=client,
        round=round,
        update=kw.pop("update", torch.ones(D)),
        num_examples=kw.pop("n", 5),
        **kw,
    )


def reasons(*replies, expected=(1, 2, 3), max_bytes=None):
    out = validate(
        list(replies), round=3, d=D, dtype=torch.float32, expected=expected, max_bytes=max_bytes
    )
    return [r.client for r in out.accepted], [reason for _, reason in out.rejected]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (good(client=9), "unexpected"),
        (good(round=2), "stale"),
        (good(round=4), "wrong_round"),
        (good(update=torch.ones(5 * D)), "oversized"),
        (good(update=b"\x00" * 12), "malformed"),
        (good(update=None), "malformed"),
        (good(update=[1.0] * D), "malformed"),
        (good(update=torch.ones(D, dtype=torch.float64)), "wrong_dtype"),
        (good(update=torch.ones(D, dtype=torch.int32)), "wrong_dtype"),
        (good(update=torch.ones(D // 2)), "wrong_shape"),
        (good(update=torch.ones(2, D // 2)), "wrong_shape"),
        (good(update=torch.tensor([1.0, float("nan"), 0, 0, 0, 0])), "non_finite"),
        (good(update=torch.tensor([float("-inf"), 0, 0, 0, 0, 0])), "non_finite"),
        (good(n=0), "bad_num_examples"),
        (good(n=2.5), "bad_num_examples"),
        (good(n=True), "bad_num_examples"),
    ],
)
def test_each_malformed_reply_is_rejected_with_its_reason(reply, reason):
    accepted, rejected = reasons(good(client=2), reply, good(client=3))
    assert rejected == [reason]
    assert reason in REASONS
    assert accepted == [2, 3]  # the others still count


def test_duplicate_keeps_the_first_copy():
    first, copy = good(update=torch.full((D,), 1.0)), good(update=torch.full((D,), 2.0))
    out = validate([first, copy], round=3, d=D, dtype=torch.float32, expected=[1])
    assert out.accepted == (first,)
    assert out.reasons == {"duplicate": 1}


def test_a_bad_first_reply_still_claims_the_slot():
    _, rejected = reasons(good(update=torch.full((D,), float("nan"))), good())
    assert rejected == ["non_finite", "duplicate"]


def test_a_replay_does_not_block_the_fresh_reply():
    accepted, rejected = reasons(good(round=1), good())
    assert accepted == [1] and rejected == ["stale"]


def test_byte_limit_is_configurable_and_defaults_to_twice_a_valid_update():
    assert reasons(good(update=b"x" * (2 * 4 * D)))[1] == ["malformed"]
    assert reasons(good(update=b"x" * (2 * 4 * D + 1)))[1] == ["oversized"]
    assert reasons(good(), max_bytes=4 * D - 1)[1] == ["oversized"]


def test_any_sender_when_nothing_is_expected():
    out = validate([good(client=42)], round=3, d=D, dtype=torch.float32)
    assert [r.client for r in out.accepted] == [42]


garbage = st.one_of(
    st.none(),
    st.integers(),
    st.text(),
    st.builds(
        Reply,
        client=st.one_of(st.integers(-2, 5), st.none(), st.text(max_size=2)),
        round=st.one_of(st.integers(0, 5), st.floats(), st.none()),
        update=st.one_of(st.none(), st.binary(max_size=60), st.integers(1, 20).map(torch.ones)),
        num_examples=st.one_of(st.integers(-3, 9), st.floats(), st.none()),
    ),
)


@given(st.lists(garbage, max_size=8))
def test_validation_never_raises_and_accounts_for_every_reply(replies):
    out = validate(replies, round=3, d=D, dtype=torch.float32, expected=[1, 2, 3])
    assert len(out.accepted) + len(out.rejected) == len(replies)
    assert len({r.client for r in out.accepted}) == len(out.accepted)
    assert all(reason in REASONS for _, reason in out.rejected)


def test_huge_but_finite_float64_updates_are_accepted():
    big = torch.full((D,), 1e308, dtype=torch.float64)
    out = validate([good(update=big)], round=3, d=D, dtype=torch.float64, expected=[1])
    assert len(out.accepted) == 1
    big[2] = float("inf")
    out = validate([good(update=big)], round=3, d=D, dtype=torch.float64, expected=[1])
    assert out.reasons == {"non_finite": 1}
