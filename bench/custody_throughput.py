"""Custodian throughput: N concurrent createTransaction (allow-all policy) until mined, against
the same N transfers signed with eth-account and sent straight to the same anvil.

Prints tx/s for both paths and their ratio, p50/p95 create→mined latency (from the outbox's
event times) and the custodian process's peak resident memory (VmHWM). Run: `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from eth_account import Account as EthAccount
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.custodian import CustodianProcess, Eca3Client, fund, seed
from support.payloads import eth_transfer
from txgate.chain import DEV_ACCOUNTS, Anvil, NodeClient
from txgate.storage.engine import Database
from txgate.storage.tables import Event

GWEI = 10**9


async def custodian_run(
    n: int, anvil: Anvil, database_url: str, data_dir: Path, *, round_: int
) -> dict[str, float]:
    seeded = await seed(database_url, customer=f"Bench Fund {round_}", accounts=1)
    sender = seeded.accounts[0]
    await fund(anvil.url, [sender], wei=10**20)
    process = await CustodianProcess(database_url, anvil.url, data_dir).start()
    try:
        async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
            await client.login()
            meta = {"chainId": hex(anvil.chain_id)}
            started = time.time()
            ids = await asyncio.gather(
                *(
                    client.call(
                        "custodian_createTransaction", [eth_transfer(sender, value=i + 1), meta]
                    )
                    for i in range(n)
                )
            )
            created = time.time() - started
            # Watch the chain, not the custodian, so the observer adds no load to what is measured;
            # the custodian's own outbox times give when it reported each transaction mined.
            async with NodeClient(anvil.url) as node:
                target = await node.get_transaction_count(sender, "pending")
                while await node.get_transaction_count(sender, "latest") < target:
                    await asyncio.sleep(0.02)
            mined_at = await _wait_all_mined(database_url, ids)
            elapsed = max(mined_at.values()) - started
            answers = (
                await client.raw(
                    [
                        {
                            "jsonrpc": "2.0",
                            "id": i,
                            "method": "custodian_getTransactionById",
                            "params": [tx_id],
                        }
                        for i, tx_id in enumerate(ids)
                    ]
                )
            ).json()
            failed = [a for a in answers if not a["result"]["transaction"]["status"]["success"]]
            if failed:
                raise RuntimeError(f"{len(failed)} transactions did not succeed: {failed[0]}")
        peak_mb = _peak_rss_mb(process)
    finally:
        await process.stop()
    latencies = await _latencies(database_url, ids)
    return {
        "tps": n / elapsed,
        "p50": statistics.median(latencies),
        "p95": statistics.quantiles(latencies, n=20)[18],
        "peak_mb": peak_mb,
        "create_s": created,
    }


def _peak_rss_mb(process: CustodianProcess) -> float:
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _wait_all_mined(database_url: str, ids: list[str]) -> dict[str, float]:
    """Poll the outbox (a side door, not the API under test) until every id has its mined event."""
    db = Database(database_url)
    try:
        while True:
            async with db.read() as session:
                rows = (
                    await session.execute(
                        select(Event.subject_id, Event.created_at).where(
                            Event.subject_id.in_(ids), Event.status == "mined"
                        )
                    )
                ).all()
            if len(rows) == len(ids):
                return {r.subject_id: _epoch(r.created_at) for r in rows}
            await asyncio.sleep(0.05)
    finally:
        await db.dispose()


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def _latencies(database_url: str, ids: list[str]) -> list[float]:
    db = Database(database_url)
    try:
        async with db.read() as session:
            rows = (
                await session.execute(
                    select(Event.subject_id, Event.status, Event.created_at).where(
                        Event.subject_id.in_(ids)
                    )
                )
            ).all()
    finally:
        await db.dispose()
    created = {r.subject_id: r.created_at for r in rows if r.status == "created"}
    mined = {r.subject_id: r.created_at for r in rows if r.status == "mined"}
    return [(mined[i] - created[i]).total_seconds() * 1000 for i in ids]


async def direct_run(n: int, anvil: Anvil) -> dict[str, float]:
    """The baseline: sign with eth-account, send concurrently, wait for every receipt."""
    key = DEV_ACCOUNTS[5]
    async with NodeClient(anvil.url) as node:
        nonce = await node.get_transaction_count(key.address, "pending")
        started = time.perf_counter()
        raws = []
        for i in range(n):
            signed = EthAccount.sign_transaction(
                {
                    "type": 2,
                    "chainId": anvil.chain_id,
                    "nonce": nonce + i,
                    "to": EthAccount.create().address,
                    "value": i + 1,
                    "gas": 21_000,
                    "maxFeePerGas": 20 * GWEI,
                    "maxPriorityFeePerGas": GWEI,
                },
                key.private_key,
            )
            raws.append(bytes(signed.raw_transaction))
        hashes = await asyncio.gather(*(node.send_raw_transaction(raw) for raw in raws))
        pending = set(hashes)
        while pending:
            answers = await node.batch([("eth_getTransactionReceipt", [h]) for h in pending])
            pending = {
                h for h, a in zip(list(pending), answers, strict=True) if not isinstance(a, dict)
            }
            if pending:
                await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    return {"tps": n / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="transactions per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both paths")
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    args = parser.parse_args()
    direct: list[dict[str, float]] = []
    custody: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        async with Anvil(extra_args=["--balance", "100000000"]) as anvil:
            for round_ in range(args.rounds):
                # Alternate the paths so drift in the shared machine's load hits both alike.
                direct.append(await direct_run(args.n, anvil))
                custody.append(
                    await custodian_run(
                        args.n, anvil, database_url, Path(tmp) / f"data{round_}", round_=round_
                    )
                )

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    backend = database_url.split(":", 1)[0]
    ratios = [c["tps"] / d["tps"] for c, d in zip(custody, direct, strict=True)]
    print(
        f"custody throughput, N={args.n}, backend={backend}, anvil automine, {args.rounds} rounds (medians)"
    )
    print(f"  direct (eth-account → anvil):   {median(direct, 'tps'):7.1f} tx/s")
    print(f"  custodian (create → mined):     {median(custody, 'tps'):7.1f} tx/s")
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"  ratio custodian / direct:       {statistics.median(ratios):7.2f}   (per round: {each})"
    )
    print(f"  all {args.n} creates answered in: {median(custody, 'create_s'):7.2f} s")
    print(
        f"  create → mined latency:         p50 {median(custody, 'p50'):.0f} ms   p95 {median(custody, 'p95'):.0f} ms"
    )
    print(
        f"  custodian peak RSS (VmHWM):     {max(run['peak_mb'] for run in custody):7.0f} MB (highest round)"
    )


if __name__ == "__main__":
    asyncio.run(main())
