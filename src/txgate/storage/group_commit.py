"""Group commit: many small concurrent write transactions share one database commit.

Each caller hands in a unit of work (an async function of a session); a single flusher runs the
queued units one after another inside one transaction and commits once, then answers every
caller. If a unit raises, the batch is rolled back and each of its units is run again in its own
transaction, so one bad request never fails or half-writes another; the error reaches only its
caller. Throughput rises because commits, transaction start-up and the serialising locks (the
audit head, SQLite's single writer) are paid once per batch instead of once per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from txgate.storage.engine import Database

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]


@dataclass(slots=True)
class _Pending(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]


class GroupCommit:
    def __init__(self, database: Database, *, max_batch: int = 64) -> None:
        self._db = database
        self._max_batch = max_batch
        self._queue: list[_Pending[Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, work: Work[T]) -> T:
        """Run `work` in a transaction shared with other callers; return once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(work, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            if len(batch) > 1 and await self._run_together(batch):
                continue
            # A batch of one, or a batch in which something failed: each unit on its own.
            for pending in batch:
                await self._run_alone(pending)

    async def _run_together(self, batch: list[_Pending[Any]]) -> bool:
        try:
            async with self._db.transaction() as session:
                results = [await pending.work(session) for pending in batch]
        except Exception:
            return False
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
        return True

    async def _run_alone(self, pending: _Pending[Any]) -> None:
        try:
            async with self._db.transaction() as session:
                result = await pending.work(session)
        except Exception as error:
            if not pending.future.done():
                pending.future.set_exception(error)
            return
        if not pending.future.done():
            pending.future.set_result(result)
