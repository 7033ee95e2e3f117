"""The one transaction state machine of txgate (BRIEF.md) and its mapping to ECA-3 status objects.

created → pending_approval → approved → signed → submitted → mined, with the ends failed,
rejected, blocked, aborted and replaced. Signed messages use the same names up to `signed`.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    CREATED = "created"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    SIGNED = "signed"
    SUBMITTED = "submitted"
    MINED = "mined"
    FAILED = "failed"
    REJECTED = "rejected"
    BLOCKED = "blocked"
    ABORTED = "aborted"
    REPLACED = "replaced"


FINAL = frozenset(
    {Status.MINED, Status.FAILED, Status.REJECTED, Status.BLOCKED, Status.ABORTED, Status.REPLACED}
)

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset(
        {Status.PENDING_APPROVAL, Status.APPROVED, Status.BLOCKED, Status.ABORTED, Status.FAILED}
    ),
    Status.PENDING_APPROVAL: frozenset({Status.APPROVED, Status.REJECTED, Status.ABORTED}),
    Status.APPROVED: frozenset({Status.SIGNED, Status.ABORTED, Status.FAILED}),
    # A signed transaction that never reaches the node can still be dropped (failed) or replaced.
    Status.SIGNED: frozenset({Status.SUBMITTED, Status.FAILED, Status.REPLACED, Status.MINED}),
    Status.SUBMITTED: frozenset({Status.MINED, Status.FAILED, Status.REPLACED}),
    **{final: frozenset() for final in FINAL},
}


class IllegalTransition(Exception):
    """A bug: the code tried to move an object along an edge the state machine does not have."""


def check_transition(current: Status, new: Status) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} → {new} is not a transition of the state machine")


_DISPLAY = {
    Status.CREATED: "Created",
    Status.PENDING_APPROVAL: "Pending approval",
    Status.APPROVED: "Approved",
    Status.SIGNED: "Signed",
    Status.SUBMITTED: "Submitted",
    Status.MINED: "Mined",
    Status.FAILED: "Failed",
    Status.REJECTED: "Rejected",
    Status.BLOCKED: "Blocked",
    Status.ABORTED: "Aborted",
    Status.REPLACED: "Replaced",
}

_SIGNED = frozenset({Status.SIGNED, Status.SUBMITTED, Status.MINED, Status.REPLACED})
_SUBMITTED = frozenset({Status.SUBMITTED, Status.MINED, Status.REPLACED})


def eca3_transaction_status(
    status: Status,
    *,
    reason: str | None = None,
    display_text: str | None = None,
    was_signed: bool = False,
) -> dict[str, object]:
    """The ECA-3 `TransactionStatus` object for a transaction in `status`.

    `was_signed` covers a transaction that failed after it was signed (a revert or a drop).
    """
    body: dict[str, object] = {
        "finished": status in FINAL,
        "signed": status in _SIGNED or was_signed,
        "submitted": status in _SUBMITTED or (status is Status.FAILED and was_signed),
        "success": status is Status.MINED,
        "displayText": display_text or _DISPLAY[status],
    }
    if reason:
        body["reason"] = reason
    return body


def eca3_message_status(
    status: Status, *, reason: str | None = None, display_text: str | None = None
) -> dict[str, object]:
    """The ECA-3 `SignedMessageStatus` object for a signature request in `status`."""
    body: dict[str, object] = {
        "finished": status in FINAL or status is Status.SIGNED,
        "signed": status is Status.SIGNED,
        "success": status is Status.SIGNED,
        "displayText": display_text or _DISPLAY[status],
    }
    if reason:
        body["reason"] = reason
    return body
