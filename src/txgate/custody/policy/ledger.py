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

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

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


class SqlVelocity:
    """`VelocityLookup` over one customer's transactions, in the caller's session.

    Keys: the initiator's user id, or a lower-case source or destination address."""

    def __init__(self, session: AsyncSession, *, customer_id: str) -> None:
        self._session = session
        self._customer_id = customer_id
        self._sqlite: bool | None = None

    async def total(self, *, scope: str, key: str, asset: str, since: datetime) -> int:
        column = _SCOPES.get(scope)
        if column is None:
            raise ValueError(f"unknown velocity scope {scope!r}")
        if since.tzinfo is None:
            raise ValueError("since must be a timezone-aware datetime")
        # SQLite keeps times as text without an offset; comparing in UTC keeps the order right.
        conditions: list[ColumnElement[bool]] = [
            Transaction.customer_id == self._customer_id,
            column == key,
            Transaction.asset == asset,
            Transaction.created_at >= since.astimezone(UTC),
            Transaction.status.in_(_STATUS_VALUES),
        ]
        if self._is_sqlite():
            amounts = await self._session.scalars(select(Transaction.amount).where(*conditions))
            return sum(amount for amount in amounts if amount is not None)
        total = await self._session.scalar(
            select(func.coalesce(func.sum(Transaction.amount), 0)).where(*conditions)
        )
        return _exact_int(total)

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
