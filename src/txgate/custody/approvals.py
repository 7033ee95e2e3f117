"""The approval quorum: authenticated approvers vote on requests waiting for approval.

A request that a policy rule sends to `require_approval` carries a snapshot of the requirement
(`approval` JSON: approver groups with member names and thresholds, `all`/`any`, whether the
initiator may vote, when it expires). Each vote names an authenticated person; the subject row is
locked while a vote is counted, so two votes arriving together give exactly one transition, and a
unique constraint on (subject, voter) is the one-vote rule even if a check were ever skipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.core.errors import Conflict, Forbidden, InvalidParams, NotFound
from txgate.core.status import Status
from txgate.custody.events import move, now, record
from txgate.custody.policy.engine import ApprovalRequirement
from txgate.custody.tokens import Caller
from txgate.storage.tables import Policy, SignedMessage, Transaction, User, Vote

# Typed loosely on purpose: the three models share the columns used here (id, customer_id,
# status, approval, created_at) without a common mapped base class.
KINDS: dict[str, Any] = {
    "transaction": Transaction,
    "signed_message": SignedMessage,
    "policy": Policy,
}
APPROVE = "approve"
REJECT = "reject"
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Tally:
    """Where a request stands: approvals that count, what is needed, and whether it is reached."""

    counted: int
    needed: int
    reached: bool

    @property
    def text(self) -> str:
        return f"Pending approval: {self.counted} of {self.needed}"


def requirement_snapshot(
    requirement: dict[str, Any], *, initiator: str, ttl_seconds: int
) -> dict[str, Any]:
    """What is stored on the request: the rule's requirement, who initiated, when it expires."""
    expires = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
    return {**requirement, "initiator": initiator, "expires_at": expires.isoformat(), "votes": []}


def tally(approval: dict[str, Any]) -> Tally:
    """Where the stored requirement stands; whether it is met is the engine's rule
    (`ApprovalRequirement.reached`), the counts here are for the "1 of 2" text."""
    requirement = ApprovalRequirement.from_dict(approval)
    approvers = {vote["user"] for vote in approval.get("votes", []) if vote["decision"] == APPROVE}
    reached = requirement.reached(approvers, initiator=approval.get("initiator", ""))
    counts = [
        (min(len(approvers & group.members), group.threshold), group.threshold)
        for group in requirement.groups
    ]
    if requirement.mode == "any":
        have, need = max(counts, key=lambda pair: pair[0] / pair[1])
        return Tally(have, need, reached)
    return Tally(sum(have for have, _ in counts), sum(need for _, need in counts), reached)


def may_vote(approval: dict[str, Any], user_name: str) -> str | None:
    """None when `user_name` may vote on this request, else the reason they may not."""
    if user_name == approval.get("initiator") and not approval.get("initiator_may_approve", False):
        return "the initiator of a request cannot approve it (separation of duties)"
    if not any(user_name in group["members"] for group in approval["groups"]):
        return "you are not in an approver group of this request"
    if any(vote["user"] == user_name for vote in approval.get("votes", [])):
        return "you have already voted on this request"
    return None


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    kind: str
    subject: Transaction | SignedMessage | Policy
    status: str
    text: str


async def vote(
    session: AsyncSession,
    *,
    caller: Caller,
    kind: str | None,
    subject_id: str,
    decision: str,
    reason: str | None,
) -> VoteOutcome:
    """Count `caller`'s vote; move the request when the quorum is reached or on a rejection.

    The caller commits; a message or policy that becomes approved is finished by the caller
    (signing, activation), since those need services this module does not own."""
    if kind is None:
        kind = await find_kind(session, subject_id)
    model = KINDS.get(kind)
    if model is None:
        raise InvalidParams(f"kind must be one of {', '.join(KINDS)}", param="kind")
    if decision not in (APPROVE, REJECT):
        raise InvalidParams('decision must be "approve" or "reject"', param="decision")
    if reason is not None and len(reason) > MAX_REASON:
        raise InvalidParams(f"reason is longer than {MAX_REASON} characters", param="reason")
    if decision == REJECT and not (reason and reason.strip()):
        raise InvalidParams("a rejection needs a reason", param="reason")
    subject: Any = (
        await session.execute(select(model).where(model.id == subject_id).with_for_update())
    ).scalar_one_or_none()
    if subject is None or subject.customer_id != caller.customer_id:
        raise NotFound(f"no {kind.replace('_', ' ')} {subject_id!r} waits for approval")
    waiting = Status.PENDING_APPROVAL.value if kind != "policy" else "proposed"
    if subject.status != waiting or subject.approval is None:
        raise Conflict(
            f"{kind.replace('_', ' ')} {subject_id} is {subject.status}, not waiting for approval"
        )
    approval = dict(subject.approval)
    refusal = may_vote(approval, caller.user_name)
    if refusal is not None:
        raise Forbidden(refusal)
    stamp = now()
    session.add(
        Vote(
            id=str(uuid.uuid4()),
            subject_kind=kind,
            subject_id=subject.id,
            user_id=caller.user_id,
            decision=decision,
            reason=reason,
            created_at=stamp,
        )
    )
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("you have already voted on this request") from None
    approval["votes"] = [
        *approval.get("votes", []),
        {"user": caller.user_name, "decision": decision, "at": stamp.isoformat()},
    ]
    count = tally(approval)
    approval["progress"] = count.text
    subject.approval = approval
    await audit(
        session,
        actor=f"user:{caller.user_id}",
        action=f"approval.{decision}",
        subject=f"{kind}:{subject.id}",
        details={"user": caller.user_name, "reason": reason, "progress": count.text},
    )
    payload = {
        "vote": {"user": caller.user_name, "decision": decision, "reason": reason},
        "progress": count.text,
    }
    if decision == REJECT:
        text = f"Rejected by {caller.user_name}: {reason}"
        _finish(session, subject, kind, rejected=True, reason=text, payload=payload)
        return VoteOutcome(kind, subject, subject.status, text)
    if count.reached:
        _finish(session, subject, kind, rejected=False, reason=None, payload=payload)
        return VoteOutcome(kind, subject, subject.status, "Approved")
    record(session, subject, payload=payload)
    return VoteOutcome(kind, subject, subject.status, count.text)


async def find_kind(session: AsyncSession, subject_id: str) -> str:
    """Which kind of request an id names (ids are UUIDs, unique across the three tables)."""
    for kind, model in KINDS.items():
        if await session.get(model, subject_id) is not None:
            return kind
    raise NotFound(f"no request {subject_id!r} waits for approval")


def _finish(
    session: AsyncSession,
    subject: Transaction | SignedMessage | Policy,
    kind: str,
    *,
    rejected: bool,
    reason: str | None,
    payload: dict[str, Any],
) -> None:
    if isinstance(subject, Policy):
        # Policies have their own small lifecycle (proposed → active | rejected); activation,
        # which supersedes the current version, is the policy store's job.
        subject.status = "rejected" if rejected else "approved"
        subject.updated_at = now()
        record(session, subject, payload={**payload, "reason": reason} if reason else payload)
        return
    move(
        session,
        subject,
        Status.REJECTED if rejected else Status.APPROVED,
        reason=reason,
        payload=payload,
    )


async def expire(session: AsyncSession, *, at: datetime) -> int:
    """Abort every request whose approval window has closed."""
    count = 0
    models: tuple[Any, ...] = (Transaction, SignedMessage)
    for model in models:
        waiting = (
            await session.execute(
                select(model)
                .where(model.status == Status.PENDING_APPROVAL.value)
                .with_for_update(skip_locked=True)
            )
        ).scalars()
        for subject in waiting:
            if subject.approval and datetime.fromisoformat(subject.approval["expires_at"]) <= at:
                move(
                    session,
                    subject,
                    Status.ABORTED,
                    reason="Approval window expired before the quorum was reached",
                )
                await audit(
                    session, actor="custodian", action="approval.expired", subject=f"{subject.id}"
                )
                count += 1
    return count


@dataclass(frozen=True, slots=True)
class PendingRequest:
    kind: str
    id: str
    initiator: str
    summary: dict[str, Any]
    progress: str
    created_at: datetime
    may_vote: bool
    why_not: str | None


async def pending(session: AsyncSession, *, caller: Caller) -> list[PendingRequest]:
    """Requests of the caller's customer waiting for approval, and whether the caller may vote."""
    out: list[PendingRequest] = []
    names = {
        user.id: user.name
        for user in (
            await session.execute(select(User).where(User.customer_id == caller.customer_id))
        ).scalars()
    }
    for kind, model in KINDS.items():
        waiting_status = "proposed" if kind == "policy" else Status.PENDING_APPROVAL.value
        rows: Any = (
            await session.execute(
                select(model)
                .where(model.customer_id == caller.customer_id, model.status == waiting_status)
                .order_by(model.created_at)
            )
        ).scalars()
        for row in rows:
            if row.approval is None:
                continue
            why_not = may_vote(row.approval, caller.user_name)
            initiator = row.approval.get("initiator") or names.get(getattr(row, "user_id", ""), "?")
            out.append(
                PendingRequest(
                    kind=kind,
                    id=row.id,
                    initiator=initiator,
                    summary=_summary(row),
                    progress=tally(row.approval).text,
                    created_at=row.created_at,
                    may_vote=why_not is None,
                    why_not=why_not,
                )
            )
    return out


def _summary(row: Transaction | SignedMessage | Policy) -> dict[str, Any]:
    if isinstance(row, Transaction):
        return {
            "chainId": row.chain_id,
            "from": row.from_address,
            "to": row.to_address,
            "value": str(row.value),
            "asset": row.asset,
            "amount": str(row.amount) if row.amount is not None else None,
            "destination": row.destination,
            "rule": row.approval.get("rule") if row.approval else None,
        }
    if isinstance(row, SignedMessage):
        return {
            "address": row.address,
            "version": row.version,
            "rule": row.approval.get("rule") if row.approval else None,
        }
    return {"version": row.version, "proposed_by": row.proposed_by}
