"""Policy versions per customer: propose, (four-eyes) approve, activate, look up.

A new version is checked completely before anything is written; a bad file leaves the current
policy in force. When the active policy names a `governance` approval requirement, a new version
waits as `proposed` until administrators approve it through the approval quorum; otherwise (the
first policy of a customer, or a policy without governance) it becomes active at once. Every
step is audit-logged and written as an outbox event.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.custody.approvals import requirement_snapshot, tally
from txgate.custody.events import now, record
from txgate.custody.policy.document import load_policy, parse_policy
from txgate.custody.policy.engine import approval_requirement
from txgate.storage.tables import Policy

PolicyFormat = Literal["yaml", "toml"]

ACTIVE = "active"
PROPOSED = "proposed"
SUPERSEDED = "superseded"


async def active(session: AsyncSession, *, customer_id: str) -> Policy | None:
    query = select(Policy).where(Policy.customer_id == customer_id, Policy.status == ACTIVE)
    return (await session.execute(query)).scalar_one_or_none()


async def versions(session: AsyncSession, *, customer_id: str) -> list[Policy]:
    query = select(Policy).where(Policy.customer_id == customer_id).order_by(Policy.version.desc())
    return list((await session.execute(query)).scalars())


async def propose(
    session: AsyncSession,
    *,
    customer_id: str,
    source: str,
    format: PolicyFormat,
    proposer: str,
    actor: str,
    approval_ttl: int,
) -> Policy:
    """Check `source` and store it as the next version; activate it unless governance applies."""
    document = load_policy(source, format=format).as_dict()  # raises PolicyError: nothing written
    current = await active(session, customer_id=customer_id)
    latest = (
        await session.execute(
            select(func.max(Policy.version)).where(Policy.customer_id == customer_id)
        )
    ).scalar_one()
    stamp = now()
    row = Policy(
        id=str(uuid.uuid4()),
        customer_id=customer_id,
        version=(latest or 0) + 1,
        source=source,
        document=document,
        status=PROPOSED,
        proposed_by=proposer,
        approval=None,
        event_seq=0,
        created_at=stamp,
        updated_at=stamp,
    )
    in_force = parse_policy(current.document) if current is not None else None
    governance = in_force.governance if in_force is not None else None
    if in_force is not None and governance is not None:
        requirement = approval_requirement(governance.approvals, in_force)
        row.approval = {
            **requirement_snapshot(
                requirement.as_dict(), initiator=proposer, ttl_seconds=approval_ttl
            ),
            "rule": "governance",
        }
    session.add(row)
    record(session, row, payload={"version": row.version})
    await audit(
        session,
        actor=actor,
        action="policy.proposed",
        subject=f"policy:{row.id}",
        details={
            "customer_id": customer_id,
            "version": row.version,
            "needs_approval": governance is not None,
        },
    )
    if governance is None:
        await activate(session, row, actor=actor)
    return row


async def activate(session: AsyncSession, row: Policy, *, actor: str) -> None:
    """Make `row` the policy in force. The version it replaces, and every older proposal still
    waiting (approving one later must not roll the policy back), become `superseded`."""
    replaced = (
        await session.execute(
            select(Policy)
            .where(
                Policy.customer_id == row.customer_id,
                Policy.id != row.id,
                (Policy.status == ACTIVE)
                | ((Policy.status == PROPOSED) & (Policy.version < row.version)),
            )
            .with_for_update()
        )
    ).scalars()
    for older in replaced:
        older.status = SUPERSEDED
        older.updated_at = now()
        record(session, older, payload={"superseded_by": row.version})
    # Flush first: a partial unique index allows one active version per customer.
    await session.flush()
    row.status = ACTIVE
    row.updated_at = now()
    record(session, row, payload={"version": row.version})
    await audit(
        session,
        actor=actor,
        action="policy.activated",
        subject=f"policy:{row.id}",
        details={"customer_id": row.customer_id, "version": row.version},
    )


def describe(row: Policy) -> dict[str, Any]:
    return {
        "id": row.id,
        "version": row.version,
        "status": row.status,
        "proposedBy": row.proposed_by,
        "createdAt": row.created_at.isoformat(),
        "progress": tally(row.approval).text if row.approval and row.status == PROPOSED else None,
        "rules": [rule["name"] for rule in row.document.get("rules", [])],
        "source": row.source,
    }
