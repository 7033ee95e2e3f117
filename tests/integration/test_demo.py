"""`txgate up --demo`: anvil and the custodian in one process, the demo organisation seeded,
demo.json written, a transfer through it mined, Ctrl-C stopping everything; a second start
finds the same organisation, tokens and chain state."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account as EthAccount

from support.custodian import Eca3Client
from support.payloads import eth_transfer
from txgate.chain import NodeClient

pytestmark = pytest.mark.integration


async def _start(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    demo_file = data_dir / "demo.json"
    before = demo_file.stat().st_mtime_ns if demo_file.exists() else 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("TXGATE_")}
    env.update({"TXGATE_DATA_DIR": str(data_dir), "TXGATE_POLL_INTERVAL": "0.05"})
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "txgate.cli",
                "up",
                "--demo",
                "--port",
                "0",
                "--anvil-port",
                "0",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(f"txgate up exited early:\n{log.read_text()[-3000:]}")
        if demo_file.exists() and demo_file.stat().st_mtime_ns > before:
            try:
                info = json.loads(demo_file.read_text())
                async with httpx.AsyncClient() as client:
                    base = info["custodian"]["api_url"].removesuffix("/v3/json-rpc")
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        return process, info
            except (ValueError, httpx.TransportError):
                pass
        await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError(f"txgate up did not become ready:\n{log.read_text()[-3000:]}")


async def _interrupt(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return await asyncio.to_thread(process.wait, 30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


async def test_up_demo_end_to_end_and_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "up.log"
    process, info = await _start(data_dir, log)
    try:
        assert info["customer"]["name"] == "Demo Fund"
        assert {(u["name"], u["role"]) for u in info["users"]} == {
            ("admin", "admin"),
            ("alice", "trader"),
            ("bob", "approver"),
            ("carol", "approver"),
        }
        assert len(info["accounts"]) == 3
        assert oct((data_dir / "demo.json").stat().st_mode & 0o777) == "0o600"
        alice = next(u["refresh_token"] for u in info["users"] if u["name"] == "alice")
        base = info["custodian"]["api_url"].removesuffix("/v3/json-rpc")
        async with NodeClient(info["chain"]["rpc_url"]) as node:
            for account in info["accounts"]:
                for _ in range(100):
                    if await node.get_balance(account["address"]) > 0:
                        break
                    await asyncio.sleep(0.05)
                assert await node.get_balance(account["address"]) > 0
        async with Eca3Client(base, alice) as client:
            listed = await client.call("custodian_listAccounts", [])
            assert [a["address"] for a in listed] == [a["address"] for a in info["accounts"]]
            sender = info["accounts"][0]["address"]
            recipient = EthAccount.create().address
            tx = eth_transfer(sender, to=recipient, value=10**15)
            tx_id = await client.call(
                "custodian_createTransaction", [tx, {"chainId": hex(info["chain"]["chain_id"])}]
            )
            assert (await client.wait_final(tx_id))["transaction"]["status"]["success"]
    finally:
        code = await _interrupt(process)
    assert code == 0, log.read_text()[-2000:]
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as client:
            await client.post(
                info["chain"]["rpc_url"], json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
            )
    assert "Traceback" not in log.read_text()

    # Second start: same organisation and tokens; the chain state came back from anvil's state file.
    process, again = await _start(data_dir, log)
    try:
        assert again["customer"] == info["customer"]
        assert again["users"] == info["users"]
        async with NodeClient(again["chain"]["rpc_url"]) as node:
            assert await node.get_balance(recipient) == 10**15
        base = again["custodian"]["api_url"].removesuffix("/v3/json-rpc")
        async with Eca3Client(base, alice) as client:
            assert (await client.call("custodian_getTransactionById", [tx_id]))["transaction"][
                "status"
            ]["success"]
    finally:
        code = await _interrupt(process)
    assert code == 0, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()
