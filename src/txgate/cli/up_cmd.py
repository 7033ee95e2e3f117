"""`txgate up`: the dev chain and the custodian in one process, with a seeded demo organisation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account import Account as EthAccount
from sqlalchemy import select

from txgate.chain import DEV_ACCOUNTS, Anvil, NodeClient
from txgate.cli.common import DatabaseUrl, DataDir, configure_logging, console, run, settings_from
from txgate.cli.serving import bind, serve_custodian
from txgate.config import Settings
from txgate.core.types import checksum
from txgate.custody import directory, tokens
from txgate.custody.policy import store as policy_store
from txgate.custody.service import Custodian
from txgate.custody.vault import create_key_file
from txgate.storage.tables import Customer

DEMO_CUSTOMER = "Demo Fund"
DEMO_USERS = (("admin", "admin"), ("alice", "trader"), ("bob", "approver"), ("carol", "approver"))
DEMO_ACCOUNTS = ("Treasury", "Trading", "Operations")
DEMO_FUNDING_WEI = 100 * 10**18
DEMO_POLICY = Path(__file__).parent / "data" / "demo-policy.yaml"


def up(
    demo: Annotated[
        bool, typer.Option("--demo", help="Seed the demo organisation on first run")
    ] = False,
    chain_url: Annotated[
        str | None, typer.Option("--chain-url", help="Use this node instead of starting anvil")
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    port: Annotated[
        int | None, typer.Option("--port", envvar="TXGATE_CUSTODIAN_PORT", help="Custodian port")
    ] = None,
    anvil_port: Annotated[
        int | None, typer.Option("--anvil-port", envvar="TXGATE_ANVIL_PORT")
    ] = None,
) -> None:
    """Run everything on this machine until Ctrl-C."""
    settings = settings_from(
        data_dir, database_url=database_url, custodian_port=port, anvil_port=anvil_port
    )
    configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.vault_passphrase is None and settings.resolved_vault_key_file is None:
        key_file = settings.data_dir / "vault.key"
        create_key_file(key_file)
        console.print(
            f"created vault key file {key_file} (keep it apart from backups of the database)"
        )
    run(_up(settings, demo=demo, chain_url=chain_url))


async def _up(settings: Settings, *, demo: bool, chain_url: str | None) -> None:
    anvil: Anvil | None = None
    if chain_url is None:
        state = settings.data_dir / "anvil-state.json"
        # --state loads the chain at start and writes it back at exit, so the chain and the
        # custodian's database (nonces, hashes) stay consistent across runs.
        anvil = Anvil(port=settings.anvil_port, extra_args=["--state", str(state)])
        await anvil.start()
        chain_url = anvil.url
    try:
        sock = bind(settings.custodian_host, settings.custodian_port)
        settings = settings.model_copy(
            update={"custodian_port": sock.getsockname()[1], "rpc_urls": [chain_url]}
        )
        custodian = await Custodian.open(settings)

        async def ready() -> None:
            if demo:
                info = await seed_demo(custodian, chain_url=chain_url)
                console.print_json(json.dumps(info))
            console.print(
                f"custodian: {settings.custodian_url}/v3/json-rpc   chain: {chain_url}   (Ctrl-C stops)",
                highlight=False,
            )

        await serve_custodian(custodian, sock, on_ready=ready)
    finally:
        if anvil is not None:
            await anvil.stop()


async def seed_demo(custodian: Custodian, *, chain_url: str) -> dict[str, Any]:
    """Create the demo organisation once; fund its accounts; write `<data dir>/demo.json`."""
    settings = custodian.settings
    path = settings.data_dir / "demo.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    async with custodian.db.transaction() as session:
        customer = (
            await session.execute(select(Customer).where(Customer.name == DEMO_CUSTOMER))
        ).scalar_one_or_none()
        fresh = customer is None
        if customer is None:
            customer = await directory.create_customer(session, name=DEMO_CUSTOMER, actor="demo")
            for name, role in DEMO_USERS:
                await directory.create_user(
                    session, customer=customer, name=name, role=role, actor="demo"
                )
            for name in DEMO_ACCOUNTS:
                await directory.create_account(
                    session, vault=custodian.vault, customer=customer, name=name, actor="demo"
                )
        known_tokens = (
            {user["name"]: user["refresh_token"] for user in previous.get("users", [])}
            if not fresh
            else {}
        )
        users = []
        for user in await directory.list_users(session, customer=customer):
            token = known_tokens.get(user.name) or await tokens.issue_refresh_token(
                session, user=user, ttl=settings.refresh_token_ttl, actor="demo"
            )
            users.append({"name": user.name, "role": user.role, "refresh_token": token})
        policy_file = settings.data_dir / "demo-policy.yaml"
        if not policy_file.exists():
            policy_file.write_text(DEMO_POLICY.read_text())
        if await policy_store.active(session, customer_id=customer.id) is None:
            await policy_store.propose(
                session,
                customer_id=customer.id,
                source=policy_file.read_text(),
                format="yaml",
                proposer="admin",
                actor="demo",
                approval_ttl=settings.approval_ttl,
            )
        accounts = [
            {"address": checksum(a.address), "name": a.name}
            for a in await directory.list_accounts(session, customer_id=customer.id)
        ]
    chain_id = next(iter(custodian.nodes))
    await _fund(custodian.nodes[chain_id], chain_id, [a["address"] for a in accounts])
    info = {
        "chain": {"rpc_url": chain_url, "chain_id": chain_id},
        "custodian": {
            "api_url": f"{settings.custodian_url}/v3/json-rpc",
            "token_url": f"{settings.custodian_url}/oauth/token",
            "jwks_url": f"{settings.custodian_url}/.well-known/jwks.json",
        },
        "customer": {"id": customer.id, "name": customer.name},
        "users": users,
        "accounts": accounts,
        "policy": {"file": str(policy_file.resolve())},
    }
    _write_private(path, json.dumps(info, indent=2) + "\n")
    return info


async def _fund(node: NodeClient, chain_id: int, addresses: list[str]) -> None:
    """Top each account up to the demo balance from anvil's first dev account."""
    funder = DEV_ACCOUNTS[0]
    nonce = await node.get_transaction_count(funder.address, "pending")
    max_fee, priority = await node.fee_suggestion()
    for address in addresses:
        if await node.get_balance(address) >= DEMO_FUNDING_WEI // 2:
            continue
        signed = EthAccount.sign_transaction(
            {
                "type": 2,
                "chainId": chain_id,
                "nonce": nonce,
                "to": address,
                "value": DEMO_FUNDING_WEI,
                "gas": 21_000,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": priority,
            },
            funder.private_key,
        )
        await node.send_raw_transaction(bytes(signed.raw_transaction))
        nonce += 1


def _write_private(path: Path, text: str) -> None:
    """demo.json holds refresh tokens: owner-only permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
