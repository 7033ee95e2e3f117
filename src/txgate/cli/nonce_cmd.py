"""`txgate custodian nonce`: look at and repair the nonce cursors of custodial accounts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from txgate.audit.log import append as audit
from txgate.chain import NodeClient
from txgate.cli.common import DatabaseUrl, DataDir, console, run, settings_from
from txgate.core.status import Status
from txgate.core.types import checksum, normalise_address, parse_address
from txgate.custody.nonces import add_gap_filler, lock_cursor
from txgate.storage.engine import Database
from txgate.storage.tables import NonceCursor, Transaction

app = typer.Typer(help="Nonce cursors per account and chain.", no_args_is_help=True)

_IN_FLIGHT = (Status.APPROVED.value, Status.SIGNED.value, Status.SUBMITTED.value)


@app.command("show")
def show(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Each account's next nonce per chain and how many of its transactions are in flight."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> list[tuple[str, str, str, str]]:
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
            async with db.read() as session:
                cursors = (
                    await session.execute(select(NonceCursor).order_by(NonceCursor.address))
                ).scalars()
                rows: list[tuple[str, str, str, str]] = []
                for cursor in cursors:
                    in_flight = (
                        await session.execute(
                            select(func.count())
                            .select_from(Transaction)
                            .where(
                                Transaction.chain_id == cursor.chain_id,
                                Transaction.from_address == cursor.address,
                                Transaction.status.in_(_IN_FLIGHT),
                            )
                        )
                    ).scalar_one()
                    rows.append(
                        (
                            checksum(cursor.address),
                            str(cursor.chain_id),
                            str(cursor.next_nonce),
                            str(in_flight),
                        )
                    )
                return rows
        finally:
            await db.dispose()

    table = Table("account", "chain", "next nonce", "in flight")
    for row in run(work()):
        table.add_row(*row)
    console.print(table)


@app.command("resync")
def resync(
    account: Annotated[str, typer.Option("--account", help="Account address")],
    chain_url: Annotated[
        str, typer.Option("--chain-url", help="Node of the chain to read the nonce from")
    ],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Move the cursor up to the chain's pending nonce (after restoring an older database backup).

    The cursor only ever moves forward here: a lower chain nonce means transactions the node has
    not seen yet, which the pipeline re-broadcasts by itself."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        address = normalise_address(parse_address(account, param="--account"))
        async with NodeClient(chain_url) as node:
            chain_id = await node.chain_id()
            pending = await node.get_transaction_count(address, "pending")
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
            async with db.transaction() as session:
                cursor = await lock_cursor(session, chain_id, address)
                if cursor is None:
                    return "no cursor yet: the first transaction will read the nonce from the chain"
                if cursor.next_nonce >= pending:
                    return f"cursor at {cursor.next_nonce} is not behind the chain ({pending}); unchanged"
                before = cursor.next_nonce
                cursor.next_nonce = pending
                await audit(
                    session,
                    actor="admin-cli",
                    action="nonce.resynced",
                    subject=f"account:{address}",
                    details={"chain_id": chain_id, "from": before, "to": pending},
                )
                return f"cursor moved from {before} to {pending}"
        finally:
            await db.dispose()

    console.print(run(work()))


@app.command("fill")
def fill(
    account: Annotated[str, typer.Option("--account", help="Account address")],
    chain_url: Annotated[str, typer.Option("--chain-url", help="Node of the chain with the hole")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Fill the hole at the chain's next nonce with a zero-value self-transfer, so transactions
    waiting behind it can be mined (after the automatic filler was refused for lack of gas).
    A running custodian signs and sends the filler."""
    settings = settings_from(data_dir, database_url=database_url)

    async def work() -> str:
        address = normalise_address(parse_address(account, param="--account"))
        async with NodeClient(chain_url) as node:
            chain_id = await node.chain_id()
            hole = await node.get_transaction_count(address, "latest")
            max_fee, priority = await node.fee_suggestion()
        db = Database(settings.resolved_database_url)
        try:
            await db.upgrade()
            async with db.transaction() as session:
                await lock_cursor(session, chain_id, address)
                mine = select(Transaction).where(
                    Transaction.chain_id == chain_id, Transaction.from_address == address
                )
                holder = (
                    await session.execute(
                        mine.where(Transaction.nonce == hole, Transaction.status.in_(_IN_FLIGHT))
                    )
                ).scalar_one_or_none()
                if holder is not None:
                    return (
                        f"nonce {hole} is already held by transaction {holder.id} ({holder.status})"
                    )
                waiting = (
                    await session.execute(
                        mine.where(Transaction.nonce > hole, Transaction.status.in_(_IN_FLIGHT))
                        .order_by(Transaction.nonce)
                        .limit(1)
                    )
                ).scalar_one_or_none()
                if waiting is None:
                    return f"no transaction waits behind nonce {hole}: nothing to fill"
                filler = await add_gap_filler(
                    session,
                    waiting,
                    nonce=hole,
                    max_fee=max_fee,
                    priority_fee=priority,
                    actor="admin-cli",
                )
                return f"filler {filler.id} at nonce {hole} queued for signing"
        finally:
            await db.dispose()

    console.print(run(work()))
