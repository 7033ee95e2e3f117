"""A transaction the node refuses for good gives its nonce back: the cursor steps back when it
was the newest nonce, and a no-op gap filler takes the nonce when later ones are already signed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account as EthAccount

from support.custodian import CustodianProcess, Eca3Client, fund, seed
from support.node_proxy import NodeProxy
from txgate.chain import Anvil, NodeClient

pytestmark = pytest.mark.integration

ETH = 10**18


def _transfer(sender: str, value: int) -> dict[str, Any]:
    return {
        "from": sender,
        "to": EthAccount.create().address,
        "type": "0x2",
        "value": hex(value),
        "gas": hex(21_000),
        "maxFeePerGas": hex(20 * 10**9),
        "maxPriorityFeePerGas": hex(10**9),
    }


async def test_refused_transaction_gives_its_nonce_back(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    seeded = await seed(database_url, accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender], wei=ETH)
    meta = {"chainId": hex(anvil.chain_id)}
    proxy = await NodeProxy(anvil.url).start()
    proxy.pass_through()
    process = await CustodianProcess(database_url, proxy.url, tmp_path / "data").start()
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
            # 1. The newest nonce is refused: the next transaction reuses it.
            refused = await client.wait_final(
                await client.call("custodian_createTransaction", [_transfer(sender, 5 * ETH), meta])
            )
            status = refused["transaction"]["status"]
            assert not status["success"] and "insufficient funds" in status["reason"].lower(), (
                status
            )
            lost_nonce = refused["transaction"]["nonce"]
            mined = await client.wait_final(
                await client.call("custodian_createTransaction", [_transfer(sender, 1000), meta])
            )
            assert mined["transaction"]["status"]["success"]
            assert mined["transaction"]["nonce"] == lost_nonce

            # 2. A refusal with a later nonce already signed: a filler takes the hole.
            proxy.hold()
            opener = await client.call(
                "custodian_createTransaction", [_transfer(sender, 1000), meta]
            )
            for _ in range(
                200
            ):  # the proxy holds the opener's broadcast, which pauses the pipeline
                if proxy.held_raw:
                    break
                await asyncio.sleep(0.02)
            bad = await client.call(
                "custodian_createTransaction", [_transfer(sender, 5 * ETH), meta]
            )
            good = await client.call("custodian_createTransaction", [_transfer(sender, 2000), meta])
            proxy.release()
            results = {
                name: await client.wait_final(tx_id)
                for name, tx_id in (("opener", opener), ("bad", bad), ("good", good))
            }
    finally:
        await process.stop()
        await proxy.stop()

    assert results["opener"]["transaction"]["status"]["success"]
    assert not results["bad"]["transaction"]["status"]["success"]
    assert results["good"]["transaction"]["status"]["success"], results["good"]
    bad_nonce = int(results["bad"]["transaction"]["nonce"], 16)
    assert int(results["good"]["transaction"]["nonce"], 16) == bad_nonce + 1
    async with NodeClient(anvil.url) as node:
        assert await node.get_transaction_count(sender, "latest") == bad_nonce + 2
        # The hole was filled by a zero-value transfer to the account itself.
        head = await node.block_number()
        fillers = []
        for number in range(max(0, head - 10), head + 1):
            block = await node.get_block(hex(number), full_transactions=True)
            fillers += [
                t
                for t in block["transactions"]
                if t["from"].lower() == sender.lower() and int(t["nonce"], 16) == bad_nonce
            ]
        assert len(fillers) == 1
        assert fillers[0]["to"].lower() == sender.lower() and int(fillers[0]["value"], 16) == 0
