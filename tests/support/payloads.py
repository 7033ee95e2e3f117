"""Request bodies the tests send: an EIP-1559 transfer and the spec's EIP-712 "Mail" example."""

from __future__ import annotations

from typing import Any

from eth_account import Account as EthAccount

GWEI = 10**9


def eth_transfer(
    sender: str, *, value: int = 1, to: str | None = None, gas: int = 21_000
) -> dict[str, Any]:
    """`custodian_createTransaction`'s first param: a type-2 transfer to a new address by default."""
    return {
        "from": sender,
        "to": to or EthAccount.create().address,
        "type": "0x2",
        "value": hex(value),
        "gas": hex(gas),
        "maxFeePerGas": hex(20 * GWEI),
        "maxPriorityFeePerGas": hex(GWEI),
    }


# The typed-data example of the ECA-3 spec (custodian_signTypedData), on the dev chain.
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 31337,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}
