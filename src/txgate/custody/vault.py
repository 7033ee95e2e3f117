"""The key vault: the key-encryption key (KEK) and envelope encryption of every secret at rest.

The KEK is derived once at start-up, either from an operator passphrase (scrypt) or from a key
file holding 32 random bytes. It never touches the database: the `vault_keys` row holds only the
KDF parameters and a *check value* (a known plaintext sealed under the KEK) so a wrong passphrase
fails loudly at start-up instead of later, on the first signature.

Envelope encryption (`KeyEncryptionKey.seal`): each secret gets its own random 256-bit data key;
the secret is encrypted under the data key and the data key is wrapped under the KEK, both with
AES-256-GCM. The caller's *context* (for an account key, its lower-case address) is associated
data of both, so a sealed blob copied into another row does not open. A sealed blob is a
versioned JSON document::

    {"v": 1, "alg": "A256GCM", "wrapped": b64, "iv_wrap": b64, "iv": b64, "ct": b64}

Every failure to open is one `VaultError` with a fixed message: it never says which step failed
and never carries key bytes, passphrases or ciphertext (not even as a chained exception).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import secrets
import unicodedata
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.core.errors import VaultError
from txgate.storage.tables import VaultKey

if TYPE_CHECKING:
    from txgate.custody.signer import Signer, SignerFactory

__all__ = [
    "KEK_MISMATCH",
    "OPEN_FAILED",
    "KeyEncryptionKey",
    "SessionFactory",
    "Vault",
    "account_context",
    "create_key_file",
]

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
"""Returns `async with`-able sessions inside a transaction that the factory commits on exit."""

OPEN_FAILED = "sealed key could not be opened: wrong key-encryption key or tampered data"
KEK_MISMATCH = "vault passphrase or key file does not match this database"

VAULT_ROW_ID = "default"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_IV_BYTES = 12
_SEAL_VERSION = 1
_SEAL_ALG = "A256GCM"
# Distinct prefixes keep the wrapped data key and the payload from ever sharing associated data.
_AAD_WRAP = b"txgate/vault/wrap/v1\x00"
_AAD_DATA = b"txgate/vault/data/v1\x00"
_KEYFILE_INFO = b"txgate/vault/kek/v1"
_CHECK_CONTEXT = b"txgate/vault/check"
_CHECK_PLAINTEXT = b"txgate vault check v1"


class KeyEncryptionKey:
    """The 32-byte KEK and the parameters that re-derive it. The key itself lives only inside an
    `AESGCM` object; it is never an attribute, never in `repr()`, and cannot be pickled."""

    __slots__ = ("_aead", "_params")

    def __init__(self, key: bytes, params: Mapping[str, Any]) -> None:
        if len(key) != _KEY_BYTES:
            raise VaultError("key-encryption key must be 32 bytes")
        self._aead = AESGCM(key)
        self._params = dict(params)

    @classmethod
    def from_passphrase(
        cls, passphrase: str, params: Mapping[str, Any] | None = None
    ) -> KeyEncryptionKey:
        """Derive with scrypt; `params` from the database, or None for a new vault (new salt)."""
        if not passphrase:
            raise VaultError("vault passphrase is empty")
        if params is None:
            params = {
                "kdf": "scrypt",
                "salt": base64.b64encode(secrets.token_bytes(_SALT_BYTES)).decode(),
                "n": SCRYPT_N,
                "r": SCRYPT_R,
                "p": SCRYPT_P,
            }
        if params.get("kdf") != "scrypt":
            raise VaultError("vault parameters are not for a passphrase (scrypt)")
        try:
            salt = base64.b64decode(params["salt"], validate=True)
            n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise VaultError("vault scrypt parameters are malformed") from None
        # 128 * n * r bytes of working memory, plus headroom over hashlib's 32 MiB default.
        maxmem = 128 * n * r * p + 2**20 * 4
        key = hashlib.scrypt(
            unicodedata.normalize("NFC", passphrase).encode(),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=maxmem,
            dklen=_KEY_BYTES,
        )
        return cls(key, params)

    @classmethod
    def from_key_file(cls, path: Path) -> KeyEncryptionKey:
        """Read 32 random bytes (raw, or 64 hex digits) and expand them with HKDF-SHA256."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise VaultError(f"vault key file {path} cannot be read: {exc.strerror}") from None
        material = _parse_key_file(content)
        if material is None:
            raise VaultError(
                f"vault key file {path} must hold 32 random bytes, raw or as 64 hex digits"
            )
        key = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=_KEYFILE_INFO)
        return cls(key.derive(material), {"kdf": "keyfile"})

    @property
    def params(self) -> dict[str, Any]:
        """The JSON-able KDF parameters (salt and cost for scrypt); never the key."""
        return dict(self._params)

    @property
    def kdf(self) -> str:
        return str(self._params.get("kdf"))

    def seal(self, secret: bytes, *, context: bytes) -> bytes:
        """Encrypt `secret` under a fresh data key wrapped by this KEK, bound to `context`."""
        data_key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
        iv_wrap, iv = secrets.token_bytes(_IV_BYTES), secrets.token_bytes(_IV_BYTES)
        wrapped = self._aead.encrypt(iv_wrap, data_key, _AAD_WRAP + context)
        ct = AESGCM(data_key).encrypt(iv, secret, _AAD_DATA + context)
        document = {
            "v": _SEAL_VERSION,
            "alg": _SEAL_ALG,
            "wrapped": _b64(wrapped),
            "iv_wrap": _b64(iv_wrap),
            "iv": _b64(iv),
            "ct": _b64(ct),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        """The secret `seal` was given, or `VaultError(OPEN_FAILED)` for any failure."""
        secret = self._try_open(sealed, context)
        if secret is None:
            # Raised outside any `except` so no lower exception (holding the blob) is chained.
            raise VaultError(OPEN_FAILED)
        return secret

    def make_check(self) -> bytes:
        """A check value stored next to the KDF parameters, to recognise this KEK later."""
        return self.seal(_CHECK_PLAINTEXT, context=_CHECK_CONTEXT)

    def verify_check(self, check: bytes) -> None:
        """Raise `VaultError(KEK_MISMATCH)` unless `check` was made by this KEK."""
        if self._try_open(check, _CHECK_CONTEXT) != _CHECK_PLAINTEXT:
            raise VaultError(KEK_MISMATCH)

    def _try_open(self, sealed: bytes, context: bytes) -> bytes | None:
        try:
            document = json.loads(sealed)
            if (
                not isinstance(document, dict)
                or document.get("v") != _SEAL_VERSION
                or document.get("alg") != _SEAL_ALG
            ):
                return None
            wrapped, iv_wrap, iv, ct = (
                base64.b64decode(document[name], validate=True)
                for name in ("wrapped", "iv_wrap", "iv", "ct")
            )
            data_key = self._aead.decrypt(iv_wrap, wrapped, _AAD_WRAP + context)
            if len(data_key) != _KEY_BYTES:
                return None
            return AESGCM(data_key).decrypt(iv, ct, _AAD_DATA + context)
        except (InvalidTag, KeyError, TypeError, ValueError, binascii.Error):
            return None

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(kdf={self.kdf!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyEncryptionKey cannot be pickled")


class Vault:
    """A KEK bound to one database: seals and opens account keys and other secrets, and makes
    signers for accounts. Build it with `await Vault.open(...)` at the service's wiring point."""

    __slots__ = ("_backends", "_kek")

    def __init__(
        self, kek: KeyEncryptionKey, *, backends: Mapping[str, SignerFactory] | None = None
    ) -> None:
        """`backends` maps `accounts.signer_backend` names to signer factories; None means the
        built-in `SIGNER_BACKENDS`. A deployment passes its own mapping to add HSM/KMS signers."""
        if backends is None:
            # Imported here because signer.py imports this module (signers open sealed keys).
            from txgate.custody.signer import SIGNER_BACKENDS

            backends = SIGNER_BACKENDS
        self._kek = kek
        self._backends = backends

    @classmethod
    async def open(
        cls,
        session_factory: SessionFactory,
        *,
        passphrase: str | None,
        key_file: Path | None,
        backends: Mapping[str, SignerFactory] | None = None,
    ) -> Vault:
        """Derive the KEK and check it against the database, creating the vault row on first
        use. Derivation (scrypt, ~0.1 s) runs in a worker thread, outside any transaction."""
        if passphrase is None and key_file is None:
            raise VaultError(
                "no vault key configured: set TXGATE_VAULT_PASSPHRASE or TXGATE_VAULT_KEY_FILE"
            )
        if passphrase is not None and key_file is not None:
            raise VaultError(
                "set only one of TXGATE_VAULT_PASSPHRASE and TXGATE_VAULT_KEY_FILE, not both"
            )
        stored = await _read_vault_row(session_factory)
        if stored is None:
            kek = await asyncio.to_thread(_derive, passphrase, key_file, None)
            try:
                async with session_factory() as session:
                    session.add(
                        VaultKey(
                            id=VAULT_ROW_ID,
                            params=kek.params,
                            check=kek.make_check(),
                            created_at=datetime.now(UTC),
                        )
                    )
                    await session.flush()
            except IntegrityError:
                # Another process created the vault between our read and our insert: use theirs.
                stored = await _read_vault_row(session_factory)
                if stored is None:
                    raise
            else:
                return cls(kek, backends=backends)
        params, check = stored
        kdf = params.get("kdf")
        if kdf == "scrypt" and passphrase is None:
            raise VaultError(
                "this database's vault is protected by a passphrase: set TXGATE_VAULT_PASSPHRASE"
            )
        if kdf == "keyfile" and key_file is None:
            raise VaultError(
                "this database's vault is protected by a key file: set TXGATE_VAULT_KEY_FILE"
            )
        if kdf not in ("scrypt", "keyfile"):
            raise VaultError("this database's vault uses an unknown key derivation")
        kek = await asyncio.to_thread(_derive, passphrase, key_file, params)
        kek.verify_check(check)
        return cls(kek, backends=backends)

    def new_account_key(self) -> tuple[str, bytes]:
        """A fresh secp256k1 key: its checksummed address and the key sealed to that address."""
        while True:
            private_key = secrets.token_bytes(_KEY_BYTES)
            try:
                address = str(Account.from_key(private_key).address)
            except ValueError:  # zero or >= the curve order: draw again
                continue
            return address, self._kek.seal(private_key, context=account_context(address))

    def signer(self, address: str, sealed: bytes, *, backend: str = "local") -> Signer:
        """The signer for an account row (`signer_backend`, `sealed_key`)."""
        factory = self._backends.get(backend)
        if factory is None:
            raise VaultError(f"no signer backend named {backend!r} is installed")
        return factory(address=address, key_material=sealed, kek=self._kek)

    def seal(self, secret: bytes, *, context: bytes) -> bytes:
        return self._kek.seal(secret, context=context)

    def unseal(self, sealed: bytes, *, context: bytes) -> bytes:
        """`KeyEncryptionKey.open`; named apart from the `Vault.open` constructor."""
        return self._kek.open(sealed, context=context)

    @property
    def kdf(self) -> str:
        return self._kek.kdf

    def __repr__(self) -> str:
        return f"Vault(kdf={self.kdf!r}, backends={sorted(self._backends)!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Vault cannot be pickled")


def account_context(address: str) -> bytes:
    """The associated data an account's sealed key is bound to: its lower-case address."""
    return address.lower().encode()


def create_key_file(path: Path) -> None:
    """Write a new key file (64 hex digits, mode 0600); refuse to overwrite an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultError(
            f"vault key file {path} already exists; refusing to overwrite it"
        ) from None
    except OSError as exc:
        raise VaultError(f"vault key file {path} cannot be created: {exc.strerror}") from None
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(_KEY_BYTES) + "\n")


def _derive(
    passphrase: str | None, key_file: Path | None, params: Mapping[str, Any] | None
) -> KeyEncryptionKey:
    if key_file is not None:
        return KeyEncryptionKey.from_key_file(key_file)
    assert passphrase is not None
    return KeyEncryptionKey.from_passphrase(passphrase, params)


async def _read_vault_row(
    session_factory: SessionFactory,
) -> tuple[dict[str, Any], bytes] | None:
    async with session_factory() as session:
        row = await session.get(VaultKey, VAULT_ROW_ID)
        if row is None:
            return None
        # Copied inside the session: the row may be expired once the transaction commits.
        return dict(row.params), bytes(row.check)


def _parse_key_file(content: bytes) -> bytes | None:
    if len(content) == _KEY_BYTES:
        return content
    text = content.strip()
    if text[:2] in (b"0x", b"0X"):
        text = text[2:]
    if len(text) != _KEY_BYTES * 2:
        return None
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
