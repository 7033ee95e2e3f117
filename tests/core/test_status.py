"""The transaction state machine and its ECA-3 status objects."""

from __future__ import annotations

from itertools import pairwise

import pytest

from txgate.core.status import (
    FINAL,
    TRANSITIONS,
    IllegalTransition,
    Status,
    check_transition,
    eca3_message_status,
    eca3_transaction_status,
)

HAPPY_PATH = [
    Status.CREATED,
    Status.PENDING_APPROVAL,
    Status.APPROVED,
    Status.SIGNED,
    Status.SUBMITTED,
    Status.MINED,
]
ENDS = {Status.FAILED, Status.REJECTED, Status.BLOCKED, Status.ABORTED, Status.REPLACED}

# (finished, signed, submitted, success) of each state, as MMI's client reads them.
TRANSACTION_FLAGS: dict[Status, tuple[bool, bool, bool, bool]] = {
    Status.CREATED: (False, False, False, False),
    Status.PENDING_APPROVAL: (False, False, False, False),
    Status.APPROVED: (False, False, False, False),
    Status.SIGNED: (False, True, False, False),
    Status.SUBMITTED: (False, True, True, False),
    Status.MINED: (True, True, True, True),
    Status.FAILED: (True, False, False, False),
    Status.REJECTED: (True, False, False, False),
    Status.BLOCKED: (True, False, False, False),
    Status.ABORTED: (True, False, False, False),
    Status.REPLACED: (True, True, True, False),
}


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert set(TRANSACTION_FLAGS) == set(Status)
    assert {Status.MINED} | ENDS == FINAL


@pytest.mark.parametrize("state", sorted(FINAL))
def test_a_final_state_has_no_exits(state: Status) -> None:
    assert TRANSITIONS[state] == frozenset()
    for target in Status:
        with pytest.raises(IllegalTransition):
            check_transition(state, target)


@pytest.mark.parametrize("state", sorted(set(Status) - FINAL))
def test_every_open_state_can_still_end(state: Status) -> None:
    assert TRANSITIONS[state], f"{state} is a dead end"
    assert TRANSITIONS[state] & FINAL, f"{state} cannot reach an end directly"
    assert state not in TRANSITIONS[state]


def test_every_state_is_reachable_from_created() -> None:
    seen, frontier = {Status.CREATED}, [Status.CREATED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(Status)


def test_the_happy_path_is_a_walk_of_the_machine() -> None:
    for current, new in pairwise(HAPPY_PATH):
        check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (Status.CREATED, Status.SIGNED),  # never signed without approval
        (Status.PENDING_APPROVAL, Status.SIGNED),
        (Status.APPROVED, Status.MINED),
        (Status.SUBMITTED, Status.ABORTED),  # too late to abort once on the network
        (Status.SUBMITTED, Status.SIGNED),  # no way back
    ],
)
def test_a_missing_edge_is_refused(current: Status, new: Status) -> None:
    with pytest.raises(IllegalTransition, match=f"{current} → {new}"):
        check_transition(current, new)


@pytest.mark.parametrize("state", list(Status))
def test_transaction_status_object(state: Status) -> None:
    body = eca3_transaction_status(state)
    finished, signed, submitted, success = TRANSACTION_FLAGS[state]
    assert body["finished"] is finished
    assert body["signed"] is signed
    assert body["submitted"] is submitted
    assert body["success"] is success
    assert isinstance(body["displayText"], str) and body["displayText"]
    assert "reason" not in body
    assert set(body) == {"finished", "signed", "submitted", "success", "displayText"}


def test_transaction_status_carries_reason_and_display_text() -> None:
    body = eca3_transaction_status(Status.BLOCKED, reason="rule x", display_text="Stopped")
    assert body["reason"] == "rule x" and body["displayText"] == "Stopped"
    assert eca3_transaction_status(Status.MINED)["displayText"] == "Mined"


def test_a_transaction_that_failed_after_signing_says_so() -> None:
    body = eca3_transaction_status(Status.FAILED, reason="reverted", was_signed=True)
    assert body == {
        "finished": True,
        "signed": True,
        "submitted": True,
        "success": False,
        "displayText": "Failed",
        "reason": "reverted",
    }


@pytest.mark.parametrize("state", list(Status))
def test_message_status_object(state: Status) -> None:
    body = eca3_message_status(state)
    assert body["finished"] is (state in FINAL or state is Status.SIGNED)
    assert body["signed"] is (state is Status.SIGNED)
    assert body["success"] is (state is Status.SIGNED)
    assert isinstance(body["displayText"], str) and body["displayText"]
    assert "submitted" not in body and "reason" not in body
    assert eca3_message_status(state, reason="why")["reason"] == "why"
