"""`txgate custodian`: serve the ECA-3 custodian and administer customers, users, accounts, tokens."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from txgate.cli import approvals_cmd, nonce_cmd, policy_cmd
from txgate.cli.common import DatabaseUrl, DataDir, configure_logging, console, run, settings_from
from txgate.cli.serving import bind, serve_custodian
from txgate.config import Settings
from txgate.core.errors import InvalidParams
from txgate.core.types import checksum
from txgate.custody import directory, tokens
from txgate.custody.service import Custodian
from txgate.custody.vault import Vault
from txgate.storage.engine import Database

app = typer.Typer(
    help="The custodian: ECA-3 API, keys, policy, signing, broadcast.", no_args_is_help=True
)
token_app = typer.Typer(help="Refresh tokens for wallets and scripts.", no_args_is_help=True)
customer_app = typer.Typer(help="Customers (organisations).", no_args_is_help=True)
user_app = typer.Typer(help="Users of a customer.", no_args_is_help=True)
account_app = typer.Typer(help="Custodial accounts (keys held by the vault).", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(customer_app, name="customer")
app.add_typer(user_app, name="user")
app.add_typer(account_app, name="account")
app.add_typer(nonce_cmd.app, name="nonce")
app.add_typer(approvals_cmd.app, name="approvals")
app.add_typer(policy_cmd.app, name="policy")

ChainUrl = Annotated[
    list[str] | None,
    typer.Option("--chain-url", help="Node JSON-RPC URL (repeat for several chains)"),
]
Customer = Annotated[
    str | None,
    typer.Option("--customer", help="Customer name or id (needed when a name is ambiguous)"),
]
ADMIN = "admin-cli"


@app.command("serve")
def serve(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    chain_url: ChainUrl = None,
    host: Annotated[str | None, typer.Option(envvar="TXGATE_CUSTODIAN_HOST")] = None,
    port: Annotated[int | None, typer.Option(envvar="TXGATE_CUSTODIAN_PORT")] = None,
) -> None:
    """Serve ECA-3 at POST /v3/json-rpc, tokens at /oauth/token, keys at /.well-known/jwks.json."""
    settings = settings_from(
        data_dir,
        database_url=database_url,
        rpc_urls=chain_url or None,
        custodian_host=host,
        custodian_port=port,
    )
    configure_logging(settings)
    if not settings.rpc_urls:
        raise typer.BadParameter(
            "give at least one --chain-url (or TXGATE_RPC_URLS)", param_hint="--chain-url"
        )

    async def work() -> None:
        sock = bind(settings.custodian_host, settings.custodian_port)
        actual = settings.model_copy(update={"custodian_port": sock.getsockname()[1]})
        custodian = await Custodian.open(actual)

        async def ready() -> None:
            console.print(
                f"custodian listening on {actual.custodian_url}  chains: {sorted(custodian.supported_chains)}",
                highlight=False,
            )

        await serve_custodian(custodian, sock, on_ready=ready)

    run(work())


async def _with_db(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url)
    await db.upgrade()
    return db


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="User name or id")],
    customer: Customer = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a new refresh token for USER (shown once; stored only as a hash)."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        db = await _with_db(settings)
        try:
            async with db.transaction() as session:
                owner = (
                    await directory.find_customer(session, name_or_id=customer)
                    if customer
                    else None
                )
                found = await directory.find_user(session, name_or_id=user, customer=owner)
                return await tokens.issue_refresh_token(
                    session, user=found, ttl=settings.refresh_token_ttl, actor=ADMIN
                )
        finally:
            await db.dispose()

    typer.echo(run(work()))


@token_app.command("revoke")
def token_revoke(
    token: Annotated[
        str | None, typer.Argument(help="The refresh or access token to revoke")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Revoke every token of this user")
    ] = None,
    customer: Customer = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke one token, or all tokens of a user."""
    if (token is None) == (user is None):
        raise typer.BadParameter("give either a TOKEN or --user")
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        db = await _with_db(settings)
        try:
            async with db.transaction() as session:
                if token is not None:
                    found = await tokens.revoke(session, token=token, actor=ADMIN)
                    return "revoked" if found else "no such token (nothing to revoke)"
                owner = (
                    await directory.find_customer(session, name_or_id=customer)
                    if customer
                    else None
                )
                person = await directory.find_user(session, name_or_id=user or "", customer=owner)
                await tokens.revoke_user_tokens(session, user_id=person.id, actor=ADMIN)
                return f"revoked every token of {person.name}"
        finally:
            await db.dispose()

    console.print(run(work()))


@customer_app.command("create")
def customer_create(name: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        db = await _with_db(settings)
        try:
            async with db.transaction() as session:
                return (await directory.create_customer(session, name=name, actor=ADMIN)).id
        finally:
            await db.dispose()

    typer.echo(run(work()))


@customer_app.command("list")
def customer_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> list[tuple[str, str]]:
        db = await _with_db(settings)
        try:
            async with db.read() as session:
                return [(c.id, c.name) for c in await directory.list_customers(session)]
        finally:
            await db.dispose()

    table = Table("id", "name")
    for row in run(work()):
        table.add_row(*row)
    console.print(table)


@user_app.command("create")
def user_create(
    name: str,
    customer: Annotated[str, typer.Option("--customer")],
    role: Annotated[
        str, typer.Option("--role", help=f"One of {', '.join(directory.ROLES)}")
    ] = "trader",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        db = await _with_db(settings)
        try:
            async with db.transaction() as session:
                owner = await directory.find_customer(session, name_or_id=customer)
                return (
                    await directory.create_user(
                        session, customer=owner, name=name, role=role, actor=ADMIN
                    )
                ).id
        finally:
            await db.dispose()

    typer.echo(run(work()))


@account_app.command("create")
def account_create(
    name: str,
    customer: Annotated[str, typer.Option("--customer")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a custodial account; prints its address (the key never leaves the vault)."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        db = await _with_db(settings)
        try:
            vault = await open_vault(db, settings)
            async with db.transaction() as session:
                owner = await directory.find_customer(session, name_or_id=customer)
                account = await directory.create_account(
                    session, vault=vault, customer=owner, name=name, actor=ADMIN
                )
                return str(checksum(account.address))
        finally:
            await db.dispose()

    typer.echo(run(work()))


@account_app.command("list")
def account_list(
    customer: Annotated[str, typer.Option("--customer")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> list[tuple[str, str]]:
        db = await _with_db(settings)
        try:
            async with db.read() as session:
                owner = await directory.find_customer(session, name_or_id=customer)
                return [
                    (a.address, a.name)
                    for a in await directory.list_accounts(session, customer_id=owner.id)
                ]
        finally:
            await db.dispose()

    table = Table("address", "name")
    for row in run(work()):
        table.add_row(*row)
    console.print(table)


async def open_vault(db: Database, settings: Settings) -> Vault:
    if settings.vault_passphrase is None and settings.resolved_vault_key_file is None:
        raise InvalidParams(
            "set TXGATE_VAULT_PASSPHRASE or TXGATE_VAULT_KEY_FILE to open the key vault"
        )
    return await Vault.open(
        db.transaction,
        passphrase=settings.vault_passphrase.get_secret_value()
        if settings.vault_passphrase
        else None,
        key_file=settings.resolved_vault_key_file,
    )
