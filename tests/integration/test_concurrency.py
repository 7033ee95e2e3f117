"""200 concurrent createTransaction calls from one account: all mined, nonces contiguous and
unique, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from eth_account import Account as EthAccount

from support.custodian import CustodianProcess, Eca3Client, fund, seed
from support.payloads import eth_transfer
from txgate.chain import Anvil, NodeClient

pytestmark = pytest.mark.integration

CONCURRENT = 200


async def test_concurrent_creates_get_contiguous_nonces(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    seeded = await seed(database_url, accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender])
    async with NodeClient(anvil.url) as node:
        first_nonce = await node.get_transaction_count(sender, "latest")
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data").start()
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
            await client.login()
            recipients = [EthAccount.create().address for _ in range(CONCURRENT)]

            async def create(index: int) -> str:
                tx = eth_transfer(sender, to=recipients[index], value=index + 1)
                return str(
                    await client.call(
                        "custodian_createTransaction", [tx, {"chainId": hex(anvil.chain_id)}]
                    )
                )

            ids = await asyncio.gather(*(create(i) for i in range(CONCURRENT)))
            assert len(set(ids)) == CONCURRENT
            finals = [await client.wait_final(tx_id, timeout=120) for tx_id in ids]
    finally:
        await process.stop()

    assert all(f["transaction"]["status"]["success"] for f in finals), [
        f["transaction"]["status"] for f in finals if not f["transaction"]["status"]["success"]
    ][:3]
    nonces = sorted(int(f["transaction"]["nonce"], 16) for f in finals)
    assert nonces == list(range(first_nonce, first_nonce + CONCURRENT))
    hashes = {f["transaction"]["hash"] for f in finals}
    assert len(hashes) == CONCURRENT
    async with NodeClient(anvil.url) as node:
        assert await node.get_transaction_count(sender, "latest") == first_nonce + CONCURRENT
        receipts = await node.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        assert all(isinstance(r, dict) and r["status"] == "0x1" for r in receipts)
        balances = await node.batch([("eth_getBalance", [r, "latest"]) for r in recipients])
        assert [int(b, 16) for b in balances] == [i + 1 for i in range(CONCURRENT)]
