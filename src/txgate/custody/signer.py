"""Signers: the one interface the custody pipeline signs through, and the local (vault) backend.

`Signer` is abstract: `address`, `sign_transaction`, `sign_personal_message` and
`sign_typed_data` are required of every backend. A backend is registered as a *signer factory*,
called with keyword arguments only::

    factory(address=..., key_material=..., kek=...) -> Signer

`address` and `key_material` come from the account row (`accounts.address`,
`accounts.sealed_key`) and `accounts.signer_backend` names the factory. For the built-in `"local"`
backend (`LocalSigner`) the key material is the account's private key sealed by the vault.

Adding an HSM, a cloud KMS or a remote signer needs no change to the pipeline: subclass `Signer`,
store whatever locates the key (a KMS key id, sealed API credentials — `kek` is there to open
them) as the account's key material, and give the wiring point a mapping that extends the
built-ins, e.g. ``Vault(kek, backends={**SIGNER_BACKENDS, "kms": KmsSigner})`` (a deployment may
load the extra factories from an entry-point group). `SIGNER_BACKENDS` itself is read-only: no
module-level state is ever mutated. `prepare_transaction` and `encode_typed_message` do the
input checks every backend needs, so all backends reject bad input with the same
`InvalidParams` messages.

`LocalSigner` opens the sealed key for the duration of one call and keeps the decrypted key off
the instance, out of `repr()` and out of exception tracebacks. (Python cannot wipe memory, so
this limits where the key is reachable from; it is not a guarantee that no copy remains.)
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from eth_abi.exceptions import EncodingError
from eth_account import Account
from eth_account.messages import SignableMessage, encode_defunct, encode_typed_data
from eth_utils.address import is_hex_address, to_checksum_address
from eth_utils.exceptions import ValidationError
from rlp.exceptions import RLPException

from txgate.core.errors import InvalidParams, VaultError
from txgate.core.types import UINT256_MAX
from txgate.custody.vault import account_context

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from txgate.custody.vault import KeyEncryptionKey

__all__ = [
    "SIGNER_BACKENDS",
    "LocalSigner",
    "SignedTransaction",
    "Signer",
    "SignerFactory",
    "encode_typed_message",
    "prepare_transaction",
    "typed_data_version",
]

T = TypeVar("T")

# What eth-account (and the eth-abi / rlp libraries under it) raise for a malformed payload.
_PAYLOAD_ERRORS = (TypeError, ValueError, KeyError, ValidationError, EncodingError, RLPException)

_UINT64_MAX = 2**64 - 1
_INT_LIMITS = {
    "chainId": _UINT64_MAX,
    "nonce": _UINT64_MAX,
    "gas": _UINT64_MAX,
    "value": UINT256_MAX,
    "gasPrice": UINT256_MAX,
    "maxFeePerGas": UINT256_MAX,
    "maxPriorityFeePerGas": UINT256_MAX,
}
_EIP712_DOMAIN_FIELDS = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)
_ARRAY_SUFFIX = re.compile(r"(\[\d*\])+$")
_TYPED_DATA_VERSIONS = {"v3": "v3", "v4": "v4", "eip_712_v3": "v3", "eip_712_v4": "v4"}


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    """A signed transaction ready for `eth_sendRawTransaction`; `tx_hash` is 0x lower-case hex."""

    raw: bytes
    tx_hash: str


class Signer(ABC):
    """Signs for one account. Every method may raise `InvalidParams` (bad payload) or
    `VaultError` (the key could not be used)."""

    __slots__ = ()

    @property
    @abstractmethod
    def address(self) -> str:
        """The account's checksummed address."""

    @abstractmethod
    async def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTransaction:
        """Sign an eth-account transaction dict: type 2 (`maxFeePerGas`,
        `maxPriorityFeePerGas`) or legacy (`gasPrice`); `chainId` is required (EIP-155)."""

    @abstractmethod
    async def sign_personal_message(self, message: bytes) -> str:
        """EIP-191 `personal_sign` of `message`: a 65-byte signature as 0x hex."""

    @abstractmethod
    async def sign_typed_data(self, data: Mapping[str, Any], version: str) -> str:
        """EIP-712 signature of a full typed-data message (`types`, `primaryType`, `domain`,
        `message`) for `version` "v3" or "v4": a 65-byte signature as 0x hex."""


class SignerFactory(Protocol):
    """Builds a signer for one account row; `LocalSigner` itself is one."""

    def __call__(self, *, address: str, key_material: bytes, kek: KeyEncryptionKey) -> Signer: ...


class LocalSigner(Signer):
    """Signs with a secp256k1 key sealed by the vault, opened afresh for every call."""

    __slots__ = ("_address", "_kek", "_sealed")

    def __init__(self, *, address: str, key_material: bytes, kek: KeyEncryptionKey) -> None:
        if not is_hex_address(address):
            raise InvalidParams("signer address must be a 20-byte hex address", param="address")
        self._address = str(to_checksum_address(address))
        self._sealed = key_material
        self._kek = kek

    @property
    def address(self) -> str:
        return self._address

    async def sign_transaction(self, tx: Mapping[str, Any]) -> SignedTransaction:
        prepared = prepare_transaction(tx, address=self._address)
        signed = self._with_account(lambda account: account.sign_transaction(prepared))
        return SignedTransaction(
            raw=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex()
        )

    async def sign_personal_message(self, message: bytes) -> str:
        if not isinstance(message, bytes | bytearray):
            raise InvalidParams("message to sign must be bytes", param="message")
        signable = encode_defunct(primitive=bytes(message))
        return self._sign_message(signable)

    async def sign_typed_data(self, data: Mapping[str, Any], version: str) -> str:
        return self._sign_message(encode_typed_message(data, version))

    def _sign_message(self, signable: SignableMessage) -> str:
        signed = self._with_account(lambda account: account.sign_message(signable))
        return "0x" + bytes(signed.signature).hex()

    def _with_account(self, operation: Callable[[LocalAccount], T]) -> T:
        """Run `operation` with the opened key. Errors are raised only after the account object
        is dropped, so no traceback frame holds a reference to the private key."""
        private_key = self._kek.open(self._sealed, context=account_context(self._address))
        try:
            account: LocalAccount | None = Account.from_key(private_key)
        except _PAYLOAD_ERRORS:
            account = None
        del private_key
        problem: Exception = VaultError(f"sealed key does not belong to account {self._address}")
        try:
            if account is not None and account.address == self._address:
                return operation(account)
        except _PAYLOAD_ERRORS as exc:
            problem = InvalidParams(f"cannot sign: {exc}")
        finally:
            del account
        raise problem

    def __repr__(self) -> str:
        return f"LocalSigner(address={self._address!r})"

    def __reduce__(self) -> Any:
        raise TypeError("a LocalSigner cannot be pickled")


SIGNER_BACKENDS: Mapping[str, SignerFactory] = MappingProxyType({"local": LocalSigner})
"""The built-in signer backends, by the name stored in `accounts.signer_backend`."""


def prepare_transaction(tx: Mapping[str, Any], *, address: str) -> dict[str, Any]:
    """Check a transaction dict before any key is touched; drop a `from` equal to `address`.

    eth-account validates field types and names; this adds what it lets through: a required
    `chainId` (no replayable pre-EIP-155 signatures), integer ranges, and the sender.
    """
    if not isinstance(tx, Mapping):
        raise InvalidParams("transaction must be an object", param="tx")
    prepared = dict(tx)
    sender = prepared.pop("from", None)
    if sender is not None and (not isinstance(sender, str) or sender.lower() != address.lower()):
        raise InvalidParams(f"tx.from is not the signing account {address}", param="tx.from")
    if "chainId" not in prepared:
        raise InvalidParams(
            "tx.chainId is required: txgate signs only replay-protected (EIP-155) transactions",
            param="tx.chainId",
        )
    for field, maximum in _INT_LIMITS.items():
        value = prepared.get(field)
        if isinstance(value, bool) or (isinstance(value, int) and not 0 <= value <= maximum):
            raise InvalidParams(
                f"tx.{field} must be an integer from 0 to {maximum:#x}", param=f"tx.{field}"
            )
    if prepared.get("chainId") == 0:
        raise InvalidParams("tx.chainId must not be 0", param="tx.chainId")
    return prepared


def typed_data_version(version: str) -> str:
    """Normalise a typed-data version: v3 or v4, also as eip_712_v3 or eip_712_v4 (ECA-3)."""
    normalised = _TYPED_DATA_VERSIONS.get(version.lower()) if isinstance(version, str) else None
    if normalised is None:
        raise InvalidParams(
            f"typed data version must be v3 or v4, got {version!r}", param="version"
        )
    return normalised


def encode_typed_message(data: Mapping[str, Any], version: str) -> SignableMessage:
    """The EIP-712 message to sign, or `InvalidParams` naming what is wrong.

    v3 (MetaMask's `eth_signTypedData_v3`) has no arrays: MetaMask refuses any array-typed field
    in v3, while eth-account always encodes arrays the v4 way, so arrays are refused here. On
    data without arrays v3 and v4 produce the same hash.
    """
    version = typed_data_version(version)
    if not isinstance(data, Mapping):
        raise InvalidParams("typed data must be an object", param="data")
    for key in ("types", "domain", "message"):
        if not isinstance(data.get(key), Mapping):
            raise InvalidParams(f"typed data needs an object `{key}`", param=f"data.{key}")
    for struct, fields in data["types"].items():
        if not isinstance(fields, list) or not all(
            isinstance(field, Mapping)
            and isinstance(field.get("name"), str)
            and isinstance(field.get("type"), str)
            for field in fields
        ):
            raise InvalidParams(
                f"typed data type {struct} must be a list of {{name, type}} objects",
                param=f"data.types.{struct}",
            )
    message = dict(data)
    message["types"] = types = _types_to_encode(data["types"], data.get("primaryType"))
    for struct, fields in types.items():
        if version == "v3":
            for field in fields:
                if field["type"].endswith("]"):
                    raise InvalidParams(
                        f"typed data v3 has no arrays, but field {struct}.{field['name']} has "
                        f"type {field['type']}; sign it as v4",
                        param=f"data.types.{struct}",
                    )
    try:
        return encode_typed_data(full_message=message)
    except _PAYLOAD_ERRORS as exc:
        problem = f"typed data cannot be encoded: {exc}"
    raise InvalidParams(problem, param="data")


def _types_to_encode(types: Mapping[str, Any], primary_type: Any) -> dict[str, Any]:
    """The types eth-account should see, so it hashes what MetaMask hashes.

    MetaMask encodes only the types reachable from `primaryType` and ignores the rest; eth-account
    refuses a message with unused types ("Unable to determine primary type"), so they are pruned.
    eth-account hashes the domain with its fields in the EIP-712 order whatever the order in
    `types.EIP712Domain`, while MetaMask follows the declared order: a declared domain that
    deviates is refused rather than signed under a hash the dapp does not expect.
    """
    domain_fields = types.get("EIP712Domain")
    if domain_fields is not None:
        declared = [(field["name"], field["type"]) for field in domain_fields]
        canonical = [field for field in _EIP712_DOMAIN_FIELDS if field in declared]
        if declared != canonical:
            raise InvalidParams(
                "types.EIP712Domain must list its fields in the EIP-712 order and types: "
                + ", ".join(f"{name} {type_}" for name, type_ in _EIP712_DOMAIN_FIELDS),
                param="data.types.EIP712Domain",
            )
    if primary_type is None:
        return dict(types)
    if not isinstance(primary_type, str) or primary_type not in types:
        raise InvalidParams(
            f"typed data primaryType {primary_type!r} is not defined in types",
            param="data.primaryType",
        )
    if primary_type == "EIP712Domain":
        raise InvalidParams(
            "signing a bare EIP-712 domain is not supported", param="data.primaryType"
        )
    reachable: set[str] = set()
    pending = [primary_type]
    while pending:
        name = pending.pop()
        if name in reachable or name not in types:
            continue
        reachable.add(name)
        pending.extend(_ARRAY_SUFFIX.sub("", field["type"]) for field in types[name])
    return {
        name: fields
        for name, fields in types.items()
        if name in reachable or name == "EIP712Domain"
    }
