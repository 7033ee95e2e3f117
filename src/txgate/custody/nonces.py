"""Nonces per account and chain: the cursor that hands them out without gaps or duplicates, and
the recovery of a nonce whose transaction failed for good before it was mined.

A signed transaction that the node refuses for good (insufficient funds, intrinsic gas too low)
never uses its nonce. If it held the newest nonce, the cursor steps back and the next request
reuses it. If later nonces are already signed, those are stuck behind the hole; they must not be
re-signed at new nonces (their first signatures may still be in a node's pool, and both versions
could be mined), so the hole is filled instead with a no-op: a zero-value transfer to the account
itself at the failed nonce, signed by the pipeline like any other transaction.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.core.status import Status
from txgate.custody.events import move, now, record
from txgate.storage.tables import NonceCursor, Transaction

log = structlog.get_logger(__name__)

FILL_ACTION = "fill"
FILL_GAS = 21_000

_HOLDING_NONCE = (
    Status.APPROVED.value,
    Status.SIGNED.value,
    Status.SUBMITTED.value,
    Status.MINED.value,
)


async def lock_cursor(session: AsyncSession, chain_id: int, address: str) -> NonceCursor | None:
    """The account's cursor row, locked for the rest of the transaction (None if never used)."""
    query = (
        select(NonceCursor)
        .where(NonceCursor.chain_id == chain_id, NonceCursor.address == address)
        .with_for_update()
    )
    return (await session.execute(query)).scalar_one_or_none()


async def release_failed_nonce(
    session: AsyncSession, failed: Transaction, *, max_fee: int, priority_fee: int
) -> Transaction | None:
    """Give back the nonce of `failed` (already moved to `failed` in this transaction): rewind the
    cursor, or add an approved gap filler at that nonce. Returns the filler, if one was made."""
    if failed.nonce is None:
        return None
    cursor = await lock_cursor(session, failed.chain_id, failed.from_address)

    def holding(*condition: ColumnElement[bool]) -> Select[int]:
        return (
            select(func.count())
            .select_from(Transaction)
            .where(
                Transaction.chain_id == failed.chain_id,
                Transaction.from_address == failed.from_address,
                Transaction.status.in_(_HOLDING_NONCE),
                *condition,
            )
        )

    later = (await session.execute(holding(Transaction.nonce > failed.nonce))).scalar_one()
    same = (
        await session.execute(
            holding(Transaction.nonce == failed.nonce, Transaction.id != failed.id)
        )
    ).scalar_one()
    if same:
        return None  # a replacement still holds this nonce
    if not later:
        if cursor is not None and cursor.next_nonce == failed.nonce + 1:
            cursor.next_nonce = failed.nonce
            await audit(
                session,
                actor="custodian",
                action="nonce.released",
                subject=f"account:{failed.from_address}",
                details={
                    "chain_id": failed.chain_id,
                    "nonce": failed.nonce,
                    "transaction": failed.id,
                },
            )
        return None
    if failed.replace_action == FILL_ACTION:
        # The filler itself was refused (the account cannot pay for gas): an operator must fund
        # the account, then run `txgate custodian nonce fill`.
        log.warning(
            "nonce.fill_refused",
            account=failed.from_address,
            nonce=failed.nonce,
            reason=failed.reason,
        )
        return None
    return await add_gap_filler(
        session,
        failed,
        nonce=failed.nonce,
        max_fee=max_fee,
        priority_fee=priority_fee,
        actor="custodian",
    )


async def add_gap_filler(
    session: AsyncSession,
    source: Transaction,
    *,
    nonce: int,
    max_fee: int,
    priority_fee: int,
    actor: str,
) -> Transaction:
    stamp = now()
    filler = Transaction(
        id=str(uuid.uuid4()),
        customer_id=source.customer_id,
        user_id=source.user_id,
        chain_id=source.chain_id,
        tx_type=2,
        from_address=source.from_address,
        to_address=source.from_address,
        value=0,
        data=b"",
        gas=FILL_GAS,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=priority_fee,
        gas_price=None,
        nonce=nonce,
        status=Status.CREATED.value,
        was_signed=False,
        replaces_id=source.id,
        replace_action=FILL_ACTION,
        meta={
            "transactionCategory": "cancel",
            "note": f"no-op filling nonce {nonce} left by transaction {source.id}",
            "custodianPublishesTransaction": True,
        },
        event_seq=0,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(filler)
    record(session, filler, payload={"fills_nonce_of": source.id})
    # A zero-value transfer to the account itself moves no assets: it needs no policy approval.
    move(session, filler, Status.APPROVED, payload={"policy": {"rule": "nonce-gap-filler"}})
    await audit(
        session,
        actor=actor,
        action="nonce.gap_filled",
        subject=f"transaction:{filler.id}",
        details={
            "chain_id": source.chain_id,
            "nonce": nonce,
            "account": source.from_address,
            "after": source.id,
        },
    )
    return filler
