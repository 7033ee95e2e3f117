"""Keys never leave the vault: after a custodian has created accounts, signed and sent
transactions and signed messages, no account private key (raw, hex in any case, base64) appears
in the database (file or table dump), the custodian's log or any HTTP response, and no refresh or
access token is stored in clear; on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account import Account as EthAccount
from sqlalchemy import inspect, literal_column, select, table
from sqlalchemy.engine import make_url

from support.custodian import PASSPHRASE, CustodianProcess, Eca3Client, Seeded, fund, seed
from txgate.chain import Anvil
from txgate.custody.tokens import token_hash
from txgate.custody.vault import Vault, account_context
from txgate.storage.engine import Database
from txgate.storage.tables import Account, SigningKey

pytestmark = pytest.mark.integration

TYPED = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
        ],
        "Order": [{"name": "amount", "type": "uint256"}, {"name": "to", "type": "address"}],
    },
    "primaryType": "Order",
    "domain": {"name": "Desk", "chainId": 31337},
    "message": {"amount": 10**18, "to": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
}


@dataclass
class Scene:
    """What a custodian left behind after real work, read once it has stopped."""

    seeded: Seeded
    database_url: str
    log: bytes
    responses: list[str]
    tokens: list[str]  # every refresh and access token handed out
    sqlite_files: dict[str, bytes] = field(default_factory=dict)  # name → bytes, while running


@pytest.fixture(scope="module")
async def scene(
    module_database_url: str, anvil: Anvil, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scene]:
    seeded = await seed(module_database_url, users=("alice", "bob"), accounts=3)
    await fund(anvil.url, seeded.accounts)
    process = CustodianProcess(
        module_database_url,
        anvil.url,
        tmp_path_factory.mktemp("data"),
        extra_env={"TXGATE_LOG_LEVEL": "debug"},  # the chattiest log is the one to search
    )
    await process.start()
    tokens = list(seeded.refresh_tokens.values())
    responses: list[str] = []
    sqlite_files: dict[str, bytes] = {}
    try:
        for user in ("alice", "bob"):
            async with Eca3Client(process.url, seeded.refresh_tokens[user]) as client:
                grant = await client.login()
                tokens += [grant["access_token"], grant["refresh_token"]]
                await work(client, seeded, everything=user == "alice")
                responses += client.responses
        sqlite_files = read_sqlite_files(module_database_url)
    finally:
        await process.stop()
    yield Scene(
        seeded,
        module_database_url,
        process.log_path.read_bytes(),
        responses,
        tokens,
        sqlite_files,
    )


async def work(client: Eca3Client, seeded: Seeded, *, everything: bool) -> None:
    """Every kind of signing the custodian does, and a few refusals that echo their input."""
    await client.call("custodian_listAccounts", [])
    await client.call("custodian_listAccountsSigned", [])
    await client.call("custodian_getCustomerProof", [])
    if not everything:
        return
    tx_ids = [
        await client.call(
            "custodian_createTransaction",
            [
                {
                    "from": account,
                    "to": seeded.accounts[0],
                    "value": hex(10**15),
                    "gas": hex(21_000),
                    "maxFeePerGas": hex(20 * 10**9),
                    "maxPriorityFeePerGas": hex(10**9),
                },
                {"chainId": "0x7a69", "note": "secrecy"},
            ],
        )
        for account in seeded.accounts
    ]
    for tx_id in tx_ids:
        final = await client.wait_final(tx_id)
        assert final["transaction"]["status"]["success"], final
        await client.call("custodian_getTransactionLink", [tx_id])
    for account in seeded.accounts:
        personal = await client.call(
            "custodian_sign", [{"address": account, "message": "0x" + b"secret?".hex()}, {}]
        )
        typed = await client.call(
            "custodian_signTypedData", [{"address": account, "data": TYPED, "version": "v4"}, {}]
        )
        for message_id in (personal, typed):
            await client.call("custodian_getSignedMessageById", [message_id])
            await client.call("custodian_getSignedMessageLink", [message_id])
    await client.call_raw("custodian_createTransaction", [{"from": seeded.accounts[0]}, {}])
    await client.call_raw("custodian_sign", [{"address": seeded.accounts[0], "message": "x"}])
    await client.call_raw("custodian_nope", [])
    jwks = await client.http.get("/.well-known/jwks.json")
    client.responses.append(jwks.text)


def read_sqlite_files(database_url: str) -> dict[str, bytes]:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return {}
    path = Path(str(url.database))
    files = {p.name: p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()}
    assert path.name in files
    return files


async def account_keys(database_url: str) -> dict[str, bytes]:
    """Each account's private key, opened with the vault in this process."""
    db = Database(database_url)
    try:
        vault = await Vault.open(db.transaction, passphrase=PASSPHRASE, key_file=None)
        async with db.read() as session:
            accounts = list((await session.execute(select(Account))).scalars())
        keys = {
            account.address: vault.unseal(
                account.sealed_key, context=account_context(account.address)
            )
            for account in accounts
        }
    finally:
        await db.dispose()
    for address, key in keys.items():
        assert len(key) == 32
        assert EthAccount.from_key(key).address.lower() == address
    return keys


async def proof_signing_keys(database_url: str) -> list[bytes]:
    """The private scalars of the custodian's own JWT signing keys."""
    db = Database(database_url)
    try:
        vault = await Vault.open(db.transaction, passphrase=PASSPHRASE, key_file=None)
        async with db.read() as session:
            rows = list((await session.execute(select(SigningKey))).scalars())
        pems = [vault.unseal(row.sealed_key, context=f"jwt:{row.kid}".encode()) for row in rows]
    finally:
        await db.dispose()
    scalars = []
    for pem in pems:
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        scalars.append(key.private_numbers().private_value.to_bytes(32, "big"))
    return scalars


async def dump_tables(database_url: str) -> tuple[str, bytes]:
    """A text export of every table (like pg_dump's data section), and every binary cell."""
    db = Database(database_url)
    lines: list[str] = []
    blobs: list[bytes] = []
    try:
        async with db.engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            assert {"accounts", "transactions", "refresh_tokens", "access_tokens"} <= set(names)
            for name in sorted(names):
                query = select(literal_column("*")).select_from(table(name))
                rows = (await connection.execute(query)).all()
                lines.append(f"-- {name}: {len(rows)} rows")
                for row in rows:
                    lines.append(str(tuple(row)))
                    blobs += [bytes(cell) for cell in row if isinstance(cell, bytes | memoryview)]
    finally:
        await db.dispose()
    return "\n".join(lines), b"\n".join(blobs)


def spellings(secret: bytes) -> list[bytes]:
    """The ways a 32-byte secret could be written down by mistake."""
    forms = [secret.hex(), secret.hex().upper()]
    forms += ["0x" + form for form in forms] + ["0X" + secret.hex().upper()]
    forms += [base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode()]
    forms.append(base64.urlsafe_b64encode(secret).decode().rstrip("="))  # as in a JWK "d"
    return [secret, *(form.encode() for form in forms)]


def assert_absent(secrets: Iterable[bytes], haystack: bytes, where: str) -> None:
    for secret in secrets:
        for form in spellings(secret):
            assert form not in haystack, f"a private key ({len(form)} bytes form) is in {where}"


async def test_account_keys_are_not_in_the_database(scene: Scene) -> None:
    keys = await account_keys(scene.database_url)
    assert len(keys) == 3
    dump_text, blobs = await dump_tables(scene.database_url)
    haystack = dump_text.encode() + b"\n" + blobs
    # The dump is not vacuous: it holds the accounts, their sealed keys and the signed work.
    for address in keys:
        assert address.encode() in haystack
    assert b'"ct"' in blobs and dump_text.count("personal_sign") >= 3
    assert_absent(keys.values(), haystack, "a table dump")
    assert_absent(await proof_signing_keys(scene.database_url), haystack, "a table dump")
    if scene.sqlite_files:  # the files are read right: the addresses are in them
        assert all(a.encode() in b"".join(scene.sqlite_files.values()) for a in keys)
    for name, content in scene.sqlite_files.items():
        assert_absent(keys.values(), content, name)
    after = read_sqlite_files(scene.database_url)  # after shutdown (WAL checkpointed)
    for name, content in after.items():
        assert_absent(keys.values(), content, f"{name} after shutdown")


async def test_keys_are_not_in_the_log(scene: Scene) -> None:
    keys = await account_keys(scene.database_url)
    assert b"custodian.started" in scene.log  # the log is the custodian's, and not empty
    assert_absent(keys.values(), scene.log, "the custodian log")
    assert_absent(await proof_signing_keys(scene.database_url), scene.log, "the custodian log")
    for token in scene.tokens:
        assert token.encode() not in scene.log, "a bearer or refresh token is in the log"


async def test_keys_are_not_in_any_response(scene: Scene) -> None:
    keys = await account_keys(scene.database_url)
    bodies = "\n".join(scene.responses).encode()
    assert len(scene.responses) > 30 and b'"signature"' in bodies
    assert_absent(keys.values(), bodies, "an HTTP response")
    assert_absent(await proof_signing_keys(scene.database_url), bodies, "an HTTP response")


async def test_tokens_are_stored_only_as_hashes(scene: Scene) -> None:
    dump_text, blobs = await dump_tables(scene.database_url)
    haystack = dump_text.encode() + b"\n" + blobs
    haystack += b"\n" + b"\n".join(scene.sqlite_files.values())
    haystack += b"\n" + b"\n".join(read_sqlite_files(scene.database_url).values())
    assert len(set(scene.tokens)) >= 4
    for token in scene.tokens:
        assert token_hash(token) in dump_text  # it was stored, as its hash
        assert token.encode() not in haystack, "a token is stored in clear"
        secret_part = token.split("_", 2)[-1]
        assert secret_part.encode() not in haystack
