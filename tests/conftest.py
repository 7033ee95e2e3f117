"""Shared fixtures: a real anvil, real PostgreSQL databases, custodian processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from txgate.chain import Anvil

POSTGRES_URL = os.environ.get(
    "TXGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
async def anvil() -> AsyncIterator[Anvil]:
    # A large dev balance: every test funds its accounts from the same dev account.
    async with Anvil(extra_args=["--balance", "100000000"]) as node:
        yield node


class PostgresDatabases:
    """Creates throw-away databases on the test server and drops them at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin = make_url(admin_url)
        self.created: list[str] = []

    def _dsn(self, database: str) -> str:
        url = self.admin.set(drivername="postgresql", database=database)
        return url.render_as_string(hide_password=False)

    async def create(self) -> str:
        name = f"txgate_test_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(self._dsn(self.admin.database or "postgres"))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.created.append(name)
        return self.admin.set(database=name).render_as_string(hide_password=False)

    async def drop_all(self) -> None:
        if not self.created:
            return
        connection = await asyncpg.connect(self._dsn(self.admin.database or "postgres"))
        try:
            for name in self.created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture(scope="session")
async def postgres() -> AsyncIterator[PostgresDatabases]:
    databases = PostgresDatabases(POSTGRES_URL)
    yield databases
    await databases.drop_all()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresDatabases,
) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'txgate.db'}"
    return await postgres.create()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def module_database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresDatabases,
) -> str:
    """A fresh database URL on each backend, shared by the tests of one module."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'txgate.db'}"
    return await postgres.create()
