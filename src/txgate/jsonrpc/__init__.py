"""JSON-RPC 2.0 framing and method dispatch, shared by the custodian and the wallet gateway."""

from txgate.jsonrpc.dispatch import Dispatcher, MethodSpec

__all__ = ["Dispatcher", "MethodSpec"]
