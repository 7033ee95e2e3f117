"""The hash-chained audit log: append inside the caller's transaction, verify, export.

Every entry carries the hash of the entry before it (`prev_hash`; the first one `"0" * 64`) and
its own `hash`: the SHA-256 hex of the canonical JSON (keys sorted, no spaces, ASCII, no NaN) of

    {"id", "at", "actor", "action", "subject", "details", "prev_hash"}

with `at` as ISO-8601 UTC with microseconds (`2025-01-31T12:00:00.000000+00:00`). `entry_hash`
computes it, so an exported log can be checked without txgate.

The `audit_head` row (id 1) holds the number of entries and the newest hash. `append` locks it
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite serialises writers itself), so ids are gap-free
and concurrent appends cannot fork the chain; the head also makes a cut-off tail detectable.

Secrets never enter the log: `append` refuses details with keys named like a secret.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Executable, Text, cast, func, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.storage.tables import AuditEntry, AuditHead

__all__ = ["GENESIS_HASH", "VerifyReport", "append", "entry_hash", "export", "verify"]

GENESIS_HASH = "0" * 64
HEAD_ID = 1
PAGE_SIZE = 1000

_LIMITS = {"actor": 200, "action": 80, "subject": 200}
# A details key is refused when one of its words (camelCase and snake_case split) is one of
# these, when it contains one of the word pairs, or when it ends in "token". `token_address` and
# `token_id` stay allowed: an ERC-20 token is not a secret.
_SECRET_WORDS = frozenset(
    {
        "passphrase",
        "password",
        "passwd",
        "secret",
        "secrets",
        "mnemonic",
        "privatekey",
        "privkey",
        "apikey",
    }
)
_SECRET_PAIRS = frozenset(
    {("private", "key"), ("secret", "key"), ("api", "key"), ("seed", "phrase")}
)
_SECRET_LAST_WORDS = frozenset({"token"})
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify`. `count` is the number of entries that verified (all of them when
    `ok`); `first_bad_id` and `problem` name the first entry that did not, in plain words."""

    ok: bool
    count: int
    first_bad_id: int | None = None
    problem: str | None = None


def entry_hash(
    *,
    id: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """The SHA-256 hex of an entry's canonical JSON (see the module docstring)."""
    record = {
        "id": id,
        "at": _utc(at).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(_canonical(record).encode()).hexdigest()


async def append(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry inside the caller's transaction (the caller commits).

    Raises `ValueError` when `details` holds a secret-like key or is not plain JSON, or when a
    text field is too long for its column; nothing is written then.
    """
    for name, value in (("actor", actor), ("action", action), ("subject", subject)):
        if not isinstance(value, str) or not value or len(value) > _LIMITS[name]:
            raise ValueError(f"audit {name} must be 1 to {_LIMITS[name]} characters")
    clean = _clean_details(details)
    head = await _lock_head(session)
    entry = AuditEntry(
        id=head.count + 1,
        at=datetime.now(UTC),
        actor=actor,
        action=action,
        subject=subject,
        details=clean,
        prev_hash=head.last_hash,
    )
    entry.hash = entry_hash(
        id=entry.id,
        at=entry.at,
        actor=actor,
        action=action,
        subject=subject,
        details=clean,
        prev_hash=entry.prev_hash,
    )
    session.add(entry)
    head.count = entry.id
    head.last_hash = entry.hash
    # No flush here: a group commit appends many entries and they are inserted together.
    return entry


async def verify(session: AsyncSession, *, page_size: int = PAGE_SIZE) -> VerifyReport:
    """Walk the log in id order, a page at a time, and report the first entry that breaks it:
    a hash that does not match its contents, a missing id, a broken `prev_hash` link, or a tail
    that disagrees with the head. Entries appended while `verify` runs are not checked."""
    head = (
        await session.execute(
            select(AuditHead.count, AuditHead.last_hash).where(AuditHead.id == HEAD_ID)
        )
    ).one_or_none()
    head_count, head_hash = (int(head[0]), str(head[1])) if head is not None else (0, GENESIS_HASH)
    last_id, last_hash = 0, GENESIS_HASH

    def bad(row_id: int | None, problem: str) -> VerifyReport:
        return VerifyReport(ok=False, count=last_id, first_bad_id=row_id, problem=problem)

    async for record in _records(session, after_id=None, until_id=head_count, page_size=page_size):
        row_id = record["id"]
        expected = last_id + 1
        if row_id < expected:
            return bad(row_id, f"row {row_id} has an id outside the log (ids start at 1)")
        if row_id > expected:
            return bad(expected, f"row {expected} is missing")
        if "unreadable" in record:
            return bad(row_id, f"row {row_id}: {record['unreadable']}")
        if _record_hash(record) != record["hash"]:
            return bad(row_id, f"row {row_id}: hash does not match its contents")
        if record["prev_hash"] != last_hash:
            link = "the start of the chain" if row_id == 1 else f"the hash of row {row_id - 1}"
            return bad(row_id, f"row {row_id}: prev_hash does not match {link}")
        last_id, last_hash = row_id, record["hash"]

    if last_id < head_count:
        return bad(
            last_id + 1,
            f"row {last_id + 1} is missing: the head records {head_count} rows "
            f"but the log ends at row {last_id} (its tail was cut off)",
        )
    if last_hash != head_hash:
        return bad(last_id, f"the head's last hash does not match row {last_id}")
    beyond = (
        await session.execute(select(func.min(AuditEntry.id)).where(AuditEntry.id > head_count))
    ).scalar_one_or_none()
    if beyond is not None:
        if head is None:
            return bad(int(beyond), "the audit head is missing, but the log has rows")
        fresh = (
            await session.execute(select(AuditHead.count).where(AuditHead.id == HEAD_ID))
        ).scalar_one_or_none()
        if fresh is None or fresh < beyond:  # not an append made while we were walking
            return bad(int(beyond), f"row {beyond} is not recorded in the head ({head_count} rows)")
    return VerifyReport(ok=True, count=last_id)


async def export(
    session: AsyncSession, *, since_id: int = 0, page_size: int = PAGE_SIZE
) -> AsyncIterator[dict[str, Any]]:
    """Entries with id above `since_id` in id order, as JSON-able dicts (`at` as ISO-8601 UTC),
    read a page at a time; each carries its `prev_hash` and `hash` for checking elsewhere."""
    async for record in _records(session, after_id=since_id, until_id=None, page_size=page_size):
        if "unreadable" in record:
            raise ValueError(f"audit row {record['id']}: {record['unreadable']}")
        yield {**record, "at": _utc(record["at"]).isoformat(timespec="microseconds")}


async def _lock_head(session: AsyncSession) -> AuditHead:
    """The head row, locked until the caller's transaction ends. Within one transaction the lock
    is taken once: later appends (a group commit appends many) reuse the locked row."""
    transaction = session.sync_session.get_transaction()
    cached = session.info.get(_HEAD_KEY)
    if cached is not None and cached[0] is transaction:
        head: AuditHead = cached[1]
        return head
    head = await _select_head(session)
    session.info[_HEAD_KEY] = (transaction, head)
    return head


async def _select_head(session: AsyncSession) -> AuditHead:
    query = (
        select(AuditHead)
        .where(AuditHead.id == HEAD_ID)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    found = (await session.execute(query)).scalar_one_or_none()
    if found is not None:
        return found
    # Two first appends may race: the loser's insert waits for the winner, then does nothing.
    values = {"id": HEAD_ID, "last_hash": GENESIS_HASH, "count": 0}
    dialect = session.get_bind().dialect.name
    create: Executable
    if dialect == "postgresql":
        create = postgresql_insert(AuditHead).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        create = sqlite_insert(AuditHead).values(values).on_conflict_do_nothing()
    else:
        create = insert(AuditHead).values(values)
    await session.execute(create)
    head: AuditHead = (await session.execute(query)).scalar_one()
    return head


_HEAD_KEY = "txgate.audit.locked_head"


async def _records(
    session: AsyncSession, *, after_id: int | None, until_id: int | None, page_size: int
) -> AsyncIterator[dict[str, Any]]:
    """Rows as plain dicts, keyset-paged. `details` is read as text and parsed here, so a row
    whose JSON was damaged is reported as that row rather than failing the whole query."""
    columns = (
        AuditEntry.id,
        AuditEntry.at,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.subject,
        cast(AuditEntry.details, Text),
        AuditEntry.prev_hash,
        AuditEntry.hash,
    )
    while True:
        query = select(*columns).order_by(AuditEntry.id).limit(page_size)
        if after_id is not None:
            query = query.where(AuditEntry.id > after_id)
        if until_id is not None:
            query = query.where(AuditEntry.id <= until_id)
        rows = (await session.execute(query)).all()
        for row_id, at, actor, action, subject, details_text, prev_hash, hash_ in rows:
            record: dict[str, Any] = {
                "id": int(row_id),
                "at": at,
                "actor": actor,
                "action": action,
                "subject": subject,
                "details": None,
                "prev_hash": prev_hash,
                "hash": hash_,
            }
            try:
                record["details"] = json.loads(details_text)
            except (TypeError, ValueError):
                record["unreadable"] = "details are not valid JSON"
            yield record
        if len(rows) < page_size:
            return
        after_id = int(rows[-1][0])


def _record_hash(record: Mapping[str, Any]) -> str:
    return entry_hash(
        id=record["id"],
        at=record["at"],
        actor=record["actor"],
        action=record["action"],
        subject=record["subject"],
        details=record["details"],
        prev_hash=record["prev_hash"],
    )


def _clean_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """`details` as it will read back from the database: plain JSON, no secret-like keys."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise ValueError("audit details must be a JSON object")
    _refuse_secrets(details, path="details")
    try:
        clean: dict[str, Any] = json.loads(_canonical(details))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details must be plain JSON: {exc}") from None
    return clean


def _refuse_secrets(value: Any, *, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"audit {path} has a key that is not a string: {key!r}")
            if _looks_secret(key):
                raise ValueError(
                    f"audit {path}.{key} looks like a secret; secrets are never logged"
                )
            _refuse_secrets(item, path=f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_secrets(item, path=f"{path}[{index}]")


def _looks_secret(key: str) -> bool:
    words = [word for word in _WORD_SPLIT.split(_CAMEL.sub(r"\1_\2", key).lower()) if word]
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS or any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _utc(at: datetime) -> datetime:
    """SQLite returns naive datetimes (written as UTC); PostgreSQL returns aware ones."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
