"""JSON-RPC 2.0 request framing: parse a body, dispatch each call, frame results and errors.

A `Dispatcher` knows methods by name; each method is an async callable taking the caller's
context and the positional params. Errors raised as `TxgateError` become error objects with the
code from the one table in `core.errors`; anything else is logged with its traceback and answered
with a bare -32603, so no internals reach the caller.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from txgate.core.errors import (
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    TxgateError,
    error_code,
)

log = structlog.get_logger(__name__)

ContextT = TypeVar("ContextT")
Handler = Callable[[ContextT, list[Any]], Awaitable[Any]]

MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class MethodSpec(Generic[ContextT]):
    name: str
    handler: Handler[ContextT]
    min_params: int = 0
    max_params: int | None = None


class Dispatcher(Generic[ContextT]):
    def __init__(self) -> None:
        self._methods: dict[str, MethodSpec[ContextT]] = {}

    def add(
        self,
        name: str,
        handler: Handler[ContextT],
        *,
        min_params: int = 0,
        max_params: int | None = None,
    ) -> None:
        self._methods[name] = MethodSpec(name, handler, min_params, max_params)

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    async def handle(self, body: bytes, context: ContextT) -> Any:
        """The response document for a request body: a dict, a list (batch) or None (only
        notifications)."""
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return error_response(None, ParseError("request body is not valid JSON"))
        if isinstance(document, list):
            if not document:
                return error_response(None, InvalidRequest("empty batch"))
            if len(document) > MAX_BATCH:
                return error_response(
                    None, InvalidRequest(f"a batch holds at most {MAX_BATCH} calls")
                )
            # In order, not concurrently: a batch of createTransaction keeps its order.
            responses = [await self._handle_one(item, context) for item in document]
            answered = [response for response in responses if response is not None]
            return answered or None
        return await self._handle_one(document, context)

    async def _handle_one(self, call: Any, context: ContextT) -> dict[str, Any] | None:
        if not isinstance(call, dict):
            return error_response(None, InvalidRequest("a request must be a JSON object"))
        call_id = call.get("id")
        if "id" in call and not _valid_id(call_id):
            return error_response(None, InvalidRequest("id must be a string, a number or null"))
        try:
            method, params = _check_request(call)
        except InvalidRequest as error:
            # Not a Request object, so not a notification either: always answered (§5).
            return error_response(call_id, error)
        except InvalidParams as error:  # params by name: a well-formed call ECA-3 does not take
            return None if "id" not in call else error_response(call_id, error)
        try:
            spec = self._methods.get(method)
            if spec is None:
                raise MethodNotFound(f"method {method!r} is not implemented by this server")
            if len(params) < spec.min_params:
                missing = spec.min_params - len(params)
                raise InvalidParams(
                    f"{method} takes at least {spec.min_params} positional params; {missing} missing",
                    param=str(len(params)),
                )
            if spec.max_params is not None and len(params) > spec.max_params:
                raise InvalidParams(
                    f"{method} takes at most {spec.max_params} positional params, got {len(params)}",
                    param=str(spec.max_params),
                )
            result = await spec.handler(context, params)
        except TxgateError as error:
            return None if "id" not in call else error_response(call_id, error)
        except Exception:
            log.exception("jsonrpc.unhandled", method=call.get("method"))
            internal = TxgateError("internal error")
            return None if "id" not in call else error_response(call_id, internal)
        if "id" not in call:
            return None  # a notification
        return {"jsonrpc": "2.0", "id": call_id, "result": result}


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def _check_request(call: dict[str, Any]) -> tuple[str, list[Any]]:
    if call.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be "2.0"')
    method = call.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidRequest('"method" must be a non-empty string')
    params = call.get("params", [])
    if isinstance(params, dict):
        raise InvalidParams("params must be positional (a JSON array)", param="params")
    if not isinstance(params, list):
        raise InvalidRequest('"params" must be an array')
    return method, params


def error_object(error: TxgateError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": error_code(error).jsonrpc, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return body


def error_response(call_id: Any, error: TxgateError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "error": error_object(error)}
