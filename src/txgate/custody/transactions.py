"""Transactions: creation (validate → created → policy → approved), look-up, replacement, and
their ECA-3 shape."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.core.errors import Conflict, InvalidParams
from txgate.core.status import Status, eca3_transaction_status
from txgate.core.types import checksum, normalise_address, to_hex_bytes, to_hex_uint
from txgate.custody.approvals import tally
from txgate.custody.directory import customer_account
from txgate.custody.events import move, now, record
from txgate.custody.policy import Decision, PolicyHook, Verdict
from txgate.custody.requests import FeeBump, TransactionRequest
from txgate.custody.tokens import Caller
from txgate.storage.tables import Transaction

# A replacement must pay at least this much more than the one it replaces (geth's default is 10%).
REPLACEMENT_BUMP_PERCENT = 10
CANCEL_GAS = 21_000


async def create_transaction(
    session: AsyncSession, *, caller: Caller, request: TransactionRequest, policy: PolicyHook
) -> Transaction:
    await customer_account(
        session, customer_id=caller.customer_id, address=request.from_address, param="0.from"
    )
    stamp = now()
    tx = Transaction(
        id=str(uuid.uuid4()),
        customer_id=caller.customer_id,
        user_id=caller.user_id,
        chain_id=request.chain_id,
        tx_type=request.tx_type,
        from_address=normalise_address(request.from_address),
        to_address=normalise_address(request.to_address) if request.to_address else None,
        value=request.value,
        data=request.data,
        gas=request.gas,
        max_fee_per_gas=request.max_fee_per_gas,
        max_priority_fee_per_gas=request.max_priority_fee_per_gas,
        gas_price=request.gas_price,
        status=Status.CREATED.value,
        was_signed=False,
        meta=request.meta,
        event_seq=0,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(tx)
    record(session, tx)
    await audit(
        session,
        actor=f"user:{caller.user_id}",
        action="transaction.created",
        subject=f"transaction:{tx.id}",
        details={
            "chain_id": tx.chain_id,
            "from": tx.from_address,
            "to": tx.to_address,
            "value": str(tx.value),
            "selector": tx.data[:4].hex() if len(tx.data) >= 4 else None,
        },
    )
    await apply_decision(session, tx, await policy.decide(session, caller=caller, subject=tx))
    return tx


async def apply_decision(session: AsyncSession, tx: Transaction, decision: Decision) -> None:
    details = {"rule": decision.rule, "reason": decision.reason}
    if decision.verdict is Verdict.ALLOW:
        move(session, tx, Status.APPROVED, payload={"policy": details})
    elif decision.verdict is Verdict.BLOCK:
        move(
            session,
            tx,
            Status.BLOCKED,
            reason=decision.reason,
        )
    else:
        move(session, tx, Status.PENDING_APPROVAL, payload={"policy": details})


async def get_transaction(
    session: AsyncSession, *, caller: Caller, tx_id: str
) -> Transaction | None:
    if not isinstance(tx_id, str) or len(tx_id) > 64:
        raise InvalidParams("0 must be a transaction id string", param="0")
    tx = await session.get(Transaction, tx_id)
    if tx is None or tx.customer_id != caller.customer_id:
        return None
    return tx


def _bumped(old: int | None, new: int | None, *, param: str) -> int | None:
    if old is None:
        return None
    minimum = old + (old * REPLACEMENT_BUMP_PERCENT + 99) // 100
    if new is None:
        return minimum
    if new < minimum:
        raise InvalidParams(
            f"{param} must be at least {minimum:#x} (+{REPLACEMENT_BUMP_PERCENT}%) to replace",
            param=param,
        )
    return new


async def replace_transaction(
    session: AsyncSession,
    *,
    caller: Caller,
    tx_id: Any,
    action: Any,
    bump: FeeBump,
    policy: PolicyHook,
) -> Transaction:
    """A speed-up (same call, higher fees) or cancel (empty self-transfer) at the same nonce.

    The replacement is signed at once with the original's nonce; whichever is mined first wins,
    and the tracker marks the other `replaced` (original) or `failed` (replacement)."""
    if not isinstance(tx_id, str):
        raise InvalidParams("0.transactionId must be a string", param="0.transactionId")
    if action not in ("speedUp", "cancel"):
        raise InvalidParams('0.action must be "speedUp" or "cancel"', param="0.action")
    original = (
        await session.execute(select(Transaction).where(Transaction.id == tx_id).with_for_update())
    ).scalar_one_or_none()
    if original is None or original.customer_id != caller.customer_id:
        raise InvalidParams(f"0.transactionId: no transaction {tx_id!r}", param="0.transactionId")
    if Status(original.status) not in (Status.SIGNED, Status.SUBMITTED) or original.nonce is None:
        raise Conflict(
            f"transaction {tx_id} is {original.status}; only a signed or submitted transaction can be replaced"
        )
    cancel = action == "cancel"
    stamp = now()
    replacement = Transaction(
        id=str(uuid.uuid4()),
        customer_id=original.customer_id,
        user_id=caller.user_id,
        chain_id=original.chain_id,
        tx_type=original.tx_type,
        from_address=original.from_address,
        to_address=original.from_address if cancel else original.to_address,
        value=0 if cancel else original.value,
        data=b"" if cancel else original.data,
        gas=bump.gas or (CANCEL_GAS if cancel else original.gas),
        max_fee_per_gas=_bumped(
            original.max_fee_per_gas, bump.max_fee_per_gas, param="1.maxFeePerGas"
        ),
        max_priority_fee_per_gas=_bumped(
            original.max_priority_fee_per_gas,
            bump.max_priority_fee_per_gas,
            param="1.maxPriorityFeePerGas",
        ),
        gas_price=_bumped(original.gas_price, bump.gas_price, param="1.gasPrice"),
        nonce=original.nonce,
        status=Status.CREATED.value,
        was_signed=False,
        replaces_id=original.id,
        replace_action=action,
        meta={**original.meta, "transactionCategory": "cancel" if cancel else "retry"},
        event_seq=0,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(replacement)
    record(session, replacement, payload={"replaces": original.id, "action": action})
    await audit(
        session,
        actor=f"user:{caller.user_id}",
        action=f"transaction.{'cancel' if cancel else 'speed_up'}",
        subject=f"transaction:{replacement.id}",
        details={"replaces": original.id, "nonce": original.nonce},
    )
    await apply_decision(
        session, replacement, await policy.decide(session, caller=caller, subject=replacement)
    )
    return replacement


def waiting_text(approval: dict[str, Any] | None, status: Status) -> str | None:
    """ "Pending approval: 1 of 2" while a request waits for its quorum."""
    if status is not Status.PENDING_APPROVAL or not approval:
        return None
    return tally(approval).text


def eca3_transaction(tx: Transaction) -> dict[str, Any]:
    """The nested `{transaction, metadata}` shape of the spec's getTransactionById example."""
    status = Status(tx.status)
    body: dict[str, Any] = {
        "id": tx.id,
        "type": to_hex_uint(tx.tx_type),
        "from": checksum(tx.from_address),
        "value": to_hex_uint(tx.value),
        "gas": to_hex_uint(tx.gas),
        "nonce": to_hex_uint(tx.nonce) if tx.nonce is not None else None,
        "data": to_hex_bytes(tx.data),
        "hash": tx.tx_hash,
        "chainId": to_hex_uint(tx.chain_id),
        "status": eca3_transaction_status(
            status,
            reason=tx.reason,
            was_signed=tx.was_signed,
            display_text=waiting_text(tx.approval, status),
        ),
    }
    if tx.to_address:  # absent for a contract creation: the spec's address type has no null
        body["to"] = checksum(tx.to_address)
    if tx.tx_type == 2:
        body["maxFeePerGas"] = to_hex_uint(tx.max_fee_per_gas or 0)
        body["maxPriorityFeePerGas"] = to_hex_uint(tx.max_priority_fee_per_gas or 0)
    else:
        body["gasPrice"] = to_hex_uint(tx.gas_price or 0)
    if tx.raw is not None:
        body["signedRawTransaction"] = to_hex_bytes(tx.raw)
    metadata = {"chainId": to_hex_uint(tx.chain_id), **tx.meta}
    return {"transaction": body, "metadata": metadata}
