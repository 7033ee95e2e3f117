"""State changes and the outbox: every transition writes one event row in the same transaction.

`move()` is the only way a transaction or signature request changes status: it checks the edge
against the state machine, bumps the object's sequence number and appends the event, so an event
exists exactly when its change is committed. Delivery (webhooks) reads the outbox later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from txgate.core.status import Status, check_transition
from txgate.storage.tables import Event, Policy, SignedMessage, Transaction

Subject = Transaction | SignedMessage | Policy

_KINDS: dict[type, str] = {
    Transaction: "transaction",
    SignedMessage: "signed_message",
    Policy: "policy",
}


def now() -> datetime:
    return datetime.now(UTC)


def record(
    session: AsyncSession,
    subject: Subject,
    *,
    payload: dict[str, Any] | None = None,
) -> Event:
    """Append the event for `subject`'s current status (used for the first, `created`, event)."""
    subject.event_seq += 1
    kind = _KINDS[type(subject)]
    event = Event(
        subject_kind=kind,
        subject_id=subject.id,
        seq=subject.event_seq,
        customer_id=subject.customer_id,
        status=subject.status,
        payload=payload or {},
        created_at=now(),
    )
    session.add(event)
    return event


def move(
    session: AsyncSession,
    subject: Transaction | SignedMessage,
    new: Status,
    *,
    reason: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Event:
    """Move `subject` to `new`, with the event, in the caller's database transaction."""
    check_transition(Status(subject.status), new)
    subject.status = new.value
    if reason is not None:
        subject.reason = reason
    subject.updated_at = now()
    body = dict(payload or {})
    if reason is not None:
        body.setdefault("reason", reason)
    return record(session, subject, payload=body)
