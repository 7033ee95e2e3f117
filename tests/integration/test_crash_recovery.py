"""A transaction signed but not yet broadcast when the custodian dies is broadcast once after a
restart, with the same hash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from support.custodian import CustodianProcess, Eca3Client, fund, seed
from support.node_proxy import NodeProxy
from support.payloads import eth_transfer
from txgate.chain import Anvil, NodeClient

pytestmark = pytest.mark.integration


async def test_kill_between_sign_and_broadcast(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    seeded = await seed(database_url, accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender])
    proxy = await NodeProxy(anvil.url).start()
    first = second = None
    try:
        first = await CustodianProcess(database_url, proxy.url, tmp_path / "one").start()
        async with Eca3Client(first.url, seeded.refresh_tokens["alice"]) as client:
            tx = eth_transfer(sender)
            tx_id = await client.call(
                "custodian_createTransaction", [tx, {"chainId": hex(anvil.chain_id)}]
            )
            for _ in range(200):
                signed = (await client.call("custodian_getTransactionById", [tx_id]))["transaction"]
                if signed["status"]["signed"] and proxy.held_raw:
                    break
                await asyncio.sleep(0.05)
            assert signed["status"]["signed"] and not signed["status"]["submitted"], signed
        first.kill()  # mid-broadcast: the proxy never answered
        signed_hash = signed["hash"]
        async with NodeClient(anvil.url) as node:
            assert await node.get_transaction(signed_hash) is None, (
                "nothing reached the node before the crash"
            )

        proxy.pass_through()
        second = await CustodianProcess(database_url, proxy.url, tmp_path / "two").start()
        async with Eca3Client(second.url, seeded.refresh_tokens["alice"]) as client:
            final = await client.wait_final(tx_id)
        assert final["transaction"]["status"]["success"], final
        assert final["transaction"]["hash"] == signed_hash
        assert final["transaction"]["signedRawTransaction"] == signed["signedRawTransaction"]
        assert proxy.forwarded_raw == [signed["signedRawTransaction"]], (
            "broadcast exactly once after restart"
        )
        async with NodeClient(anvil.url) as node:
            receipt = await node.get_transaction_receipt(signed_hash)
            assert receipt is not None and receipt["status"] == "0x1"
    finally:
        for process in (first, second):
            if process is not None:
                await process.stop()
        await proxy.stop()
