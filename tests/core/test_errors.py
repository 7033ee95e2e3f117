"""The one error table: every error class maps to its JSON-RPC code and HTTP status."""

from __future__ import annotations

import inspect

import pytest

from txgate.core import errors
from txgate.core.errors import (
    ChainError,
    Conflict,
    ErrorCode,
    Forbidden,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotFound,
    ParseError,
    PayloadTooLarge,
    RequestError,
    TxgateError,
    Unauthenticated,
    VaultError,
    error_code,
)

# Written out again (from the docstring of core/errors.py), not read from the module's table.
EXPECTED: dict[type[TxgateError], tuple[int, int]] = {
    ParseError: (-32700, 400),
    InvalidRequest: (-32600, 400),
    MethodNotFound: (-32601, 404),
    InvalidParams: (-32602, 400),
    PayloadTooLarge: (-32600, 413),
    Unauthenticated: (-32001, 401),
    Forbidden: (-32003, 403),
    NotFound: (-32004, 404),
    Conflict: (-32009, 409),
    RequestError: (-32600, 400),
    ChainError: (-32010, 502),
    VaultError: (-32603, 500),
    InternalError: (-32603, 500),
    TxgateError: (-32603, 500),
}


def test_every_error_class_of_the_module_is_in_the_table() -> None:
    classes = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, TxgateError) and cls.__module__ == errors.__name__
    }
    assert classes == set(EXPECTED)


@pytest.mark.parametrize(
    ("cls", "expected"), EXPECTED.items(), ids=lambda v: getattr(v, "__name__", "")
)
def test_error_maps_to_its_code_and_status(
    cls: type[TxgateError], expected: tuple[int, int]
) -> None:
    error = cls("boom")
    assert error_code(error) == ErrorCode(*expected)
    assert error.message == "boom" and str(error) == "boom"


def test_a_subclass_inherits_its_parents_row() -> None:
    class TokenExpired(Unauthenticated):
        pass

    class PluginBroke(TxgateError):
        pass

    assert error_code(TokenExpired("x")) == ErrorCode(-32001, 401)
    assert error_code(PluginBroke("x")) == ErrorCode(-32603, 500)


def test_invalid_params_names_the_parameter_in_its_data() -> None:
    assert InvalidParams("bad", param="0.value").data == {"param": "0.value"}
    assert InvalidParams("bad", param="0.value").param == "0.value"
    assert InvalidParams("bad").data is None
    assert InvalidParams("bad", param="0", data={"x": 1}).data == {"x": 1}


def test_chain_error_keeps_the_raw_node_error_out_of_its_data() -> None:
    raw = {"code": -32000, "message": "nonce too low"}
    error = ChainError("node refused", rpc_error=raw)
    assert error.rpc_error == raw
    assert error.data is None  # the raw node answer is for logs, not for the caller
