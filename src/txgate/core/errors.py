"""The one error tree of txgate, and the one table that maps it to JSON-RPC codes and HTTP statuses.

    TxgateError
    ├── RequestError                 the caller sent something wrong
    │   ├── ParseError               -32700  400  body is not JSON
    │   ├── InvalidRequest           -32600  400  not a JSON-RPC request
    │   ├── MethodNotFound           -32601  404  unknown or unimplemented method
    │   ├── InvalidParams            -32602  400  a parameter is missing or malformed (names it)
    │   ├── PayloadTooLarge          -32600  413  body over the configured limit
    │   ├── Unauthenticated          -32001  401  token missing, unknown, expired or revoked
    │   ├── Forbidden                -32003  403  authenticated, but not allowed (another customer's account)
    │   ├── NotFound                 -32004  404  no such object visible to the caller
    │   └── Conflict                 -32009  409  the object is in a state that forbids the request
    ├── ChainError                   -32010  502  the node refused or did not answer
    ├── VaultError                   -32603  500  key material could not be opened (never says why in detail)
    └── InternalError                -32603  500  anything else; the message never carries internals

Lower-level exceptions (httpx, SQLAlchemy, eth-account) are translated where they are caught at a
service boundary; only `TxgateError` crosses into the API layers, which call `error_table` once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class TxgateError(Exception):
    """Base of every error txgate reports. `message` is safe to show to the caller."""

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class RequestError(TxgateError):
    """The caller sent something txgate will not act on."""


class ParseError(RequestError):
    pass


class InvalidRequest(RequestError):
    pass


class MethodNotFound(RequestError):
    pass


class InvalidParams(RequestError):
    """A parameter is missing or malformed; `param` names it (a dotted path such as `0.value`)."""

    def __init__(self, message: str, *, param: str | None = None, data: Any = None) -> None:
        super().__init__(
            message, data=data if data is not None else ({"param": param} if param else None)
        )
        self.param = param


class PayloadTooLarge(RequestError):
    pass


class Unauthenticated(RequestError):
    pass


class Forbidden(RequestError):
    pass


class NotFound(RequestError):
    pass


class Conflict(RequestError):
    pass


class ChainError(TxgateError):
    """The node refused a request or did not answer. `rpc_error` keeps the node's raw error."""

    def __init__(self, message: str, *, rpc_error: Any = None) -> None:
        super().__init__(message)
        self.rpc_error = rpc_error


class VaultError(TxgateError):
    pass


class InternalError(TxgateError):
    pass


@dataclass(frozen=True, slots=True)
class ErrorCode:
    jsonrpc: int
    http: int


# Most specific class first: `error_code` walks the MRO, so subclasses inherit their parent's row.
_ERROR_TABLE: dict[type[TxgateError], ErrorCode] = {
    ParseError: ErrorCode(-32700, 400),
    InvalidRequest: ErrorCode(-32600, 400),
    MethodNotFound: ErrorCode(-32601, 404),
    InvalidParams: ErrorCode(-32602, 400),
    PayloadTooLarge: ErrorCode(-32600, 413),
    Unauthenticated: ErrorCode(-32001, 401),
    Forbidden: ErrorCode(-32003, 403),
    NotFound: ErrorCode(-32004, 404),
    Conflict: ErrorCode(-32009, 409),
    RequestError: ErrorCode(-32600, 400),
    ChainError: ErrorCode(-32010, 502),
    VaultError: ErrorCode(-32603, 500),
    InternalError: ErrorCode(-32603, 500),
    TxgateError: ErrorCode(-32603, 500),
}


def error_code(error: TxgateError) -> ErrorCode:
    """The JSON-RPC code and HTTP status for `error`, from the one table above."""
    for cls in type(error).__mro__:
        if cls in _ERROR_TABLE:
            return _ERROR_TABLE[cls]
    return _ERROR_TABLE[TxgateError]
