"""The key vault: envelope sealing, KEK derivation and the start-up check, against SQLite."""

from __future__ import annotations

import base64
import json
import pickle
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from txgate.core.errors import VaultError
from txgate.custody import vault as vault_module
from txgate.custody.vault import (
    KEK_MISMATCH,
    OPEN_FAILED,
    KeyEncryptionKey,
    Vault,
    account_context,
    create_key_file,
)
from txgate.storage.tables import Base, VaultKey

PASSPHRASE = "correct horse battery staple"
SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


@pytest.fixture
async def session_factory(tmp_path: Path) -> AsyncIterator[SessionFactory]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/vault.db")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield async_sessionmaker(engine, expire_on_commit=False).begin
    await engine.dispose()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "vault.key"
    create_key_file(path)
    return path


@pytest.fixture
def kek(key_file: Path) -> KeyEncryptionKey:
    return KeyEncryptionKey.from_key_file(key_file)


def _fields(sealed: bytes) -> dict[str, object]:
    document = json.loads(sealed)
    assert isinstance(document, dict)
    return document


def _reseal(document: dict[str, object]) -> bytes:
    return json.dumps(document).encode()


def _flip(b64: object) -> str:
    raw = bytearray(base64.b64decode(str(b64)))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# -- sealing -------------------------------------------------------------------------------------


def test_seal_open_round_trip(kek: KeyEncryptionKey) -> None:
    sealed = kek.seal(b"the secret", context=b"0xabc")
    assert kek.open(sealed, context=b"0xabc") == b"the secret"
    assert kek.seal(b"the secret", context=b"0xabc") != sealed  # fresh data key and IVs


def test_sealed_blob_is_versioned_json(kek: KeyEncryptionKey) -> None:
    document = _fields(kek.seal(b"x", context=b"c"))
    assert set(document) == {"v", "alg", "wrapped", "iv_wrap", "iv", "ct"}
    assert document["v"] == 1
    assert document["alg"] == "A256GCM"
    assert len(base64.b64decode(str(document["iv"]))) == 12
    assert len(base64.b64decode(str(document["wrapped"]))) == 32 + 16  # data key + GCM tag


def test_wrong_context_fails(kek: KeyEncryptionKey) -> None:
    sealed = kek.seal(b"the secret", context=b"0xaaaa")
    with pytest.raises(VaultError) as info:
        kek.open(sealed, context=b"0xbbbb")
    assert info.value.message == OPEN_FAILED


@pytest.mark.parametrize("field", ["wrapped", "iv_wrap", "iv", "ct"])
def test_tampered_field_fails(kek: KeyEncryptionKey, field: str) -> None:
    document = _fields(kek.seal(b"the secret", context=b"c"))
    document[field] = _flip(document[field])
    with pytest.raises(VaultError, match="wrong key-encryption key or tampered data"):
        kek.open(_reseal(document), context=b"c")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: {**d, "v": 2},
        lambda d: {**d, "alg": "A128GCM"},
        lambda d: {k: v for k, v in d.items() if k != "ct"},
        lambda d: {**d, "ct": "not base64!"},
        lambda d: {**d, "ct": 7},
        lambda d: [d],
    ],
    ids=["version", "alg", "missing", "bad-b64", "not-str", "not-object"],
)
def test_malformed_blob_fails(
    kek: KeyEncryptionKey, mangle: Callable[[dict[str, object]], object]
) -> None:
    document = _fields(kek.seal(b"the secret", context=b"c"))
    with pytest.raises(VaultError, match="could not be opened"):
        kek.open(json.dumps(mangle(document)).encode(), context=b"c")


@pytest.mark.parametrize("blob", [b"", b"{", b"\xff\xfe", b"null", b"x" * 100])
def test_garbage_fails(kek: KeyEncryptionKey, blob: bytes) -> None:
    with pytest.raises(VaultError, match="could not be opened"):
        kek.open(blob, context=b"c")


def test_other_kek_fails(kek: KeyEncryptionKey, tmp_path: Path) -> None:
    other_file = tmp_path / "other.key"
    create_key_file(other_file)
    other = KeyEncryptionKey.from_key_file(other_file)
    with pytest.raises(VaultError, match="could not be opened"):
        other.open(kek.seal(b"s", context=b"c"), context=b"c")
    with pytest.raises(VaultError) as info:
        other.verify_check(kek.make_check())
    assert info.value.message == KEK_MISMATCH
    kek.verify_check(kek.make_check())


def test_kek_cannot_be_pickled(kek: KeyEncryptionKey) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(kek)


# -- key derivation -----------------------------------------------------------------------------


def test_passphrase_params_are_recorded() -> None:
    kek = KeyEncryptionKey.from_passphrase(PASSPHRASE)
    params = kek.params
    assert params["kdf"] == "scrypt"
    assert (params["n"], params["r"], params["p"]) == (2**15, 8, 1)
    assert len(base64.b64decode(params["salt"])) == 16
    json.dumps(params)
    again = KeyEncryptionKey.from_passphrase(PASSPHRASE, params)
    assert again.open(kek.seal(b"s", context=b"c"), context=b"c") == b"s"
    with pytest.raises(VaultError, match="could not be opened"):
        KeyEncryptionKey.from_passphrase("another", params).open(
            kek.seal(b"s", context=b"c"), context=b"c"
        )


def test_new_passphrase_gets_new_salt() -> None:
    assert (
        KeyEncryptionKey.from_passphrase(PASSPHRASE).params["salt"]
        != KeyEncryptionKey.from_passphrase(PASSPHRASE).params["salt"]
    )


def test_create_key_file_mode_and_no_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    assert len(bytes.fromhex(content.strip())) == 32
    with pytest.raises(VaultError, match="already exists"):
        create_key_file(path)
    assert path.read_text() == content


@pytest.mark.parametrize(
    "content",
    [bytes(range(32)), bytes(range(32)).hex().encode(), b"0x" + bytes(range(32)).hex().encode()],
    ids=["raw", "hex", "0x-hex"],
)
def test_key_file_formats(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    raw = tmp_path / "raw"
    raw.write_bytes(bytes(range(32)))
    sealed = KeyEncryptionKey.from_key_file(raw).seal(b"s", context=b"c")
    assert KeyEncryptionKey.from_key_file(path).open(sealed, context=b"c") == b"s"
    assert KeyEncryptionKey.from_key_file(path).params == {"kdf": "keyfile"}


@pytest.mark.parametrize("content", [b"", b"abc", b"zz" * 32, bytes(33)])
def test_bad_key_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(VaultError, match="must hold 32 random bytes"):
        KeyEncryptionKey.from_key_file(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="cannot be read"):
        KeyEncryptionKey.from_key_file(tmp_path / "absent")


# -- the vault against a database ---------------------------------------------------------------


async def test_open_creates_then_checks(session_factory: SessionFactory) -> None:
    vault = await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    async with session_factory() as session:
        row = (await session.execute(select(VaultKey))).scalar_one()
        assert row.id == "default"
        assert row.params["kdf"] == "scrypt"
        params = dict(row.params)
    sealed = vault.seal(b"jwt signing key", context=b"kid-1")

    again = await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    assert again.unseal(sealed, context=b"kid-1") == b"jwt signing key"
    async with session_factory() as session:
        assert (await session.execute(select(VaultKey))).scalar_one().params == params


async def test_wrong_passphrase_detected_at_open(session_factory: SessionFactory) -> None:
    await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    with pytest.raises(VaultError) as info:
        await Vault.open(session_factory, passphrase="wrong passphrase", key_file=None)
    assert info.value.message == KEK_MISMATCH
    assert "wrong passphrase" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_key_file_vault(
    session_factory: SessionFactory, key_file: Path, tmp_path: Path
) -> None:
    vault = await Vault.open(session_factory, passphrase=None, key_file=key_file)
    assert vault.kdf == "keyfile"
    address, sealed = vault.new_account_key()
    again = await Vault.open(session_factory, passphrase=None, key_file=key_file)
    assert again.unseal(sealed, context=account_context(address))

    other = tmp_path / "other.key"
    create_key_file(other)
    with pytest.raises(VaultError, match="does not match this database"):
        await Vault.open(session_factory, passphrase=None, key_file=other)
    with pytest.raises(VaultError, match="TXGATE_VAULT_KEY_FILE"):
        await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)


async def test_passphrase_vault_needs_passphrase(
    session_factory: SessionFactory, key_file: Path
) -> None:
    await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    with pytest.raises(VaultError, match="TXGATE_VAULT_PASSPHRASE"):
        await Vault.open(session_factory, passphrase=None, key_file=key_file)


async def test_no_key_configured(session_factory: SessionFactory, key_file: Path) -> None:
    with pytest.raises(VaultError) as info:
        await Vault.open(session_factory, passphrase=None, key_file=None)
    assert "TXGATE_VAULT_PASSPHRASE" in info.value.message
    assert "TXGATE_VAULT_KEY_FILE" in info.value.message
    with pytest.raises(VaultError, match="only one"):
        await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=key_file)
    async with session_factory() as session:
        assert (await session.execute(select(VaultKey))).first() is None


async def test_new_account_key(session_factory: SessionFactory, key_file: Path) -> None:
    vault = await Vault.open(session_factory, passphrase=None, key_file=key_file)
    address, sealed = vault.new_account_key()
    assert (
        address == Account.from_key(vault.unseal(sealed, context=address.lower().encode())).address
    )
    assert address != address.lower()  # checksummed
    other, _ = vault.new_account_key()
    assert other != address
    with pytest.raises(VaultError, match="could not be opened"):
        vault.unseal(sealed, context=other.lower().encode())


async def test_key_material_never_leaks(session_factory: SessionFactory) -> None:
    vault = await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    address, sealed = vault.new_account_key()
    private_key = vault.unseal(sealed, context=account_context(address))
    forbidden = [
        private_key,
        private_key.hex().encode(),
        private_key.hex().upper().encode(),
        base64.b64encode(private_key),
        PASSPHRASE.encode(),
    ]
    assert not any(secret in sealed for secret in forbidden)

    texts = [repr(vault), str(vault), repr(vault.signer(address, sealed)), repr(vars(Vault))]
    errors: list[BaseException] = []
    attempts: list[Callable[[], bytes]] = [
        lambda: vault.unseal(sealed, context=b"elsewhere"),
        lambda: vault.unseal(sealed[:-5], context=account_context(address)),
        lambda: vault.unseal(sealed.replace(b'"v":1', b'"v":9'), context=b"x"),
    ]
    for attempt in attempts:
        with pytest.raises(VaultError) as info:
            attempt()
        errors.append(info.value)
    with pytest.raises(VaultError) as info:
        await Vault.open(session_factory, passphrase=PASSPHRASE + "!", key_file=None)
    errors.append(info.value)
    for error in errors:
        assert error.__cause__ is None and error.__context__ is None
        texts += [str(error), repr(error), repr(error.args)]
    document = _fields(sealed)
    for text in texts:
        encoded = text.encode()
        assert not any(secret in encoded for secret in forbidden), text
        assert str(document["ct"]) not in text
    with pytest.raises(TypeError):
        pickle.dumps(vault)


async def test_unknown_signer_backend(session_factory: SessionFactory, key_file: Path) -> None:
    vault = await Vault.open(session_factory, passphrase=None, key_file=key_file)
    address, sealed = vault.new_account_key()
    with pytest.raises(VaultError, match="no signer backend named 'hsm'"):
        vault.signer(address, sealed, backend="hsm")


async def test_open_loses_the_first_use_race(
    session_factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes start on an empty database: the one whose insert fails uses the other's row."""
    winner = await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    sealed = winner.seal(b"s", context=b"c")
    real_read = vault_module._read_vault_row
    reads: list[object] = []

    async def read_as_if_empty_first(factory: SessionFactory) -> object:
        reads.append(factory)
        return None if len(reads) == 1 else await real_read(factory)

    monkeypatch.setattr(vault_module, "_read_vault_row", read_as_if_empty_first)
    loser = await Vault.open(session_factory, passphrase=PASSPHRASE, key_file=None)
    assert len(reads) == 2
    assert loser.unseal(sealed, context=b"c") == b"s"
