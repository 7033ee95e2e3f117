"""The hash-chained audit log on SQLite and, when it answers, PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from txgate.audit import GENESIS_HASH, VerifyReport, append, entry_hash, export, verify
from txgate.storage.tables import AuditEntry, AuditHead, Base

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
LOG = cast(Table, AuditEntry.__table__)


def _refused(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, ConnectionRefusedError):
            return True
        error = error.__cause__ or error.__context__
    return False


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/a.db")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield engine
        await engine.dispose()
        return

    schema = f"txgate_audit_test_{secrets.token_hex(6)}"
    admin = create_async_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        await admin.dispose()
        if _refused(exc):
            pytest.skip(f"PostgreSQL refused the connection at {PG_URL}")
        raise
    engine = create_async_engine(PG_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False).begin


async def _append_many(sessions: SessionFactory, count: int) -> None:
    async with sessions() as session:
        for n in range(count):
            await append(
                session,
                actor=f"user:{n % 3}",
                action="transaction.approve",
                subject=f"tx:{n}",
                details={"n": n, "value": 10**30 + n, "nested": {"ok": [1, "two", None]}},
            )


async def _verify(sessions: SessionFactory, **kwargs: Any) -> VerifyReport:
    async with sessions() as session:
        return await verify(session, **kwargs)


async def _execute(sessions: SessionFactory, statement: Any) -> None:
    async with sessions() as session:
        await session.execute(statement)


async def test_empty_log_verifies(sessions: SessionFactory) -> None:
    assert await _verify(sessions) == VerifyReport(ok=True, count=0)


async def test_append_chains_entries(sessions: SessionFactory) -> None:
    async with sessions() as session:
        first = await append(session, actor="admin", action="vault.open", subject="vault")
        second = await append(
            session, actor="admin", action="account.create", subject="0xabc", details={"a": 1}
        )
    assert (first.id, second.id) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.details == {}
    async with sessions() as session:
        head = (await session.execute(select(AuditHead))).scalar_one()
        assert (head.id, head.count, head.last_hash) == (1, 2, second.hash)


async def test_append_many_then_verify(sessions: SessionFactory) -> None:
    await _append_many(sessions, 10)
    await _append_many(sessions, 15)
    report = await _verify(sessions, page_size=7)
    assert report == VerifyReport(ok=True, count=25, first_bad_id=None, problem=None)


async def test_export_recomputes(sessions: SessionFactory) -> None:
    await _append_many(sessions, 12)
    async with sessions() as session:
        records = [record async for record in export(session, page_size=5)]
        later = [record["id"] async for record in export(session, since_id=9)]
    assert [record["id"] for record in records] == list(range(1, 13))
    assert later == [10, 11, 12]
    previous = GENESIS_HASH
    for record in records:
        assert record["at"].endswith("+00:00")
        assert record["prev_hash"] == previous
        fields = {k: v for k, v in record.items() if k != "hash"}
        fields["at"] = datetime.fromisoformat(record["at"])
        assert entry_hash(**fields) == record["hash"]
        previous = record["hash"]
    assert records[3]["details"] == {
        "n": 3,
        "value": 10**30 + 3,
        "nested": {"ok": [1, "two", None]},
    }


async def test_hash_is_over_canonical_json(sessions: SessionFactory) -> None:
    async with sessions() as session:
        entry = await append(
            session, actor="a", action="b", subject="c", details={"z": 1, "a": (1, 2)}
        )
    at = entry.at.astimezone(UTC).isoformat(timespec="microseconds")
    canonical = (
        f'{{"action":"b","actor":"a","at":"{at}","details":{{"a":[1,2],"z":1}},'
        f'"id":1,"prev_hash":"{GENESIS_HASH}","subject":"c"}}'
    )
    assert entry.hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert (await _verify(sessions)).ok


async def test_tampered_details_named(sessions: SessionFactory) -> None:
    await _append_many(sessions, 20)
    await _execute(sessions, update(LOG).where(LOG.c.id == 7).values(details={"n": 700}))
    report = await _verify(sessions, page_size=4)
    assert not report.ok
    assert report.first_bad_id == 7
    assert report.count == 6
    assert report.problem == "row 7: hash does not match its contents"


async def test_rehashed_row_breaks_the_next_link(sessions: SessionFactory) -> None:
    await _append_many(sessions, 10)
    async with sessions() as session:
        row = (await session.execute(select(LOG).where(LOG.c.id == 4))).one()
        forged = entry_hash(
            id=4,
            at=row.at,
            actor="mallory",
            action=row.action,
            subject=row.subject,
            details=row.details,
            prev_hash=row.prev_hash,
        )
        await session.execute(update(LOG).where(LOG.c.id == 4).values(actor="mallory", hash=forged))
    report = await _verify(sessions)
    assert report.first_bad_id == 5
    assert report.problem == "row 5: prev_hash does not match the hash of row 4"


async def test_deleted_middle_row_named(sessions: SessionFactory) -> None:
    await _append_many(sessions, 20)
    await _execute(sessions, delete(LOG).where(LOG.c.id == 12))
    report = await _verify(sessions, page_size=5)
    assert (report.ok, report.first_bad_id, report.problem) == (False, 12, "row 12 is missing")


async def test_deleted_last_row_detected_by_head(sessions: SessionFactory) -> None:
    await _append_many(sessions, 20)
    await _execute(sessions, delete(LOG).where(LOG.c.id >= 19))
    report = await _verify(sessions)
    assert not report.ok
    assert report.first_bad_id == 19
    assert report.problem is not None
    assert report.problem.startswith("row 19 is missing")
    assert "cut off" in report.problem


async def test_row_beyond_head_detected(sessions: SessionFactory) -> None:
    await _append_many(sessions, 3)
    async with sessions() as session:
        head = (await session.execute(select(AuditHead))).scalar_one()
        at = datetime.now(UTC)
        fields: dict[str, Any] = {
            "id": 4,
            "at": at,
            "actor": "x",
            "action": "y",
            "subject": "z",
            "details": {},
            "prev_hash": head.last_hash,
        }
        session.add(AuditEntry(**fields, hash=entry_hash(**fields)))
    report = await _verify(sessions)
    assert (report.first_bad_id, report.problem) == (
        4,
        "row 4 is not recorded in the head (3 rows)",
    )


async def test_head_hash_mismatch(sessions: SessionFactory) -> None:
    await _append_many(sessions, 3)
    await _execute(sessions, update(AuditHead).values(last_hash="f" * 64))
    report = await _verify(sessions)
    assert (report.first_bad_id, report.problem) == (3, "the head's last hash does not match row 3")


async def test_missing_head_detected(sessions: SessionFactory) -> None:
    await _append_many(sessions, 2)
    await _execute(sessions, delete(AuditHead))
    report = await _verify(sessions)
    assert (report.ok, report.problem) == (False, "the audit head is missing, but the log has rows")


@pytest.mark.parametrize(
    "details",
    [
        {"private_key": "0x01"},
        {"privateKey": "0x01"},
        {"passphrase": "x"},
        {"db": {"password": "x"}},
        {"hooks": [{"whsec": 1, "signing_secret": "x"}]},
        {"token": "x"},
        {"accessToken": "x"},
        {"refresh-token": "x"},
        {"API_KEY": "x"},
        {"mnemonic": "x"},
    ],
)
async def test_secret_keys_refused(sessions: SessionFactory, details: dict[str, Any]) -> None:
    async with sessions() as session:
        with pytest.raises(ValueError, match="looks like a secret"):
            await append(session, actor="a", action="b", subject="c", details=details)
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(LOG))).scalar_one() == 0


async def test_token_addresses_allowed(sessions: SessionFactory) -> None:
    details = {"token_address": "0xa0b8", "tokenId": 5, "key_id": "k1", "tokens": ["0xa0b8"]}
    async with sessions() as session:
        entry = await append(session, actor="a", action="b", subject="c", details=details)
    assert entry.details == details


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"details": {"x": float("nan")}}, "plain JSON"),
        ({"details": {"x": object()}}, "plain JSON"),
        ({"details": {1: "x"}}, "not a string"),
        ({"actor": "a" * 201}, "actor must be 1 to 200"),
        ({"action": ""}, "action must be 1 to 80"),
    ],
)
async def test_bad_entries_refused(
    sessions: SessionFactory, kwargs: dict[str, Any], match: str
) -> None:
    arguments: dict[str, Any] = {"actor": "a", "action": "b", "subject": "c", **kwargs}
    async with sessions() as session:
        with pytest.raises(ValueError, match=match):
            await append(session, **arguments)


async def test_concurrent_appends_keep_one_chain(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time; the row lock matters on PostgreSQL")
    sessions = async_sessionmaker(engine, expire_on_commit=False).begin

    async def one(n: int) -> None:
        async with sessions() as session:
            await append(session, actor="bot", action="poke", subject=str(n))

    await asyncio.gather(*(one(n) for n in range(12)))
    assert await _verify(sessions) == VerifyReport(ok=True, count=12)


# -- property: any single-field change is reported at exactly that row --------------------------

_TEXT = st.text(alphabet="abcxyz:._-", min_size=1, max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_ENTRY = st.fixed_dictionaries(
    {
        "actor": _TEXT,
        "action": _TEXT,
        "subject": _TEXT,
        "details": st.none() | st.dictionaries(_TEXT, _JSON, max_size=3),
    }
)
_FIELDS = ["id", "at", "actor", "action", "subject", "details", "prev_hash", "hash"]


def _tampered(field: str, row: Any) -> Any:
    if field == "id":
        return 10**9
    if field == "at":
        return row.at + timedelta(microseconds=1)
    if field == "details":
        return {**row.details, "tampered": True}
    if field in ("prev_hash", "hash"):
        return hashlib.sha256(secrets.token_bytes(8)).hexdigest()
    return getattr(row, field) + "!"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    entries=st.lists(_ENTRY, min_size=1, max_size=12),
    batches=st.integers(1, 3),
    data=st.data(),
)
async def test_property_single_change_named(
    sessions: SessionFactory, entries: list[dict[str, Any]], batches: int, data: st.DataObject
) -> None:
    async with sessions() as session:  # the fixture's database outlives one example
        await session.execute(delete(LOG))
        await session.execute(delete(AuditHead))
    for start in range(batches):
        async with sessions() as session:
            for entry in entries[start::batches]:
                await append(session, **entry)
    assert await _verify(sessions, page_size=4) == VerifyReport(ok=True, count=len(entries))

    row_id = data.draw(st.integers(1, len(entries)), label="row")
    field = data.draw(st.sampled_from(_FIELDS), label="field")
    async with sessions() as session:
        row = (await session.execute(select(LOG).where(LOG.c.id == row_id))).one()
        await session.execute(
            update(LOG).where(LOG.c.id == row_id).values({field: _tampered(field, row)})
        )
    report = await _verify(sessions, page_size=4)
    assert not report.ok
    assert report.first_bad_id == row_id, report.problem
    assert report.count == row_id - 1
