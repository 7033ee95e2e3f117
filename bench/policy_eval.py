"""Policy evaluation latency: 1,000 rules with the matching rule last (the worst case), without
and with a velocity rule over a ledger of 100,000 transactions on PostgreSQL.

Each figure is printed beside a baseline measured in the same run (a 1-rule policy; a `SELECT 1`
round trip on the same connection), so it can be read as a ratio on a noisy machine. The issue's
goal: p99 < 2 ms without velocity, < 10 ms with it.

Run: `.venv/bin/python bench/policy_eval.py` (PostgreSQL from TXGATE_TEST_POSTGRES_URL, default
postgresql+asyncpg://postgres@127.0.0.1:5432/test; a throw-away database is created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from txgate.custody.policy.document import parse_policy
from txgate.custody.policy.engine import CompiledPolicy
from txgate.custody.policy.facts import RequestFacts, transaction_facts
from txgate.custody.policy.ledger import SqlVelocity
from txgate.storage.tables import Base

RULES = 1_000
HISTORY = 100_000
USERS = [f"user{i:02d}" for i in range(20)]
SOURCES = [f"0x{i:040x}" for i in range(1, 21)]
DESTINATIONS = [f"0x{0xD000 + i:040x}" for i in range(1_000)]
TOKENS = ["native", "0x" + "1" * 40, "0x" + "2" * 40, "0x" + "3" * 40]
NOW = datetime.now(UTC)
ETHER = 10**18


def policy_data(rules: int, *, velocity: bool) -> dict[str, object]:
    """`rules - 1` near misses, then the rule that matches. Every near miss passes the kind,
    chain, initiator, source and asset checks and fails only on its destination or amount, so
    each one costs the engine as much as a rule can without matching."""
    near_misses = [
        {
            "name": f"near-miss-{i}",
            "match": {
                "kind": ["transaction"],
                "chain": [1],
                "initiator": {"users": USERS},
                "source": SOURCES,
                "asset": ["native"],
                "destination": {"addresses": [f"0x{0xE000 + i:040x}"]} if i % 2 else {"any": True},
                "amount": {"max": 10},
            },
            "action": "block",
        }
        for i in range(rules - 1)
    ]
    last: dict[str, object] = {
        "name": "daily-limit" if velocity else "traders",
        "match": {"kind": ["transaction"], "initiator": {"users": USERS}, "asset": ["native"]},
        "action": "allow",
    }
    if velocity:
        last["match"] = {
            **last["match"],  # type: ignore[dict-item]
            "velocity": {"scope": "initiator", "window": "24h", "max": "1000000 ether"},
        }
    return {"version": 1, "rules": [*near_misses, last]}


def unindexed_policy(rules: int) -> dict[str, object]:
    """`rules - 1` near misses that the index cannot rule out: each passes its indexed
    conditions (destination type, amount, value) and its method closure, and fails only on its
    last closure (fiat). The engine's true worst case: every rule runs all its closures."""
    near_misses = [
        {
            "name": f"near-miss-{i}",
            "match": {
                "destination": {"type": "eoa"},
                "amount": {"max": "1000 ether"},
                "value": {"min": i % 7},
                "method": ["none", "transfer"],
                "fiat": {"min_usd": "1000000000"},
            },
            "action": "block",
        }
        for i in range(rules - 1)
    ]
    last = {"name": "traders", "match": {"amount": {"max": "1000 ether"}}, "action": "allow"}
    return {
        "version": 1,
        "prices": {"native": {"usd": "3000", "decimals": 18}},
        "rules": [*near_misses, last],
    }


def facts(user: str) -> RequestFacts:
    return transaction_facts(
        customer_id="c1",
        initiator=user,
        initiator_id=user,
        chain_id=1,
        source=SOURCES[0],
        to=DESTINATIONS[0],
        value=ETHER,
        destination_is_contract=False,
        now=NOW,
    )


async def timings(samples: int, run: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """p50 and p99 of `run(i)` in milliseconds, after a warm-up of a tenth of the samples."""
    for i in range(max(samples // 10, 10)):
        await run(i)
    spent = []
    for i in range(samples):
        started = time.perf_counter_ns()
        await run(i)
        spent.append((time.perf_counter_ns() - started) / 1e6)
    quantiles = statistics.quantiles(spent, n=100)
    return quantiles[49], quantiles[98]


def show(
    label: str, figures: tuple[float, float], baseline: tuple[float, float] | None = None
) -> None:
    p50, p99 = figures
    ratio = (
        f"   ({p50 / baseline[0]:6.1f}x / {p99 / baseline[1]:6.1f}x baseline)" if baseline else ""
    )
    print(f"  {label:<44} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms{ratio}")


async def without_velocity(samples: int) -> None:
    print(f"Without velocity ({samples} evaluations each):")
    one = CompiledPolicy.compile(parse_policy(policy_data(1, velocity=False)))
    many = CompiledPolicy.compile(parse_policy(policy_data(RULES, velocity=False)))
    requests = [facts(user) for user in USERS]
    assert (await many.evaluate(requests[0])).rule == "traders"
    baseline = await timings(samples, lambda i: one.evaluate(requests[i % len(requests)]))
    show("baseline: 1-rule policy", baseline)
    show(
        f"{RULES} rules, match on the last",
        await timings(samples, lambda i: many.evaluate(requests[i % len(requests)])),
        baseline,
    )
    unindexed = CompiledPolicy.compile(parse_policy(unindexed_policy(RULES)))
    assert (await unindexed.evaluate(requests[0])).rule == "traders"
    show(
        f"{RULES} rules, last, all past the index",
        await timings(samples, lambda i: unindexed.evaluate(requests[i % len(requests)])),
        baseline,
    )


async def with_velocity(samples: int, admin_url: str) -> None:
    admin = make_url(admin_url)
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"txgate_policy_bench_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    engine = create_async_engine(admin.set(database=name).render_as_string(hide_password=False))
    try:
        started = time.perf_counter()
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        in_window = await load_history(admin.set(drivername="postgresql", database=name))
        print(
            f"With velocity on PostgreSQL ({HISTORY:,} transactions loaded and analysed in "
            f"{time.perf_counter() - started:.1f} s; ~{in_window} rows per user in a 24 h window; "
            f"{samples} evaluations each):"
        )
        one = CompiledPolicy.compile(parse_policy(policy_data(1, velocity=True)))
        many = CompiledPolicy.compile(parse_policy(policy_data(RULES, velocity=True)))
        requests = [facts(user) for user in USERS]
        async with AsyncSession(engine) as session, session.begin():
            ledger = SqlVelocity(session, customer_id="c1")
            assert (await many.evaluate(requests[0], velocity=ledger)).rule == "daily-limit"
            baseline = await timings(samples, lambda i: session.execute(text("SELECT 1")))
            show("baseline: SELECT 1 on the same connection", baseline)
            show(
                "1 velocity rule",
                await timings(
                    samples, lambda i: one.evaluate(requests[i % len(requests)], velocity=ledger)
                ),
                baseline,
            )
            show(
                f"{RULES} rules, velocity rule last",
                await timings(
                    samples, lambda i: many.evaluate(requests[i % len(requests)], velocity=ledger)
                ),
                baseline,
            )
    finally:
        await engine.dispose()
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


async def load_history(url: URL) -> int:
    """COPY the ledger in (the fastest bulk path), then ANALYZE so the planner knows it.
    Returns the average number of a user's native-asset rows inside a 24 h window."""
    rng = random.Random(7)
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await connection.execute(
            "INSERT INTO customers (id, name, created_at) VALUES ('c1', 'Bench', $1)", NOW
        )
        await connection.executemany(
            "INSERT INTO users (id, customer_id, name, role, created_at) "
            "VALUES ($1, 'c1', $1, 'trader', $2)",
            [(user, NOW) for user in USERS],
        )
        statuses = ["mined"] * 8 + ["submitted", "pending_approval", "blocked", "failed"]
        rows = []
        for _ in range(HISTORY):
            at = NOW - timedelta(seconds=rng.uniform(0, 30 * 86400))
            amount = rng.randrange(1, 5 * ETHER)
            destination = rng.choice(DESTINATIONS)
            rows.append(
                (
                    str(uuid.uuid4()), "c1", rng.choice(USERS), 1, 2, rng.choice(SOURCES),
                    destination, Decimal(amount), b"", 21000, rng.choice(statuses), False,
                    json.dumps({}), 0, at, at, rng.choice(TOKENS), Decimal(amount), destination,
                )
            )  # fmt: skip
        await connection.copy_records_to_table(
            "transactions",
            records=rows,
            columns=[
                "id", "customer_id", "user_id", "chain_id", "tx_type", "from_address",
                "to_address", "value", "data", "gas", "status", "was_signed", "meta",
                "event_seq", "created_at", "updated_at", "asset", "amount", "destination",
            ],
        )  # fmt: skip
        await connection.execute("ANALYZE")
        count = await connection.fetchval(
            "SELECT count(*) FROM transactions WHERE asset = 'native' AND created_at >= $1",
            NOW - timedelta(hours=24),
        )
        return round(int(count) / len(USERS))
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "TXGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    await without_velocity(args.samples)
    if not args.skip_postgres:
        await with_velocity(args.samples, args.postgres_url)


if __name__ == "__main__":
    asyncio.run(main())
