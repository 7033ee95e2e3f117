"""What a request does, in the policy's words: which asset moves, how much, and to whom.

`describe_call` reads a transaction's (to, value, data) and `describe_typed_data` an EIP-712
message, and both answer with the few facts a policy rule can match on. They never raise: a
selector the module does not know, or calldata that does not decode as its known signature,
is described as what it certainly is, a call to `to` carrying `value` of the native asset.

Choices a reader should know (they decide what amount and velocity rules see):

- `approve` / `increaseAllowance` / `permit`: the spender is the destination and the allowance
  the amount, since granting an allowance is what lets value move later.
- `setApprovalForAll(operator, true)` counts as an unlimited allowance (amount 2**256 - 1) so an
  `amount.max` rule can never let it through by accident; `false` (a revocation) is amount 0.
- `transferFrom` has the same selector on ERC-20 and ERC-721; without chain state the two cannot
  be told apart, so the third argument is reported as the amount (a token id on ERC-721).
- ERC-721 `safeTransferFrom` moves one token: amount 1, the id in `token_id`.
- A typed-data permit whose amount cannot be read counts as unlimited, for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError

from txgate.core.types import UINT256_MAX

NATIVE = "native"


@dataclass(frozen=True, slots=True)
class CallSummary:
    """The policy's view of a transaction: `method` is a known name or None, `selector` the
    first four bytes of the calldata as hex (None when there is no calldata)."""

    method: str | None
    selector: str | None
    asset: str
    amount: int
    destination: str | None
    token_id: int | None = None


# (decoded arguments, contract) → (asset, amount, destination, token_id)
Effect = tuple[str, int, str | None, int | None]
Reader = Callable[[Sequence[Any], str], Effect]


@dataclass(frozen=True, slots=True)
class _Signature:
    method: str
    types: tuple[str, ...]
    read: Reader


def _erc20_to(args: Sequence[Any], to: str) -> Effect:
    return to, int(args[1]), str(args[0]).lower(), None


def _erc20_from_to(args: Sequence[Any], to: str) -> Effect:
    return to, int(args[2]), str(args[1]).lower(), None


def _operator(args: Sequence[Any], to: str) -> Effect:
    return to, UINT256_MAX if args[1] else 0, str(args[0]).lower(), None


def _nft(args: Sequence[Any], to: str) -> Effect:
    return to, 1, str(args[1]).lower(), int(args[2])


def _erc1155(args: Sequence[Any], to: str) -> Effect:
    return to, int(args[3]), str(args[1]).lower(), int(args[2])


def _erc1155_batch(args: Sequence[Any], to: str) -> Effect:
    return to, sum(int(amount) for amount in args[3]), str(args[1]).lower(), None


def _permit(args: Sequence[Any], to: str) -> Effect:
    return to, int(args[2]), str(args[1]).lower(), None


_SIGNATURES: dict[bytes, _Signature] = {
    bytes.fromhex(selector): _Signature(method, types, read)
    for selector, method, types, read in (
        ("a9059cbb", "transfer", ("address", "uint256"), _erc20_to),
        ("23b872dd", "transferFrom", ("address", "address", "uint256"), _erc20_from_to),
        ("095ea7b3", "approve", ("address", "uint256"), _erc20_to),
        ("39509351", "increaseAllowance", ("address", "uint256"), _erc20_to),
        ("a22cb465", "setApprovalForAll", ("address", "bool"), _operator),
        ("42842e0e", "safeTransferFrom", ("address", "address", "uint256"), _nft),
        ("b88d4fde", "safeTransferFrom", ("address", "address", "uint256", "bytes"), _nft),
        (
            "f242432a",
            "safeTransferFrom",
            ("address", "address", "uint256", "uint256", "bytes"),
            _erc1155,
        ),
        (
            "2eb2c2d6",
            "safeBatchTransferFrom",
            ("address", "address", "uint256[]", "uint256[]", "bytes"),
            _erc1155_batch,
        ),
        (
            "d505accf",
            "permit",
            ("address", "address", "uint256", "uint256", "uint8", "bytes32", "bytes32"),
            _permit,
        ),
    )
}


def describe_call(to: str | None, value: int, data: bytes) -> CallSummary:
    """Describe a transaction from its recipient, native value and calldata. Never raises."""
    if to is None:
        return CallSummary("deploy", None, NATIVE, value, None)
    to = to.lower()
    if not data:
        return CallSummary(None, None, NATIVE, value, to)
    # Shorter than four bytes reaches the fallback function: the selector is what is there.
    selector = "0x" + data[:4].hex()
    signature = _SIGNATURES.get(data[:4]) if len(data) >= 4 else None
    if signature is not None:
        try:
            asset, amount, destination, token_id = signature.read(
                decode(signature.types, data[4:]), to
            )
        except (DecodingError, ValueError, OverflowError, TypeError, IndexError):
            pass  # malformed arguments: not the known method, described as an unknown call
        else:
            return CallSummary(signature.method, selector, asset, amount, destination, token_id)
    return CallSummary(None, selector, NATIVE, value, to)


# --- EIP-712 ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypedSummary:
    """The policy's view of a typed-data message. For permits, `method` is "permit", the
    spender is the destination and the allowance the amount; `asset` is None when nothing
    moves or when a batch permit covers several tokens (no asset rule can match it then)."""

    primary_type: str | None
    verifying_contract: str | None
    chain_id: int | None
    method: str | None = None
    destination: str | None = None
    asset: str | None = None
    amount: int = 0


_PERMIT2_SINGLE = frozenset({"PermitSingle", "PermitTransferFrom", "PermitWitnessTransferFrom"})
_PERMIT2_BATCH = frozenset(
    {"PermitBatch", "PermitBatchTransferFrom", "PermitBatchWitnessTransferFrom"}
)


def describe_typed_data(data: Mapping[str, Any]) -> TypedSummary:
    """Describe an EIP-712 message (EIP-2612 and DAI `Permit`, Uniswap Permit2). Never raises."""
    primary = data.get("primaryType")
    primary_type = primary if isinstance(primary, str) else None
    domain = _mapping(data.get("domain"))
    message = _mapping(data.get("message"))
    contract = _address(domain.get("verifyingContract"))
    chain_id = _uint(domain.get("chainId"))
    base = TypedSummary(primary_type, contract, chain_id)
    spender = _address(message.get("spender"))
    if primary_type == "Permit":
        if "allowed" in message:  # DAI's permit: a yes/no for an unlimited allowance
            amount = UINT256_MAX if message.get("allowed") is not False else 0
        else:
            amount = _allowance(message.get("value"))
        return _permit_summary(base, spender, [(contract, amount)])
    if primary_type in _PERMIT2_SINGLE:
        grant = _mapping(message.get("details") or message.get("permitted"))
        return _permit_summary(
            base, spender, [(_address(grant.get("token")), _allowance(grant.get("amount")))]
        )
    if primary_type in _PERMIT2_BATCH:
        grants = message.get("details") or message.get("permitted")
        entries = [
            (_address(_mapping(g).get("token")), _allowance(_mapping(g).get("amount")))
            for g in (grants if isinstance(grants, list) else [])
        ]
        return _permit_summary(base, spender, entries)
    return base


def _permit_summary(
    base: TypedSummary, spender: str | None, grants: list[tuple[str | None, int]]
) -> TypedSummary:
    tokens = {token for token, _ in grants}
    if len(tokens) == 1 and None not in tokens:
        asset, amount = grants[0][0], sum(amount for _, amount in grants)
    else:
        # Several tokens (or an unreadable one): amounts in different units cannot be added, so
        # the largest stands for the permit and no asset-specific rule can match it.
        asset, amount = None, max((amount for _, amount in grants), default=UINT256_MAX)
    return TypedSummary(
        base.primary_type,
        base.verifying_contract,
        base.chain_id,
        method="permit",
        destination=spender,
        asset=asset,
        amount=min(amount, UINT256_MAX),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _address(value: object) -> str | None:
    if isinstance(value, str) and len(value) == 42 and value[:2] in ("0x", "0X"):
        try:
            int(value[2:], 16)
        except ValueError:
            return None
        return value.lower()
    return None


def _uint(value: object) -> int | None:
    """A typed-data integer: JSON number, decimal string or 0x hex string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        try:
            number = int(value, 16) if value[:2].lower() == "0x" else int(value, 10)
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _allowance(value: object) -> int:
    number = _uint(value)
    return UINT256_MAX if number is None else number
