"""Policy versions end to end, on SQLite and PostgreSQL: velocity limits at their edges, bad
files leaving the current policy in force, four eyes on a new version, approval expiry, and the
approvals CLI acting as the approver over the API."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from support.custodian import CustodianProcess, Eca3Client, Seeded, fund, seed
from support.payloads import eth_transfer
from txgate.audit.log import verify
from txgate.chain import Anvil
from txgate.storage.engine import Database
from txgate.storage.tables import AuditEntry

pytestmark = pytest.mark.integration

ETH = 10**18
VELOCITY_POLICY = """
version: 1
groups:
  traders: [alice]
  admins: [admin, admin2]
governance:
  approvals: {groups: [{group: admins, threshold: 1}]}
rules:
  - name: daily-limit
    match:
      initiator: {groups: [traders]}
      asset: [native]
      velocity: {scope: initiator, window: 24h, max: "3 ether"}
    action: allow
  - name: over-the-limit
    match:
      initiator: {groups: [traders]}
    action: block
    reason: daily limit of 3 ETH reached
"""
NEXT_POLICY = """
version: 1
groups:
  traders: [alice]
  admins: [admin, admin2]
rules:
  - name: anything-small
    match: {amount: {max: "1 ether"}}
    action: allow
"""


@pytest.fixture
async def running(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> AsyncIterator[tuple[CustodianProcess, Seeded]]:
    seeded = await seed(
        database_url,
        users=("alice", "bob", "admin", "admin2"),
        roles={"alice": "trader", "bob": "approver", "admin": "admin", "admin2": "admin"},
        accounts=1,
        policy=VELOCITY_POLICY,
    )
    await fund(anvil.url, seeded.accounts, wei=100 * ETH)
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data").start()
    try:
        yield process, seeded
    finally:
        await process.stop()


async def test_velocity_limit_edges_bad_files_and_four_eyes(
    running: tuple[CustodianProcess, Seeded], anvil: Anvil, database_url: str
) -> None:
    process, seeded = running
    sender = seeded.accounts[0]
    meta = {"chainId": hex(anvil.chain_id)}
    async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as alice:

        async def outcome(value: int) -> dict[str, object]:
            tx_id = await alice.call(
                "custodian_createTransaction", [eth_transfer(sender, value=value), meta]
            )
            return dict((await alice.wait_final(tx_id))["transaction"]["status"])

        # 1 + 1.5 + 0.5 ETH = exactly 3 ETH: just inside the limit.
        for value in (ETH, 3 * ETH // 2, ETH // 2):
            assert (await outcome(value))["success"]
        # One more wei is just outside.
        over = await outcome(1)
        assert not over["success"] and "over-the-limit" in str(over["reason"])

    async with (
        Eca3Client(process.url, seeded.refresh_tokens["admin"]) as admin,
        Eca3Client(process.url, seeded.refresh_tokens["admin2"]) as admin2,
        Eca3Client(process.url, seeded.refresh_tokens["alice"]) as trader,
    ):
        for client in (admin, admin2, trader):
            await client.login()

        async def rest(
            client: Eca3Client, method: str, path: str, body: dict[str, object] | None = None
        ) -> object:
            return await client.http.request(
                method, path, json=body, headers={"Authorization": f"Bearer {client.access_token}"}
            )

        # A bad file is refused with every error named, and version 1 stays in force.
        bad = await rest(
            admin,
            "POST",
            "/v1/policy",
            {
                "source": "version: 1\nrules:\n  - name: x\n    action: allow\n    match: {amont: {max: 1}}\n",
                "format": "yaml",
            },
        )
        assert bad.status_code == 400 and "rules[0]" in bad.json()["error"]["message"]
        # Only an administrator may propose.
        assert (
            await rest(trader, "POST", "/v1/policy", {"source": NEXT_POLICY, "format": "yaml"})
        ).status_code == 403

        proposed = await rest(
            admin, "POST", "/v1/policy", {"source": NEXT_POLICY, "format": "yaml"}
        )
        assert proposed.status_code == 200 and proposed.json()["status"] == "proposed"
        stale_id = proposed.json()["id"]
        newer = await rest(admin, "POST", "/v1/policy", {"source": NEXT_POLICY, "format": "yaml"})
        policy_id = newer.json()["id"]
        versions = (await rest(admin, "GET", "/v1/policy")).json()["versions"]
        assert [(v["version"], v["status"], v["progress"]) for v in versions] == [
            (3, "proposed", "Pending approval: 0 of 1"),
            (2, "proposed", "Pending approval: 0 of 1"),
            (1, "active", None),
        ]
        # Four eyes: the proposer cannot approve their own version; another admin can.
        assert (await rest(admin, "POST", f"/v1/approvals/{policy_id}/approve")).status_code == 403
        approved = await rest(admin2, "POST", f"/v1/approvals/{policy_id}/approve")
        assert approved.status_code == 200, approved.text
        versions = (await rest(admin, "GET", "/v1/policy")).json()["versions"]
        assert [(v["version"], v["status"]) for v in versions] == [
            (3, "active"),
            (2, "superseded"),
            (1, "superseded"),
        ]
        # An older proposal cannot be approved into force after a newer version.
        assert (await rest(admin2, "POST", f"/v1/approvals/{stale_id}/approve")).status_code == 409

        # Version 3 decides now: 2 ETH matches no rule.
        tx_id = await trader.call(
            "custodian_createTransaction", [eth_transfer(sender, value=2 * ETH), meta]
        )
        status = (await trader.wait_final(tx_id))["transaction"]["status"]
        assert "default-deny" in status["reason"]

    db = Database(database_url)
    try:
        async with db.read() as session:
            actions = list(
                (await session.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars()
            )
            assert (await verify(session)).ok
    finally:
        await db.dispose()
    assert actions.count("policy.proposed") == 3 and actions.count("policy.activated") == 2
    assert "approval.approve" in actions


async def test_expiry_and_the_approvals_cli(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> None:
    demo_policy = (
        Path(__file__).resolve().parents[2] / "src/txgate/cli/data/demo-policy.yaml"
    ).read_text()
    seeded = await seed(
        database_url,
        users=("alice", "bob", "carol"),
        roles={"alice": "trader", "bob": "approver", "carol": "approver"},
        accounts=1,
        policy=demo_policy,
    )
    sender = seeded.accounts[0]
    await fund(anvil.url, seeded.accounts, wei=100 * ETH)
    meta = {"chainId": hex(anvil.chain_id)}
    process = await CustodianProcess(
        database_url, anvil.url, tmp_path / "data", extra_env={"TXGATE_APPROVAL_TTL": "3"}
    ).start()
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as alice:
            expiring = await alice.call(
                "custodian_createTransaction", [eth_transfer(sender, value=2 * ETH), meta]
            )
            final = await alice.wait_final(expiring, timeout=30)
            assert final["transaction"]["status"]["displayText"] == "Aborted"
            assert "expired" in final["transaction"]["status"]["reason"]
    finally:
        await process.stop()

    # The same database behind a custodian with the default (long) approval window.
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data2").start()
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as alice:
            waiting = await alice.call(
                "custodian_createTransaction", [eth_transfer(sender, value=2 * ETH), meta]
            )
            cli = [sys.executable, "-m", "txgate.cli", "custodian", "approvals"]
            env = {**os.environ, "TXGATE_CUSTODIAN_URL": process.url}

            def as_user(user: str, *args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [*cli, *args],
                    env={**env, "TXGATE_TOKEN": seeded.refresh_tokens[user]},
                    capture_output=True,
                    text=True,
                )

            listed = as_user("bob", "list")
            assert listed.returncode == 0 and waiting[:8] in listed.stdout, (
                listed.stdout + listed.stderr
            )
            own = as_user("alice", "approve", waiting)
            assert (
                own.returncode == 1 and "initiator" in own.stderr and "Traceback" not in own.stderr
            )
            assert "1 of 2" in as_user("bob", "approve", waiting).stdout
            rejected = as_user("carol", "reject", waiting, "--reason", "too large today")
            assert rejected.returncode == 0 and "rejected" in rejected.stdout
            final = await alice.wait_final(waiting)
            assert final["transaction"]["status"]["reason"] == "Rejected by carol: too large today"
            no_token = subprocess.run(
                [*cli, "list"],
                env={k: v for k, v in env.items() if k != "TXGATE_TOKEN"},
                capture_output=True,
                text=True,
            )
            assert no_token.returncode != 0 and "--token" in no_token.stderr
    finally:
        await process.stop()
