"""Chain access: the JSON-RPC client for Ethereum nodes and the local dev-chain launcher.

A foundation: imports `txgate.core` only, and no part of txgate.
"""

from txgate.chain.client import NodeClient
from txgate.chain.devchain import DEV_ACCOUNTS, DEV_MNEMONIC, Anvil, DevAccount, find_anvil_binary

__all__ = [
    "DEV_ACCOUNTS",
    "DEV_MNEMONIC",
    "Anvil",
    "DevAccount",
    "NodeClient",
    "find_anvil_binary",
]
