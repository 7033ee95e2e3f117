"""Signers: transactions, personal_sign and EIP-712 v3/v4, recovered with eth-account."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils.crypto import keccak

from txgate.core.errors import InvalidParams, VaultError
from txgate.custody.signer import (
    SIGNER_BACKENDS,
    LocalSigner,
    SignedTransaction,
    Signer,
)
from txgate.custody.vault import KeyEncryptionKey, Vault, account_context, create_key_file

# The EIP-712 specification's example key and address.
COW_KEY = keccak(text="cow")
COW = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
BOB = "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"

DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
DOMAIN = {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
}

# The "Mail" example of EIP-712 and the signature the specification gives for it.
MAIL = {
    "types": {
        "EIP712Domain": DOMAIN_TYPE,
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": DOMAIN,
    "message": {
        "from": {"name": "Cow", "wallet": COW},
        "to": {"name": "Bob", "wallet": BOB},
        "contents": "Hello, Bob!",
    },
}
MAIL_SIGNATURE = (
    "0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b915621c"
)

# MetaMask eth-sig-util's v4 example: arrays of structs and of addresses, and an unused type.
MAIL_V4 = {
    "types": {
        "EIP712Domain": DOMAIN_TYPE,
        "Person": [{"name": "name", "type": "string"}, {"name": "wallets", "type": "address[]"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person[]"},
            {"name": "contents", "type": "string"},
        ],
        "Group": [{"name": "name", "type": "string"}, {"name": "members", "type": "Person[]"}],
    },
    "primaryType": "Mail",
    "domain": DOMAIN,
    "message": {
        "from": {"name": "Cow", "wallets": [COW, "0xDeaDbeefdEAdbeefdEadbEEFdeadbeEFdEaDbeeF"]},
        "to": [
            {
                "name": "Bob",
                "wallets": [
                    BOB,
                    "0xB0BdaBea57B0BDABeA57b0bdABEA57b0BDabEa57",
                    "0xB0B0b0b0b0b0B000000000000000000000000000",
                ],
            }
        ],
        "contents": "Hello, Bob!",
    },
}
MAIL_V4_SIGNATURE = (
    "0x65cbd956f2fae28a601bebc9b906cea0191744bd4c4247bcd27cd08f8eb6b71c"
    "78efdf7a31dc9abee78f492292721f362d296cf86b4538e07b51303b67f749061b"
)

EIP1559_TX = {
    "type": 2,
    "chainId": 31337,
    "nonce": 7,
    "to": BOB,
    "value": 10**18,
    "data": b"",
    "gas": 21_000,
    "maxFeePerGas": 30 * 10**9,
    "maxPriorityFeePerGas": 10**9,
}
LEGACY_TX = {
    "chainId": 1,
    "nonce": 0,
    "to": BOB,
    "value": 1,
    "data": "0xdeadbeef",
    "gas": 50_000,
    "gasPrice": 20 * 10**9,
}


@pytest.fixture
def kek(tmp_path: Path) -> KeyEncryptionKey:
    create_key_file(tmp_path / "vault.key")
    return KeyEncryptionKey.from_key_file(tmp_path / "vault.key")


@pytest.fixture
def signer(kek: KeyEncryptionKey) -> LocalSigner:
    sealed = kek.seal(COW_KEY, context=account_context(COW))
    return LocalSigner(address=COW.lower(), key_material=sealed, kek=kek)


def test_address_is_checksummed(signer: LocalSigner) -> None:
    assert signer.address == COW


def test_no_key_on_the_instance(signer: LocalSigner) -> None:
    assert not hasattr(signer, "__dict__")
    held = [getattr(signer, name) for name in LocalSigner.__slots__]
    assert all(COW_KEY not in value for value in held if isinstance(value, bytes))
    for text in (repr(signer), str(signer)):
        assert COW_KEY.hex() not in text.lower()


# -- transactions --------------------------------------------------------------------------------


async def test_sign_eip1559(signer: LocalSigner) -> None:
    signed = await signer.sign_transaction(EIP1559_TX)
    assert isinstance(signed, SignedTransaction)
    assert signed.raw[0] == 2
    assert Account.recover_transaction(signed.raw) == COW
    assert signed.tx_hash == "0x" + keccak(signed.raw).hex()
    assert signed.tx_hash == signed.tx_hash.lower()
    assert signed == await signer.sign_transaction(EIP1559_TX)  # RFC 6979: deterministic


async def test_sign_legacy(signer: LocalSigner) -> None:
    signed = await signer.sign_transaction(LEGACY_TX)
    assert signed.raw[0] >= 0xC0  # an RLP list, not a typed envelope
    assert Account.recover_transaction(signed.raw) == COW
    expected = Account.sign_transaction(LEGACY_TX, COW_KEY)
    assert signed.raw == bytes(expected.raw_transaction)


async def test_sign_with_matching_from(signer: LocalSigner) -> None:
    signed = await signer.sign_transaction({**EIP1559_TX, "from": COW.lower()})
    assert Account.recover_transaction(signed.raw) == COW


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"from": BOB}, "tx.from is not the signing account"),
        ({"chainId": None}, "tx.chainId is required"),
        ({"chainId": 0}, "tx.chainId must not be 0"),
        ({"gas": None}, "gas"),
        ({"to": "0x1234"}, "to"),
        ({"value": -1}, "tx.value must be an integer"),
        ({"value": 2**256}, "tx.value must be an integer"),
        ({"nonce": True}, "tx.nonce must be an integer"),
        ({"value": "lots"}, "value"),
        ({"data": "zz"}, "data"),
        ({"gasPrice": 1}, "gasPrice"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_transaction(signer: LocalSigner, change: dict[str, Any], match: str) -> None:
    tx = {**EIP1559_TX, **change}
    for key in [key for key, value in change.items() if value is None]:
        del tx[key]
    with pytest.raises(InvalidParams, match=match) as info:
        await signer.sign_transaction(tx)
    assert info.value.__context__ is None
    assert COW_KEY.hex() not in str(info.value)


async def test_transaction_must_be_a_mapping(signer: LocalSigner) -> None:
    with pytest.raises(InvalidParams, match="must be an object"):
        await signer.sign_transaction([1, 2])  # type: ignore[arg-type]


# -- messages -----------------------------------------------------------------------------------


async def test_personal_sign(signer: LocalSigner) -> None:
    signature = await signer.sign_personal_message(b"hello txgate")
    assert len(bytes.fromhex(signature[2:])) == 65
    assert signature.startswith("0x")
    recovered = Account.recover_message(encode_defunct(b"hello txgate"), signature=signature)
    assert recovered == COW


async def test_personal_sign_needs_bytes(signer: LocalSigner) -> None:
    with pytest.raises(InvalidParams, match="must be bytes"):
        await signer.sign_personal_message("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["v3", "v4", "V4", "eip_712_v3"])
async def test_typed_data_mail(signer: LocalSigner, version: str) -> None:
    signature = await signer.sign_typed_data(MAIL, version)
    assert signature == MAIL_SIGNATURE
    assert Account.recover_message(encode_typed_data(full_message=MAIL), signature=signature) == COW


async def test_typed_data_v4_with_arrays(signer: LocalSigner) -> None:
    signature = await signer.sign_typed_data(MAIL_V4, "v4")
    assert signature == MAIL_V4_SIGNATURE


async def test_typed_data_v3_refuses_arrays(signer: LocalSigner) -> None:
    with pytest.raises(InvalidParams, match=r"v3 has no arrays.*Person\.wallets.*address\[\]"):
        await signer.sign_typed_data(MAIL_V4, "v3")


async def test_typed_data_v3_ignores_unused_array_types(signer: LocalSigner) -> None:
    data = copy.deepcopy(MAIL)
    data["types"]["Unused"] = [{"name": "items", "type": "uint256[]"}]  # type: ignore[index]
    assert await signer.sign_typed_data(data, "v3") == MAIL_SIGNATURE


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: d.pop("message"), "needs an object `message`"),
        (lambda d: d.update(primaryType="Letter"), "primaryType 'Letter' is not defined"),
        (lambda d: d["types"].update(Mail="oops"), "must be a list of"),
        (lambda d: d["types"]["Mail"].append({"name": "x", "type": "Missing"}), "Missing"),
        (lambda d: d["types"]["EIP712Domain"].reverse(), "EIP712Domain must list its fields"),
        (lambda d: d["message"]["from"].update(wallet=42), "typed data cannot be encoded"),
        (lambda d: d.update(primaryType="EIP712Domain"), "bare EIP-712 domain"),
    ],
)
async def test_typed_data_malformed(signer: LocalSigner, mangle: Any, match: str) -> None:
    data = copy.deepcopy(MAIL)
    mangle(data)
    with pytest.raises(InvalidParams, match=match) as info:
        await signer.sign_typed_data(data, "v4")
    assert info.value.__context__ is None


async def test_typed_data_unknown_version(signer: LocalSigner) -> None:
    with pytest.raises(InvalidParams, match="must be v3 or v4"):
        await signer.sign_typed_data(MAIL, "v1")


# -- keys and backends --------------------------------------------------------------------------


async def test_key_sealed_for_another_account(kek: KeyEncryptionKey) -> None:
    sealed = kek.seal(COW_KEY, context=account_context(COW))
    moved = LocalSigner(address=BOB, key_material=sealed, kek=kek)
    with pytest.raises(VaultError, match="could not be opened"):
        await moved.sign_personal_message(b"hi")


async def test_key_that_is_not_the_accounts(kek: KeyEncryptionKey) -> None:
    sealed = kek.seal(COW_KEY, context=account_context(BOB))  # right context, wrong key
    wrong = LocalSigner(address=BOB, key_material=sealed, kek=kek)
    with pytest.raises(VaultError, match="does not belong to account") as info:
        await wrong.sign_transaction(EIP1559_TX)
    assert COW_KEY.hex() not in str(info.value)


def test_signer_is_abstract() -> None:
    class Half(Signer):
        @property
        def address(self) -> str:
            return COW

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_builtin_backends_are_read_only() -> None:
    assert SIGNER_BACKENDS["local"] is LocalSigner
    with pytest.raises(TypeError):
        SIGNER_BACKENDS["hsm"] = LocalSigner  # type: ignore[index]


async def test_vault_uses_an_added_backend(kek: KeyEncryptionKey) -> None:
    class RemoteSigner(Signer):
        """What an HSM backend looks like: key material locates the key, nothing is opened."""

        def __init__(self, *, address: str, key_material: bytes, kek: KeyEncryptionKey) -> None:
            self._address, self.key_id = address, key_material.decode()

        @property
        def address(self) -> str:
            return self._address

        async def sign_transaction(self, tx: Any) -> SignedTransaction:
            return SignedTransaction(raw=b"", tx_hash="0x" + "00" * 32)

        async def sign_personal_message(self, message: bytes) -> str:
            return "0x" + "00" * 65

        async def sign_typed_data(self, data: Any, version: str) -> str:
            return "0x" + "00" * 65

    vault = Vault(kek, backends={**SIGNER_BACKENDS, "remote": RemoteSigner})
    remote = vault.signer(COW, b"hsm-slot-3", backend="remote")
    assert isinstance(remote, RemoteSigner)
    assert remote.key_id == "hsm-slot-3"
    local = vault.signer(COW, kek.seal(COW_KEY, context=account_context(COW)))
    assert isinstance(local, LocalSigner)
    assert Account.recover_transaction((await local.sign_transaction(EIP1559_TX)).raw) == COW
