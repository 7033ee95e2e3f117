"""The policy engine and the approval quorum end to end on anvil, on SQLite and PostgreSQL:
a large transfer waits for bob and carol and is mined; a rejected one never reaches the chain; a
blocked one names its rule; separation of duties; one vote per approver; concurrent votes give
one transition; velocity limits at their edges; policy versions with four eyes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from support.custodian import CustodianProcess, Eca3Client, Seeded, fund, seed
from support.payloads import eth_transfer
from txgate.chain import Anvil, NodeClient
from txgate.storage.engine import Database
from txgate.storage.tables import Event

pytestmark = pytest.mark.integration

ETH = 10**18
DEMO_POLICY = (
    Path(__file__).resolve().parents[2] / "src/txgate/cli/data/demo-policy.yaml"
).read_text()
USERS = ("alice", "bob", "carol", "dana", "admin", "admin2")
ROLES = {
    "alice": "trader",
    "bob": "approver",
    "carol": "approver",
    "dana": "approver",
    "admin": "admin",
    "admin2": "admin",
}


@dataclass
class Live:
    process: CustodianProcess
    seeded: Seeded
    anvil: Anvil
    database_url: str
    clients: dict[str, Eca3Client]

    def meta(self) -> dict[str, str]:
        return {"chainId": hex(self.anvil.chain_id)}

    async def rest(
        self, user: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        client = self.clients[user]
        if client.access_token is None:
            await client.login()
        return await client.http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {client.access_token}"}
        )

    async def status(self, tx_id: str) -> dict[str, Any]:
        return dict(
            (await self.clients["alice"].call("custodian_getTransactionById", [tx_id]))[
                "transaction"
            ]
        )


@pytest.fixture
async def live(database_url: str, anvil: Anvil, tmp_path: Path) -> AsyncIterator[Live]:
    seeded = await seed(database_url, users=USERS, roles=ROLES, accounts=1, policy=DEMO_POLICY)
    await fund(anvil.url, seeded.accounts, wei=100 * ETH)
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data").start()
    clients = {
        name: Eca3Client(process.url, token) for name, token in seeded.refresh_tokens.items()
    }
    try:
        yield Live(process, seeded, anvil, database_url, clients)
    finally:
        for client in clients.values():
            await client.http.aclose()
        await process.stop()


async def test_large_transfer_waits_for_both_approvers_then_is_mined(live: Live) -> None:
    sender = live.seeded.accounts[0]
    alice = live.clients["alice"]
    tx_id = await alice.call(
        "custodian_createTransaction", [eth_transfer(sender, value=2 * ETH), live.meta()]
    )
    body = await live.status(tx_id)
    assert (
        body["status"]["displayText"] == "Pending approval: 0 of 2"
        and not body["status"]["finished"]
    )

    # Separation of duties: the initiator and a user outside the group cannot vote.
    assert (await live.rest("alice", "POST", f"/v1/approvals/{tx_id}/approve")).status_code == 403
    assert (await live.rest("dana", "POST", f"/v1/approvals/{tx_id}/approve")).status_code == 403
    listed = (await live.rest("bob", "GET", "/v1/approvals")).json()["approvals"]
    assert [(item["id"], item["mayVote"]) for item in listed] == [(tx_id, True)]

    first = await live.rest("bob", "POST", f"/v1/approvals/{tx_id}/approve")
    assert first.status_code == 200 and first.json()["text"] == "Pending approval: 1 of 2"
    assert (await live.status(tx_id))["status"]["displayText"] == "Pending approval: 1 of 2"
    again = await live.rest("bob", "POST", f"/v1/approvals/{tx_id}/approve")
    assert again.status_code in (403, 409) and "already voted" in again.json()["error"]["message"]

    done = await live.rest("carol", "POST", f"/v1/approvals/{tx_id}/approve")
    assert done.status_code == 200 and done.json()["status"] == "approved"
    final = await alice.wait_final(tx_id)
    assert final["transaction"]["status"]["success"], final
    async with NodeClient(live.anvil.url) as node:
        receipt = await node.get_transaction_receipt(final["transaction"]["hash"])
        assert receipt is not None and receipt["status"] == "0x1"


async def test_rejected_transfer_never_reaches_the_chain(live: Live) -> None:
    sender = live.seeded.accounts[0]
    async with NodeClient(live.anvil.url) as node:
        nonce_before = await node.get_transaction_count(sender, "latest")
    tx_id = await live.clients["alice"].call(
        "custodian_createTransaction", [eth_transfer(sender, value=5 * ETH), live.meta()]
    )
    no_reason = await live.rest("bob", "POST", f"/v1/approvals/{tx_id}/reject", {})
    assert no_reason.status_code == 400
    rejected = await live.rest(
        "bob", "POST", f"/v1/approvals/{tx_id}/reject", {"reason": "not in the plan"}
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    body = await live.status(tx_id)
    assert body["status"]["finished"] and not body["status"]["signed"]
    assert body["status"]["reason"] == "Rejected by bob: not in the plan"
    assert body["hash"] is None and body["nonce"] is None
    late = await live.rest("carol", "POST", f"/v1/approvals/{tx_id}/approve")
    assert late.status_code == 409
    await asyncio.sleep(0.3)
    async with NodeClient(live.anvil.url) as node:
        assert await node.get_transaction_count(sender, "latest") == nonce_before


async def test_blocked_request_names_its_rule(live: Live) -> None:
    sender = live.seeded.accounts[0]
    # A contract call carrying 2 ETH matches no rule of the demo policy: default deny.
    call = {**eth_transfer(sender, value=2 * ETH, gas=100_000), "data": "0xdeadbeef"}
    tx_id = await live.clients["alice"].call("custodian_createTransaction", [call, live.meta()])
    body = await live.status(tx_id)
    assert body["status"]["finished"] and body["status"]["displayText"] == "Blocked"
    assert "default-deny" in body["status"]["reason"]
    # An approver is not a trader: the same small transfer alice may send is blocked for bob.
    tx_id = await live.clients["bob"].call(
        "custodian_createTransaction", [eth_transfer(sender, value=1), live.meta()]
    )
    assert (
        "default-deny"
        in (await live.clients["bob"].call("custodian_getTransactionById", [tx_id]))["transaction"][
            "status"
        ]["reason"]
    )


async def test_concurrent_votes_give_exactly_one_transition(live: Live) -> None:
    sender = live.seeded.accounts[0]
    tx_id = await live.clients["alice"].call(
        "custodian_createTransaction", [eth_transfer(sender, value=3 * ETH), live.meta()]
    )
    answers = await asyncio.gather(
        live.rest("bob", "POST", f"/v1/approvals/{tx_id}/approve"),
        live.rest("carol", "POST", f"/v1/approvals/{tx_id}/approve"),
        live.rest("bob", "POST", f"/v1/approvals/{tx_id}/approve"),
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes[:2] == [200, 200] and codes[2] in (403, 409), [a.text for a in answers]
    assert (await live.clients["alice"].wait_final(tx_id))["transaction"]["status"]["success"]
    db = Database(live.database_url)
    try:
        async with db.read() as session:
            statuses = list(
                (
                    await session.execute(
                        select(Event.status).where(Event.subject_id == tx_id).order_by(Event.seq)
                    )
                ).scalars()
            )
    finally:
        await db.dispose()
    assert statuses.count("approved") == 1
    assert statuses == [
        "created",
        "pending_approval",
        "pending_approval",
        "approved",
        "signed",
        "submitted",
        "mined",
    ]


async def test_permit_to_unknown_spender_needs_one_approver(live: Live) -> None:
    account = live.seeded.accounts[0]
    permit = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {
            "name": "Token",
            "version": "1",
            "chainId": 31337,
            "verifyingContract": "0x" + "11" * 20,
        },
        "message": {
            "owner": account,
            "spender": "0x" + "22" * 20,
            "value": 10**30,
            "nonce": 0,
            "deadline": 2**40,
        },
    }
    alice = live.clients["alice"]
    message_id = await alice.call(
        "custodian_signTypedData", [{"address": account, "data": permit, "version": "v4"}, {}]
    )
    waiting = await alice.call("custodian_getSignedMessageById", [message_id])
    assert (
        not waiting["status"]["signed"]
        and waiting["status"]["displayText"] == "Pending approval: 0 of 1"
    )
    plain = await alice.call(
        "custodian_sign", [{"address": account, "message": "0x68656c6c6f"}, {}]
    )
    assert (await alice.call("custodian_getSignedMessageById", [plain]))["status"]["signed"]

    approved = await live.rest("carol", "POST", f"/v1/approvals/{message_id}/approve")
    assert approved.status_code == 200, approved.text
    signed = await alice.call("custodian_getSignedMessageById", [message_id])
    assert signed["status"]["signed"] and signed["signature"].startswith("0x")
