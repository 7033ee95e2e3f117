"""`SqlVelocity` on SQLite and on a real PostgreSQL: scopes, window edges, counted statuses,
exact sums of 256-bit amounts, and the engine reading through it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from txgate.core.status import Status
from txgate.custody.policy.document import parse_policy
from txgate.custody.policy.engine import DEFAULT_DENY, CompiledPolicy
from txgate.custody.policy.facts import transaction_facts
from txgate.custody.policy.hook import Verdict
from txgate.custody.policy.ledger import COUNTED_STATUSES, SqlVelocity
from txgate.storage.tables import Base, Customer, Transaction, User

POSTGRES_URL = os.environ.get(
    "TXGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
NOW = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
SOURCE = "0x" + "a" * 40
OTHER_SOURCE = "0x" + "b" * 40
DEST = "0x" + "c" * 40
OTHER_DEST = "0x" + "d" * 40
TOKEN = "0x" + "e" * 40


def _asyncpg_dsn(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A fresh database with txgate's tables: a temporary SQLite file, or a throw-away
    PostgreSQL database dropped (WITH FORCE) afterwards."""
    if request.param == "sqlite":
        created = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
        name = None
    else:
        name = f"txgate_policy_test_{uuid.uuid4().hex[:12]}"
        admin = make_url(POSTGRES_URL)
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL, admin.database or "test"))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        created = create_async_engine(
            admin.set(database=name).render_as_string(hide_password=False)
        )
    try:
        async with created.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        yield created
    finally:
        await created.dispose()
        if name is not None:
            connection = await asyncpg.connect(
                _asyncpg_dsn(POSTGRES_URL, make_url(POSTGRES_URL).database or "test")
            )
            try:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await connection.close()


async def seed(session: AsyncSession) -> None:
    for customer in ("c1", "c2"):
        session.add(Customer(id=customer, name=f"Customer {customer}", created_at=NOW))
    for user, customer in (("u1", "c1"), ("u2", "c1"), ("u3", "c2")):
        session.add(User(id=user, customer_id=customer, name=user, role="trader", created_at=NOW))
    await session.flush()


def tx(
    *,
    amount: int,
    at: datetime = NOW,
    status: str = Status.MINED.value,
    customer: str = "c1",
    user: str = "u1",
    source: str = SOURCE,
    destination: str | None = DEST,
    asset: str = "native",
) -> Transaction:
    return Transaction(
        id=str(uuid.uuid4()),
        customer_id=customer,
        user_id=user,
        chain_id=1,
        tx_type=2,
        from_address=source,
        to_address=destination,
        value=amount,
        data=b"",
        gas=21000,
        status=status,
        meta={},
        event_seq=0,
        created_at=at,
        updated_at=at,
        asset=asset,
        amount=amount,
        destination=destination,
    )


async def totals(session: AsyncSession, since: datetime, **query: Any) -> int:
    return await SqlVelocity(session, customer_id="c1").total(since=since, **query)


async def test_sums_per_scope_asset_and_customer(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await seed(session)
        session.add_all(
            [
                tx(amount=1),
                tx(amount=2, user="u2", source=OTHER_SOURCE),
                tx(amount=4, destination=OTHER_DEST),
                tx(amount=8, asset=TOKEN),
                tx(amount=16, customer="c2", user="u3"),  # another customer: never counted
            ]
        )
        await session.flush()
        since = NOW - timedelta(hours=1)
        native = {"asset": "native"}
        assert await totals(session, since, scope="initiator", key="u1", **native) == 5
        assert await totals(session, since, scope="initiator", key="u2", **native) == 2
        assert await totals(session, since, scope="source", key=SOURCE, **native) == 5
        assert await totals(session, since, scope="destination", key=DEST, **native) == 3
        assert await totals(session, since, scope="initiator", key="u1", asset=TOKEN) == 8
        assert await totals(session, since, scope="initiator", key="u3", **native) == 0
        assert await totals(session, since, scope="source", key="0x" + "0" * 40, **native) == 0


async def test_window_edges_to_the_microsecond(engine: AsyncEngine) -> None:
    since = NOW - timedelta(hours=24)
    async with AsyncSession(engine) as session, session.begin():
        await seed(session)
        session.add_all(
            [
                tx(amount=1, at=since),
                tx(amount=10, at=since - timedelta(microseconds=1)),
                tx(amount=100, at=NOW),
            ]
        )
        await session.flush()
        query = {"scope": "source", "key": SOURCE, "asset": "native"}
        assert await totals(session, since, **query) == 101
        assert await totals(session, since + timedelta(microseconds=1), **query) == 100
        # The same instant written in another offset is the same window.
        plus_two = since.astimezone(timezone(timedelta(hours=2)))
        assert await totals(session, plus_two, **query) == 101


async def test_only_requests_that_moved_or_may_move_value_count(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await seed(session)
        for weight, status in enumerate(Status):
            session.add(tx(amount=2**weight, status=status.value))
        await session.flush()
        total = await totals(
            session, NOW - timedelta(days=1), scope="initiator", key="u1", asset="native"
        )
    expected = sum(2**weight for weight, status in enumerate(Status) if status in COUNTED_STATUSES)
    assert total == expected
    assert {s.value for s in COUNTED_STATUSES} == {
        "pending_approval",
        "approved",
        "signed",
        "submitted",
        "mined",
    }


async def test_sums_of_256_bit_amounts_are_exact(engine: AsyncEngine) -> None:
    big = 2**255 - 19
    async with AsyncSession(engine) as session, session.begin():
        await seed(session)
        session.add_all([tx(amount=big), tx(amount=big), tx(amount=3)])
        await session.flush()
        total = await totals(session, NOW, scope="initiator", key="u1", asset="native")
    assert total == 2 * big + 3


async def test_the_engine_reads_velocity_through_the_ledger(engine: AsyncEngine) -> None:
    policy = CompiledPolicy.compile(
        parse_policy(
            {
                "version": 1,
                "rules": [
                    {
                        "name": "daily-limit",
                        "match": {"velocity": {"scope": "initiator", "window": "24h", "max": 10}},
                        "action": "allow",
                    }
                ],
            }
        )
    )
    facts = transaction_facts(
        customer_id="c1",
        initiator="u1",
        initiator_id="u1",
        chain_id=1,
        source=SOURCE,
        to=DEST,
        value=3,
        now=NOW,
    )
    async with AsyncSession(engine) as session, session.begin():
        await seed(session)
        session.add_all(
            [tx(amount=7, at=NOW - timedelta(hours=23)), tx(amount=50, at=NOW - timedelta(days=2))]
        )
        await session.flush()
        ledger = SqlVelocity(session, customer_id="c1")
        assert (await policy.evaluate(facts, velocity=ledger)).verdict is Verdict.ALLOW
        session.add(tx(amount=1, status=Status.PENDING_APPROVAL.value))
        await session.flush()
        assert (await policy.evaluate(facts, velocity=ledger)).rule == DEFAULT_DENY


async def test_bad_queries_are_refused(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        ledger = SqlVelocity(session, customer_id="c1")
        with pytest.raises(ValueError, match="scope"):
            await ledger.total(scope="team", key="x", asset="native", since=NOW)
        with pytest.raises(ValueError, match="timezone"):
            await ledger.total(
                scope="source", key="x", asset="native", since=NOW.replace(tzinfo=None)
            )
