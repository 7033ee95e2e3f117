"""The custody pipeline after policy: sign (with a gap-free nonce) → broadcast → confirm.

Three stages, each a loop over rows in the database, so any replica can pick up any work and a
restart resumes where the last process stopped:

- signing takes `approved` transactions per account in creation order, assigns nonces from the
  account's `NonceCursor` under a row lock, signs, and commits them `signed` with their raw bytes
  and hash *before* anything is sent;
- broadcasting sends each `signed` transaction's stored raw bytes (so a restart re-sends the same
  bytes, same hash) and commits `submitted`;
- confirmation polls receipts in batches and commits `mined` or `failed` once the receipt is
  `confirmations` blocks deep; a nonce consumed by another transaction means replaced or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.chain.client import NodeClient
from txgate.core.errors import ChainError, TxgateError
from txgate.core.status import Status
from txgate.core.types import checksum
from txgate.custody.events import move
from txgate.custody.nonces import lock_cursor, release_failed_nonce
from txgate.custody.signer import Signer
from txgate.custody.vault import Vault
from txgate.storage.engine import Database
from txgate.storage.tables import Account, NonceCursor, Transaction

log = structlog.get_logger(__name__)

# Small batches keep the write lock short, so new requests interleave with signing.
SIGN_BATCH = 32
BROADCAST_BATCH = 100
TRACK_BATCH = 200
REBROADCAST_AFTER_SECONDS = 30.0

# Node answers that mean "this exact transaction is already with the node".
_ALREADY_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")
# Node answers that will never change for these bytes: the transaction fails for good.
_PERMANENT = (
    "insufficient funds",
    "intrinsic gas too low",
    "gas limit",
    "exceeds block gas limit",
    "invalid sender",
    "fee cap less than block base fee",
    "max fee per gas less than block base fee",
    "max priority fee per gas higher than max fee per gas",
    "chain id",
    "transaction type not supported",
    "oversized data",
)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    confirmations: int = 1
    poll_interval: float = 0.25


class Pipeline:
    """Runs the three stages for every supported chain until `stop()`."""

    def __init__(
        self,
        *,
        database: Database,
        vault: Vault,
        nodes: Mapping[int, NodeClient],
        settings: PipelineSettings,
    ) -> None:
        self._db = database
        self._vault = vault
        self._nodes = dict(nodes)
        self._settings = settings
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._signers: dict[str, Signer] = {}
        self._known_cursors: set[tuple[int, str]] = set()

    def wake(self) -> None:
        """New work was committed: run the stages now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        for chain_id in self._nodes:
            self._tasks.append(
                asyncio.create_task(self._run(chain_id), name=f"pipeline-{chain_id}")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, chain_id: int) -> None:
        while True:
            try:
                busy = await self.step(chain_id)
            except asyncio.CancelledError:
                raise
            except ChainError as error:
                log.warning("pipeline.node_unavailable", chain_id=chain_id, error=error.message)
                busy = False
            except Exception:
                log.exception("pipeline.step_failed", chain_id=chain_id)
                busy = False
            if busy:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.poll_interval)

    async def step(self, chain_id: int) -> bool:
        """One pass of every stage for a chain; True when any stage moved something."""
        signed = await self.sign_ready(chain_id)
        sent = await self.broadcast_signed(chain_id)
        settled = await self.track_submitted(chain_id)
        return bool(signed or sent or settled)

    # -- signing -------------------------------------------------------------------------------

    async def sign_ready(self, chain_id: int) -> int:
        async with self._db.read() as session:
            senders = list(
                (
                    await session.execute(
                        select(Transaction.from_address)
                        .where(
                            Transaction.status == Status.APPROVED.value,
                            Transaction.chain_id == chain_id,
                        )
                        .distinct()
                    )
                ).scalars()
            )
        count = 0
        for sender in senders:
            count += await self._sign_for_account(chain_id, sender)
        return count

    async def _initial_nonce(self, chain_id: int, address: str) -> int:
        return await self._nodes[chain_id].get_transaction_count(address, "pending")

    async def _sign_for_account(self, chain_id: int, address: str) -> int:
        cursor_exists = await self._cursor_exists(chain_id, address)
        first_nonce = None if cursor_exists else await self._initial_nonce(chain_id, address)
        async with self._db.transaction() as session:
            cursor = await self._lock_cursor(session, chain_id, address, first_nonce)
            ready = list(
                (
                    await session.execute(
                        select(Transaction)
                        .where(
                            Transaction.status == Status.APPROVED.value,
                            Transaction.chain_id == chain_id,
                            Transaction.from_address == address,
                        )
                        .order_by(Transaction.created_at, Transaction.id)
                        .limit(SIGN_BATCH)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not ready:
                return 0
            signer = await self._signer(session, address)
            for tx in ready:
                if tx.nonce is None:  # replacements arrive with their original's nonce
                    tx.nonce = cursor.next_nonce
                    cursor.next_nonce += 1
                signed = await signer.sign_transaction(_unsigned(tx))
                tx.raw = signed.raw
                tx.tx_hash = signed.tx_hash
                tx.was_signed = True
                move(
                    session, tx, Status.SIGNED, payload={"hash": signed.tx_hash, "nonce": tx.nonce}
                )
                await audit(
                    session,
                    actor="custodian",
                    action="transaction.signed",
                    subject=f"transaction:{tx.id}",
                    details={"hash": signed.tx_hash, "nonce": tx.nonce, "chain_id": chain_id},
                )
            return len(ready)

    async def _cursor_exists(self, chain_id: int, address: str) -> bool:
        # A cursor row, once written, is never deleted: remember it instead of asking again.
        if (chain_id, address) in self._known_cursors:
            return True
        async with self._db.read() as session:
            found = await session.get(NonceCursor, (chain_id, address)) is not None
        if found:
            self._known_cursors.add((chain_id, address))
        return found

    async def _lock_cursor(
        self, session: AsyncSession, chain_id: int, address: str, first_nonce: int | None
    ) -> NonceCursor:
        cursor = await lock_cursor(session, chain_id, address)
        if cursor is None:
            if first_nonce is None:
                first_nonce = await self._initial_nonce(chain_id, address)
            # Another replica may insert the same row now; the loser's unique violation rolls
            # its transaction back and the loop retries with the row in place.
            cursor = NonceCursor(chain_id=chain_id, address=address, next_nonce=first_nonce)
            session.add(cursor)
            await session.flush()
        return cursor

    async def _signer(self, session: AsyncSession, address: str) -> Signer:
        signer = self._signers.get(address)
        if signer is None:
            account = await session.get(Account, address)
            if account is None:
                raise TxgateError(f"account {address} has no key in this custodian")
            signer = self._vault.signer(account.address, account.sealed_key)
            self._signers[address] = signer
        return signer

    # -- broadcasting --------------------------------------------------------------------------

    async def broadcast_signed(self, chain_id: int) -> int:
        async with self._db.read() as session:
            pending = list(
                (
                    await session.execute(
                        select(
                            Transaction.id, Transaction.raw, Transaction.tx_hash, Transaction.meta
                        )
                        .where(
                            Transaction.status == Status.SIGNED.value,
                            Transaction.chain_id == chain_id,
                        )
                        .order_by(Transaction.from_address, Transaction.nonce)
                        .limit(BROADCAST_BATCH)
                    )
                ).all()
            )
        to_send = [row for row in pending if row.meta.get("custodianPublishesTransaction", True)]
        if not to_send:
            return 0
        node = self._nodes[chain_id]
        answers = await node.batch(
            [("eth_sendRawTransaction", ["0x" + row.raw.hex()]) for row in to_send]
        )
        outcomes: dict[str, tuple[Status, str | None]] = {}
        for row, answer in zip(to_send, answers, strict=True):
            if not isinstance(answer, ChainError):
                outcomes[row.id] = (Status.SUBMITTED, None)
                continue
            text = answer.message.lower()
            if any(marker in text for marker in _ALREADY_KNOWN):
                outcomes[row.id] = (Status.SUBMITTED, None)
            elif any(marker in text for marker in _PERMANENT):
                outcomes[row.id] = (Status.FAILED, f"Rejected by the node: {answer.message}")
            else:
                # Nonce too low, a node hiccup: leave it signed; the tracker decides from the chain.
                log.info("pipeline.broadcast_deferred", tx_id=row.id, error=answer.message)
        if not outcomes:
            return 0
        refused = any(status is Status.FAILED for status, _ in outcomes.values())
        fees = await node.fee_suggestion() if refused else (0, 0)
        async with self._db.transaction() as session:
            rows = list(
                (
                    await session.execute(
                        select(Transaction)
                        .where(Transaction.id.in_(list(outcomes)))
                        .order_by(Transaction.nonce.desc())
                        .with_for_update()
                    )
                ).scalars()
            )
            for tx in rows:
                if tx.status != Status.SIGNED.value:
                    continue  # another replica got there first
                status, reason = outcomes[tx.id]
                move(session, tx, status, reason=reason, payload={"hash": tx.tx_hash})
            # Newest nonce first, so a run of refusals at the end rewinds the cursor step by step.
            for tx in rows:
                if tx.status == Status.FAILED.value and outcomes[tx.id][0] is Status.FAILED:
                    await release_failed_nonce(session, tx, max_fee=fees[0], priority_fee=fees[1])
        return len(outcomes)

    # -- confirmation --------------------------------------------------------------------------

    async def track_submitted(self, chain_id: int) -> int:
        async with self._db.read() as session:
            watched = list(
                (
                    await session.execute(
                        select(Transaction)
                        .where(
                            Transaction.chain_id == chain_id,
                            Transaction.status.in_([Status.SUBMITTED.value, Status.SIGNED.value]),
                            Transaction.tx_hash.is_not(None),
                        )
                        .order_by(Transaction.updated_at)
                        .limit(TRACK_BATCH)
                    )
                ).scalars()
            )
        if not watched:
            return 0
        node = self._nodes[chain_id]
        senders = sorted({tx.from_address for tx in watched})
        # Nonces first, receipts second: a nonce that moved past ours while our receipt is still
        # missing can only mean another transaction took the nonce. Only a transaction below its
        # account's nonce can have a receipt, so only those are asked for.
        calls: list[tuple[str, list[Any]]] = [("eth_blockNumber", [])]
        calls += [("eth_getTransactionCount", [sender, "latest"]) for sender in senders]
        quantities: list[int] = []
        for answer in await node.batch(calls):
            if isinstance(answer, ChainError):
                raise answer
            quantities.append(int(answer, 16))
        head = quantities[0]
        chain_nonce = dict(zip(senders, quantities[1:], strict=True))
        used = [
            tx for tx in watched if tx.nonce is not None and tx.nonce < chain_nonce[tx.from_address]
        ]
        answers = await node.batch([("eth_getTransactionReceipt", [tx.tx_hash]) for tx in used])
        by_id = {tx.id: answer for tx, answer in zip(used, answers, strict=True)}
        receipts = [by_id.get(tx.id) for tx in watched]

        settled: dict[str, tuple[Status, str | None, int | None]] = {}
        mined_nonces: dict[tuple[str, int], str] = {}
        for tx, receipt in zip(watched, receipts, strict=True):
            if isinstance(receipt, ChainError) or receipt is None:
                continue
            block = int(receipt["blockNumber"], 16)
            if head - block + 1 < self._settings.confirmations:
                continue
            assert tx.nonce is not None
            mined_nonces[(tx.from_address, tx.nonce)] = tx.id
            if int(receipt.get("status", "0x1"), 16) == 1:
                settled[tx.id] = (Status.MINED, None, block)
            else:
                settled[tx.id] = (Status.FAILED, "Transaction was reverted on chain", block)
        for tx, receipt in zip(watched, receipts, strict=True):
            if tx.id in settled or tx.nonce is None or receipt is not None:
                continue
            if chain_nonce[tx.from_address] <= tx.nonce:
                continue
            winner = mined_nonces.get((tx.from_address, tx.nonce))
            if winner is not None and tx.replaces_id is None:
                settled[tx.id] = (Status.REPLACED, f"Replaced by transaction {winner}", None)
            elif winner is not None:
                settled[tx.id] = (
                    Status.FAILED,
                    "The transaction it replaced was mined first",
                    None,
                )
            elif not await self._nonce_taken_by_sibling(tx):
                settled[tx.id] = (
                    Status.FAILED,
                    "Dropped: its nonce was used by another transaction",
                    None,
                )
        await self._rebroadcast_stale(chain_id, watched, receipts, settled)
        if not settled:
            return 0
        async with self._db.transaction() as session:
            rows = (
                await session.execute(
                    select(Transaction).where(Transaction.id.in_(list(settled))).with_for_update()
                )
            ).scalars()
            for tx in rows:
                if tx.status not in (Status.SUBMITTED.value, Status.SIGNED.value):
                    continue
                status, reason, block_number = settled[tx.id]
                tx.block_number = block_number
                move(
                    session,
                    tx,
                    status,
                    reason=reason,
                    payload={"hash": tx.tx_hash, "blockNumber": block_number},
                )
        return len(settled)

    async def _nonce_taken_by_sibling(self, tx: Transaction) -> bool:
        """Whether a replacement of the same nonce is still waiting for its receipt depth."""
        async with self._db.read() as session:
            sibling = (
                await session.execute(
                    select(Transaction.id).where(
                        Transaction.chain_id == tx.chain_id,
                        Transaction.from_address == tx.from_address,
                        Transaction.nonce == tx.nonce,
                        Transaction.id != tx.id,
                        Transaction.status.in_(
                            [Status.SIGNED.value, Status.SUBMITTED.value, Status.MINED.value]
                        ),
                    )
                )
            ).first()
        return sibling is not None

    async def _rebroadcast_stale(
        self,
        chain_id: int,
        watched: list[Transaction],
        receipts: list[Any],
        settled: Mapping[str, Any],
    ) -> None:
        """Re-send raw bytes of long-pending transactions: a node restart empties its pool."""
        stale_before = datetime.now(UTC).timestamp() - REBROADCAST_AFTER_SECONDS
        stale = [
            tx
            for tx, receipt in zip(watched, receipts, strict=True)
            if receipt is None
            and tx.id not in settled
            and tx.status == Status.SUBMITTED.value
            and tx.raw is not None
            and _timestamp(tx.updated_at) < stale_before
        ]
        if stale:
            await self._nodes[chain_id].batch(
                [("eth_sendRawTransaction", ["0x" + tx.raw.hex()]) for tx in stale if tx.raw]
            )


def _timestamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _unsigned(tx: Transaction) -> dict[str, Any]:
    body: dict[str, Any] = {
        "chainId": tx.chain_id,
        "nonce": tx.nonce,
        "value": tx.value,
        "data": tx.data,
        "gas": tx.gas,
    }
    if tx.to_address:
        body["to"] = checksum(tx.to_address)
    if tx.tx_type == 2:
        body["type"] = 2
        body["maxFeePerGas"] = tx.max_fee_per_gas
        body["maxPriorityFeePerGas"] = tx.max_priority_fee_per_gas
    else:
        body["gasPrice"] = tx.gas_price
    return body
