"""Velocity sums over the transaction ledger: the engine's one window onto history.

`SqlVelocity` answers `VelocityLookup.total` from the `transactions` table inside the caller's
session, so a decision sees exactly the rows its own database transaction sees. Only requests
that moved value or may still move it count (pending approval through mined); blocked,
rejected, aborted, failed and replaced ones do not, and neither does a request still `created`
(the one being decided: the engine adds its amount itself).

PostgreSQL sums `NUMERIC(78,0)` in the database, exactly. SQLite stores amounts as decimal text
(its integers are 64-bit), so there the amounts are fetched and summed in Python, also exactly.
The indexes `ix_transactions_velocity_*` cover each scope's lookup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from txgate.core.status import Status
from txgate.storage.tables import Transaction

COUNTED_STATUSES = frozenset(
    {
        Status.PENDING_APPROVAL,
        Status.APPROVED,
        Status.SIGNED,
        Status.SUBMITTED,
        Status.MINED,
    }
)
_STATUS_VALUES = sorted(status.value for status in COUNTED_STATUSES)
_SCOPES = {
    "initiator": Transaction.user_id,
    "source": Transaction.from_address,
    "destination": Transaction.destination,
}


def _where(column: InstrumentedAttribute[Any]) -> list[ColumnElement[bool]]:
    return [
        Transaction.customer_id == bindparam("customer_id"),
        column == bindparam("key"),
        Transaction.asset == bindparam("asset"),
        Transaction.created_at >= bindparam("since"),
        Transaction.status.in_(_STATUS_VALUES),
    ]


# Built once: building a statement per call costs as much as PostgreSQL takes to answer it.
_SUMS = {
    scope: select(func.sum(Transaction.amount)).where(*_where(c)) for scope, c in _SCOPES.items()
}
_AMOUNTS = {scope: select(Transaction.amount).where(*_where(c)) for scope, c in _SCOPES.items()}


class SqlVelocity:
    """`VelocityLookup` over one customer's transactions, in the caller's session.

    Keys: the initiator's user id, or a lower-case source or destination address."""

    def __init__(self, session: AsyncSession, *, customer_id: str) -> None:
        self._session = session
        self._customer_id = customer_id
        self._sqlite: bool | None = None

    async def total(self, *, scope: str, key: str, asset: str, since: datetime) -> int:
        if scope not in _SCOPES:
            raise ValueError(f"unknown velocity scope {scope!r}")
        if since.tzinfo is None:
            raise ValueError("since must be a timezone-aware datetime")
        # SQLite keeps times as text without an offset; comparing in UTC keeps the order right.
        params = {
            "customer_id": self._customer_id,
            "key": key,
            "asset": asset,
            "since": since.astimezone(UTC),
        }
        # Core execution on the session's own connection: same transaction, less ORM overhead.
        connection = await self._session.connection()
        if self._is_sqlite():
            amounts = await connection.scalars(_AMOUNTS[scope], params)
            return sum(amount for amount in amounts if amount is not None)
        return _exact_int(await connection.scalar(_SUMS[scope], params))

    def _is_sqlite(self) -> bool:
        if self._sqlite is None:
            self._sqlite = self._session.get_bind().dialect.name == "sqlite"
        return self._sqlite


def _exact_int(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, Decimal):
        # A SUM of NUMERIC(78,0) is integral; anything else would be a schema bug.
        if value != value.to_integral_value():
            raise ValueError(f"velocity sum {value} is not a whole number")
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError(f"unexpected velocity sum type {type(value).__name__}")
