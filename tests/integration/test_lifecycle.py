"""The lifecycle around a transaction: confirmation depth, one outbox event per transition with a
gap-free sequence, and `txgate audit verify` naming the first tampered row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from support.custodian import CustodianProcess, Eca3Client, fund, seed
from support.payloads import eth_transfer
from txgate.chain import Anvil, NodeClient
from txgate.storage.engine import Database
from txgate.storage.tables import AuditEntry, Event

pytestmark = pytest.mark.integration

CONFIRMATIONS = 3


async def test_confirmation_depth_outbox_and_audit(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    seeded = await seed(database_url, accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender])
    process = await CustodianProcess(
        database_url,
        anvil.url,
        tmp_path / "data",
        extra_env={"TXGATE_CONFIRMATIONS": str(CONFIRMATIONS)},
    ).start()
    try:
        async with (
            Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client,
            NodeClient(anvil.url) as node,
        ):
            tx = eth_transfer(sender)
            tx_id = await client.call(
                "custodian_createTransaction", [tx, {"chainId": hex(anvil.chain_id)}]
            )
            for _ in range(200):
                body = (await client.call("custodian_getTransactionById", [tx_id]))["transaction"]
                if body["hash"] and await node.get_transaction_receipt(body["hash"]):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # several pipeline passes: one block deep is not enough
            body = (await client.call("custodian_getTransactionById", [tx_id]))["transaction"]
            assert body["status"]["submitted"] and not body["status"]["finished"], body
            for _ in range(CONFIRMATIONS - 1):
                await node.call("evm_mine", [])
            final = await client.wait_final(tx_id)
            assert final["transaction"]["status"]["success"]
    finally:
        await process.stop()

    db = Database(database_url)
    try:
        async with db.read() as session:
            events = (
                await session.execute(
                    select(Event.seq, Event.status)
                    .where(Event.subject_id == tx_id)
                    .order_by(Event.seq)
                )
            ).all()
            assert [tuple(e) for e in events] == [
                (1, "created"),
                (2, "approved"),
                (3, "signed"),
                (4, "submitted"),
                (5, "mined"),
            ]
            victim = (
                await session.execute(
                    select(AuditEntry.id).where(AuditEntry.action == "transaction.signed")
                )
            ).scalar_one()
    finally:
        await db.dispose()

    env = {
        **os.environ,
        "TXGATE_DATABASE_URL": database_url,
        "TXGATE_DATA_DIR": str(tmp_path / "data"),
    }
    verify = [sys.executable, "-m", "txgate.cli", "audit", "verify"]
    intact = subprocess.run(verify, env=env, capture_output=True, text=True)
    assert intact.returncode == 0 and "intact" in intact.stdout, intact.stderr

    db = Database(database_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(AuditEntry).where(AuditEntry.id == victim).values(actor="someone-else")
            )
    finally:
        await db.dispose()
    tampered = subprocess.run(verify, env=env, capture_output=True, text=True)
    assert tampered.returncode == 2
    assert f"row {victim}" in tampered.stderr and "Traceback" not in tampered.stderr
