"""Column types that keep txgate's values exact on both SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator


class Uint256(TypeDecorator[int]):
    """An unsigned 256-bit integer: NUMERIC(78, 0) on PostgreSQL (so SUM works exactly), decimal
    text on SQLite (whose numbers are 64-bit)."""

    impl = Numeric(78, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(80))
        return dialect.type_descriptor(Numeric(78, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)
