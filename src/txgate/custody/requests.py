"""ECA-3 request parameters, checked once at the edge into plain typed values.

Every check raises `InvalidParams` naming the parameter by its position and field
(`0.value`, `1.chainId`), so a client sees exactly what to fix and nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txgate.core.errors import InvalidParams
from txgate.core.types import Address, parse_address, parse_bytes, parse_uint

MIN_GAS = 21_000
MAX_GAS = 30_000_000
# A fee above this is almost certainly a unit mistake (gwei typed as wei, times 1e9); refuse it.
MAX_FEE_PER_GAS = 100_000 * 10**9
MAX_NOTE = 1_000
MAX_URL = 2_000
MAX_DATA = 128 * 1024


@dataclass(frozen=True, slots=True)
class TransactionRequest:
    chain_id: int
    tx_type: int
    from_address: Address
    to_address: Address | None
    value: int
    data: bytes
    gas: int
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    gas_price: int | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeeBump:
    """Optional fee and gas fields of `custodian_replaceTransaction`'s metadata."""

    gas: int | None
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    gas_price: int | None


def _object(value: Any, *, param: str, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidParams(f"{param} must be an object", param=param)
    return value


def _optional_text(meta: dict[str, Any], key: str, *, param: str, limit: int) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidParams(
            f"{param}.{key} must be a string of at most {limit} characters", param=f"{param}.{key}"
        )
    return value


def parse_transaction(params: list[Any], *, supported_chains: frozenset[int]) -> TransactionRequest:
    tx = _object(params[0], param="0")
    meta = _object(params[1] if len(params) > 1 else None, param="1")

    if "from" not in tx:
        raise InvalidParams("0.from is required", param="0.from")
    sender = parse_address(tx["from"], param="0.from")
    to = parse_address(tx["to"], param="0.to") if tx.get("to") is not None else None
    value = parse_uint(tx.get("value", "0x0"), param="0.value")
    data = parse_bytes(tx.get("data", "0x"), param="0.data")
    if len(data) > MAX_DATA:
        raise InvalidParams(f"0.data is larger than {MAX_DATA} bytes", param="0.data")
    if to is None and not data:
        raise InvalidParams(
            "0.to is required unless 0.data holds contract creation code", param="0.to"
        )
    if "gas" not in tx:
        raise InvalidParams("0.gas (the gas limit) is required", param="0.gas")
    gas = parse_uint(tx["gas"], param="0.gas")
    if not MIN_GAS <= gas <= MAX_GAS:
        raise InvalidParams(f"0.gas must be between {MIN_GAS} and {MAX_GAS}", param="0.gas")

    has_1559 = "maxFeePerGas" in tx or "maxPriorityFeePerGas" in tx
    inferred = 2 if has_1559 else 0
    tx_type = parse_uint(tx["type"], param="0.type", maximum=0xFF) if "type" in tx else inferred
    max_fee = max_priority = gas_price = None
    if tx_type == 2:
        for key in ("maxFeePerGas", "maxPriorityFeePerGas"):
            if key not in tx:
                raise InvalidParams(
                    f"0.{key} is required for an EIP-1559 (type 0x2) transaction", param=f"0.{key}"
                )
        if "gasPrice" in tx:
            raise InvalidParams(
                "0.gasPrice cannot be combined with type 0x2 fee fields", param="0.gasPrice"
            )
        max_fee = parse_uint(tx["maxFeePerGas"], param="0.maxFeePerGas", maximum=MAX_FEE_PER_GAS)
        max_priority = parse_uint(
            tx["maxPriorityFeePerGas"], param="0.maxPriorityFeePerGas", maximum=MAX_FEE_PER_GAS
        )
        if max_priority > max_fee:
            raise InvalidParams(
                "0.maxPriorityFeePerGas must not exceed 0.maxFeePerGas",
                param="0.maxPriorityFeePerGas",
            )
        if max_fee == 0:
            raise InvalidParams("0.maxFeePerGas must be above zero", param="0.maxFeePerGas")
    elif tx_type in (0, 1):
        if has_1559:
            raise InvalidParams(
                "0.type must be 0x2 with fee fields maxFeePerGas/maxPriorityFeePerGas",
                param="0.type",
            )
        if "gasPrice" not in tx:
            raise InvalidParams(
                "0.gasPrice is required for a legacy transaction", param="0.gasPrice"
            )
        gas_price = parse_uint(tx["gasPrice"], param="0.gasPrice", maximum=MAX_FEE_PER_GAS)
        if gas_price == 0:
            raise InvalidParams("0.gasPrice must be above zero", param="0.gasPrice")
        tx_type = 0  # no access list is accepted, so type 0x1 signs as legacy
    else:
        raise InvalidParams(f"0.type {tx_type:#x} is not supported; use 0x0 or 0x2", param="0.type")

    if "chainId" not in meta:
        raise InvalidParams("1.chainId is required", param="1.chainId")
    chain_id = parse_uint(meta["chainId"], param="1.chainId", maximum=2**63 - 1)
    if chain_id not in supported_chains:
        supported = ", ".join(hex(chain) for chain in sorted(supported_chains)) or "none"
        raise InvalidParams(
            f"1.chainId {chain_id:#x} is not supported by this custodian (supported: {supported})",
            param="1.chainId",
        )
    return TransactionRequest(
        chain_id=chain_id,
        tx_type=tx_type,
        from_address=sender,
        to_address=to,
        value=value,
        data=data,
        gas=gas,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=max_priority,
        gas_price=gas_price,
        meta=parse_transaction_metadata(meta, param="1"),
    )


def parse_transaction_metadata(meta: dict[str, Any], *, param: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, limit in (
        ("originUrl", MAX_URL),
        ("note", MAX_NOTE),
        ("transactionCategory", 40),
        ("rpcUrl", MAX_URL),
    ):
        text = _optional_text(meta, key, param=param, limit=limit)
        if text is not None:
            out[key] = text
    publishes = meta.get("custodianPublishesTransaction", True)
    if not isinstance(publishes, bool):
        raise InvalidParams(
            f"{param}.custodianPublishesTransaction must be a boolean",
            param=f"{param}.custodianPublishesTransaction",
        )
    out["custodianPublishesTransaction"] = publishes
    return out


def parse_message_metadata(value: Any, *, param: str) -> dict[str, Any]:
    meta = _object(value, param=param, required=False)
    out: dict[str, Any] = {}
    if meta.get("chainId") is not None:
        out["chainId"] = parse_uint(meta["chainId"], param=f"{param}.chainId", maximum=2**63 - 1)
    for key, limit in (("originUrl", MAX_URL), ("note", MAX_NOTE)):
        text = _optional_text(meta, key, param=param, limit=limit)
        if text is not None:
            out[key] = text
    return out


def parse_fee_bump(value: Any, *, param: str) -> FeeBump:
    meta = _object(value, param=param, required=False)

    def field_(key: str) -> int | None:
        if meta.get(key) is None:
            return None
        return parse_uint(
            meta[key], param=f"{param}.{key}", maximum=MAX_GAS if key == "gas" else MAX_FEE_PER_GAS
        )

    return FeeBump(
        field_("gas"), field_("maxFeePerGas"), field_("maxPriorityFeePerGas"), field_("gasPrice")
    )
