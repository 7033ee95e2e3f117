"""A transaction the node refuses for good gives its nonce back: the cursor steps back when it
was the newest nonce, and a no-op gap filler takes the nonce when later ones are already signed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.custodian import CustodianProcess, Eca3Client, fund, seed
from support.node_proxy import NodeProxy
from support.payloads import eth_transfer
from txgate.chain import Anvil, NodeClient

pytestmark = pytest.mark.integration

ETH = 10**18


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
                await client.call(
                    "custodian_createTransaction", [eth_transfer(sender, value=5 * ETH), meta]
                )
            )
            status = refused["transaction"]["status"]
            assert not status["success"] and "insufficient funds" in status["reason"].lower(), (
                status
            )
            lost_nonce = refused["transaction"]["nonce"]
            mined = await client.wait_final(
                await client.call(
                    "custodian_createTransaction", [eth_transfer(sender, value=1000), meta]
                )
            )
            assert mined["transaction"]["status"]["success"]
            assert mined["transaction"]["nonce"] == lost_nonce

            # 2. A refusal with a later nonce already signed: a filler takes the hole.
            proxy.hold()
            opener = await client.call(
                "custodian_createTransaction", [eth_transfer(sender, value=1000), meta]
            )
            for _ in range(
                200
            ):  # the proxy holds the opener's broadcast, which pauses the pipeline
                if proxy.held_raw:
                    break
                await asyncio.sleep(0.02)
            bad = await client.call(
                "custodian_createTransaction", [eth_transfer(sender, value=5 * ETH), meta]
            )
            good = await client.call(
                "custodian_createTransaction", [eth_transfer(sender, value=2000), meta]
            )
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


async def test_nonce_cli_shows_and_resyncs_cursors(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    seeded = await seed(database_url, accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender], wei=ETH)
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data").start()
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
            tx_id = await client.call(
                "custodian_createTransaction",
                [eth_transfer(sender, value=1), {"chainId": hex(anvil.chain_id)}],
            )
            assert (await client.wait_final(tx_id))["transaction"]["status"]["success"]
    finally:
        await process.stop()
    env = {
        **os.environ,
        "TXGATE_DATABASE_URL": database_url,
        "TXGATE_DATA_DIR": str(tmp_path / "data"),
    }
    cli = [sys.executable, "-m", "txgate.cli", "custodian", "nonce"]
    shown = subprocess.run([*cli, "show"], env=env, capture_output=True, text=True, check=True)
    assert sender in shown.stdout
    resync = [*cli, "resync", "--account", sender, "--chain-url", anvil.url]
    unchanged = subprocess.run(resync, env=env, capture_output=True, text=True, check=True)
    assert "unchanged" in unchanged.stdout

    # The chain moves ahead of the custodian's database (as after restoring an older backup).
    async with NodeClient(anvil.url) as node:
        await node.call("anvil_setNonce", [sender, hex(7)])
    moved = subprocess.run(resync, env=env, capture_output=True, text=True, check=True)
    assert "moved from 1 to 7" in moved.stdout
    bad = subprocess.run(
        [*cli, "resync", "--account", sender, "--chain-url", "http://127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "error" in bad.stderr


async def test_nonce_fill_lets_waiting_transactions_through(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    seeded = await seed(database_url, accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender], wei=ETH)
    async with NodeClient(anvil.url) as node:
        await node.call("anvil_setNonce", [sender, hex(3)])  # the cursor is seeded at 3
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data").start()
    env = {
        **os.environ,
        "TXGATE_DATABASE_URL": database_url,
        "TXGATE_DATA_DIR": str(tmp_path / "data"),
    }
    fill = [
        sys.executable,
        "-m",
        "txgate.cli",
        "custodian",
        "nonce",
        "fill",
        "--account",
        sender,
        "--chain-url",
        anvil.url,
    ]
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
            first = await client.call(
                "custodian_createTransaction",
                [eth_transfer(sender, value=1), {"chainId": hex(anvil.chain_id)}],
            )
            assert (await client.wait_final(first))["transaction"]["nonce"] == "0x3"
            async with NodeClient(anvil.url) as node:
                await node.call("anvil_setNonce", [sender, hex(2)])  # now nonces 2 and 3 are holes
            tx_id = await client.call(
                "custodian_createTransaction",
                [eth_transfer(sender, value=1), {"chainId": hex(anvil.chain_id)}],
            )
            for _ in range(200):
                status = (await client.call("custodian_getTransactionById", [tx_id]))["transaction"]
                if status["status"]["submitted"]:
                    break
                await asyncio.sleep(0.02)
            assert status["nonce"] == "0x4" and not status["status"]["finished"]
            for hole in (2, 3):
                filled = subprocess.run(fill, env=env, capture_output=True, text=True, check=True)
                assert f"at nonce {hole} queued" in filled.stdout, filled.stdout
                async with NodeClient(anvil.url) as node:
                    for _ in range(200):
                        if await node.get_transaction_count(sender, "latest") > hole:
                            break
                        await asyncio.sleep(0.02)
            final = await client.wait_final(tx_id)
            assert final["transaction"]["status"]["success"], final
            nothing = subprocess.run(fill, env=env, capture_output=True, text=True, check=True)
            assert "nothing to fill" in nothing.stdout
    finally:
        await process.stop()
