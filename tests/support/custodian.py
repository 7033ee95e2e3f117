"""A custodian under test: a real `txgate custodian serve` process, seeded in-process, driven
over HTTP with httpx; plus a small ECA-3 client for the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account as EthAccount
from eth_utils import to_checksum_address

from txgate.chain import DEV_ACCOUNTS, Anvil, NodeClient
from txgate.chain.devchain import free_port
from txgate.custody import directory, tokens
from txgate.custody.policy import store as policy_store
from txgate.custody.vault import Vault
from txgate.storage.engine import Database

PASSPHRASE = "correct horse battery staple for tests"

# Tests of the custody pipeline run under a policy that allows everything; the policy engine's
# own tests apply real policies.
ALLOW_ALL_POLICY = """
version: 1
rules:
  - name: allow-all
    action: allow
"""


@dataclass
class Seeded:
    customer_id: str
    customer_name: str
    refresh_tokens: dict[str, str]
    user_ids: dict[str, str]
    accounts: list[str]


async def seed(
    database_url: str,
    *,
    customer: str = "Test Fund",
    users: tuple[str, ...] = ("alice",),
    accounts: int = 2,
    policy: str | None = ALLOW_ALL_POLICY,
    roles: dict[str, str] | None = None,
) -> Seeded:
    """Create a customer with users and accounts directly in the database (as the CLI would)."""
    db = Database(database_url)
    try:
        await db.upgrade()
        vault = await Vault.open(db.transaction, passphrase=PASSPHRASE, key_file=None)
        async with db.transaction() as session:
            owner = await directory.create_customer(session, name=customer, actor="test")
            refresh: dict[str, str] = {}
            ids: dict[str, str] = {}
            for name in users:
                role = (roles or {}).get(name, "trader")
                user = await directory.create_user(
                    session, customer=owner, name=name, role=role, actor="test"
                )
                refresh[name] = await tokens.issue_refresh_token(
                    session, user=user, ttl=None, actor="test"
                )
                ids[name] = user.id
            made = [
                await directory.create_account(
                    session, vault=vault, customer=owner, name=f"Account {i}", actor="test"
                )
                for i in range(accounts)
            ]
            if policy is not None:
                await policy_store.propose(
                    session,
                    customer_id=owner.id,
                    source=policy,
                    format="yaml",
                    proposer="test",
                    actor="test",
                    approval_ttl=3600,
                )
        return Seeded(
            owner.id, owner.name, refresh, ids, [to_checksum_address(a.address) for a in made]
        )
    finally:
        await db.dispose()


async def fund(
    node_url: str, addresses: list[str], *, wei: int = 10**20, funder_index: int = 0
) -> None:
    async with NodeClient(node_url) as node:
        chain_id = await node.chain_id()
        funder = DEV_ACCOUNTS[funder_index]
        nonce = await node.get_transaction_count(funder.address, "pending")
        hashes = []
        for address in addresses:
            signed = EthAccount.sign_transaction(
                {
                    "type": 2,
                    "chainId": chain_id,
                    "nonce": nonce,
                    "to": address,
                    "value": wei,
                    "gas": 21_000,
                    "maxFeePerGas": 10 * 10**9,
                    "maxPriorityFeePerGas": 10**9,
                },
                funder.private_key,
            )
            hashes.append(await node.send_raw_transaction(bytes(signed.raw_transaction)))
            nonce += 1
        for tx_hash in hashes:
            while await node.get_transaction_receipt(tx_hash) is None:
                await asyncio.sleep(0.05)


@dataclass
class CustodianProcess:
    """`txgate custodian serve` in a child process; stopped by its own handle."""

    database_url: str
    chain_url: str
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"custodian-{self.port}.log"

    async def start(self) -> CustodianProcess:
        self.port = free_port("127.0.0.1")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "TXGATE_DATA_DIR": str(self.data_dir),
            "TXGATE_DATABASE_URL": self.database_url,
            "TXGATE_VAULT_PASSPHRASE": PASSPHRASE,
            "TXGATE_RPC_URLS": self.chain_url,
            "TXGATE_CUSTODIAN_PORT": str(self.port),
            "TXGATE_POLL_INTERVAL": "0.05",
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it while it runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "txgate.cli", "custodian", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"custodian exited early:\n{self.log_path.read_text()[-3000:]}"
                    )
                try:
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"custodian did not become ready:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to tidy up (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Eca3Client:
    """A minimal ECA-3 client: refresh → access token, then JSON-RPC calls."""

    def __init__(self, base_url: str, refresh_token: str) -> None:
        self.base_url = base_url
        self.refresh_token = refresh_token
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.access_token: str | None = None
        self.responses: list[str] = []
        self._next_id = 0

    async def __aenter__(self) -> Eca3Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def login(self) -> dict[str, Any]:
        answer = await self.http.post(
            "/oauth/token",
            json={"grant_type": "refresh_token", "refresh_token": self.refresh_token},
        )
        self.responses.append(answer.text)
        answer.raise_for_status()
        grant: dict[str, Any] = answer.json()
        self.access_token = grant["access_token"]
        return grant

    async def raw(self, body: Any, *, content: bytes | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}
        if content is not None:
            answer = await self.http.post(
                "/v3/json-rpc",
                content=content,
                headers={**headers, "content-type": "application/json"},
            )
        else:
            answer = await self.http.post("/v3/json-rpc", json=body, headers=headers)
        self.responses.append(answer.text)
        return answer

    async def call_raw(self, method: str, params: list[Any]) -> dict[str, Any]:
        if self.access_token is None:
            await self.login()
        self._next_id += 1
        answer = await self.raw(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        )
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    async def call(self, method: str, params: list[Any]) -> Any:
        document = await self.call_raw(method, params)
        if "error" in document:
            raise AssertionError(f"{method} failed: {document['error']}")
        return document["result"]

    async def wait_final(self, tx_id: str, *, timeout: float = 60) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            result = await self.call("custodian_getTransactionById", [tx_id])
            if result["transaction"]["status"]["finished"]:
                return dict(result)
            await asyncio.sleep(0.05)
        raise AssertionError(f"transaction {tx_id} not finished after {timeout}s: {result}")


__all__ = ["Anvil", "CustodianProcess", "Eca3Client", "fund", "seed"]
