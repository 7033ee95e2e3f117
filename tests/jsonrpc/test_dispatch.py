"""JSON-RPC 2.0 framing and dispatch, without a server: bodies in, response documents out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from txgate.core.errors import Conflict, InvalidParams
from txgate.jsonrpc import Dispatcher
from txgate.jsonrpc.dispatch import MAX_BATCH

SECRET = "postgresql://admin:hunter2@db/prod"


class Recorder:
    """The context handed to every handler; it records the calls in the order they ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []


def make_dispatcher() -> Dispatcher[Recorder]:
    d: Dispatcher[Recorder] = Dispatcher()

    def record(name: str, result: Any) -> Any:
        async def handler(context: Recorder, params: list[Any]) -> Any:
            context.calls.append((name, params))
            return result(params) if callable(result) else result

        return handler

    async def explode(context: Recorder, params: list[Any]) -> Any:
        raise RuntimeError(f"cannot connect to {SECRET}")

    async def conflict(context: Recorder, params: list[Any]) -> Any:
        raise Conflict("already final")

    async def bad_param(context: Recorder, params: list[Any]) -> Any:
        raise InvalidParams("0.value must be hex", param="0.value")

    d.add("echo", record("echo", lambda params: params))
    d.add("none", record("none", None), max_params=0)
    d.add("two", record("two", "ok"), min_params=1, max_params=2)
    d.add("explode", explode)
    d.add("conflict", conflict)
    d.add("bad_param", bad_param)
    return d


async def handle(body: Any, context: Recorder | None = None) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await make_dispatcher().handle(raw, context or Recorder())


def call(method: str, params: Any = None, call_id: Any = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, **extra}
    if params is not None:
        body["params"] = params
    if call_id is not ...:
        body["id"] = call_id
    return body


def assert_error(response: Any, code: int, call_id: Any = 1) -> dict[str, Any]:
    assert isinstance(response, dict), response
    assert response["jsonrpc"] == "2.0" and response["id"] == call_id, response
    assert "result" not in response
    error: dict[str, Any] = response["error"]
    assert error["code"] == code, response
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_a_call_gets_its_result_with_its_id() -> None:
    for call_id in (1, "abc", 2.5, None):
        response = await handle(call("echo", [1, "x"], call_id))
        assert response == {"jsonrpc": "2.0", "id": call_id, "result": [1, "x"]}


async def test_params_default_to_an_empty_list_and_reach_the_handler_with_the_context() -> None:
    context = Recorder()
    assert (await handle(call("none"), context))["result"] is None
    assert context.calls == [("none", [])]


@pytest.mark.parametrize("body", [b"{", b"", b"\xff\xfe", b'{"jsonrpc": "2.0", "id": 1,}', b"nul"])
async def test_a_body_that_is_not_json_is_a_parse_error(body: bytes) -> None:
    assert_error(await handle(body), -32700, None)


@pytest.mark.parametrize(
    ("body", "call_id"),
    [
        (42, None),
        ("custodian_listAccounts", None),
        (None, None),
        ({"id": 1, "method": "echo"}, 1),  # no "jsonrpc"
        ({"jsonrpc": "1.0", "id": 1, "method": "echo"}, 1),
        ({"jsonrpc": "2.0", "id": 1}, 1),  # no method
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, 1),
        ({"jsonrpc": "2.0", "id": 1, "method": "echo", "params": "x"}, 1),
        ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "echo"}, None),  # id of the wrong type
        ({"jsonrpc": "2.0", "id": True, "method": "echo"}, None),
        # Not a Request object at all, so not a notification either: answered with id null.
        ({"method": "echo"}, None),
        ({"jsonrpc": "2.0", "method": 1, "params": "bar"}, None),  # JSON-RPC 2.0 spec, §7
        ({}, None),
    ],
)
async def test_something_that_is_not_a_request_is_an_invalid_request(
    body: Any, call_id: Any
) -> None:
    context = Recorder()
    assert_error(await handle(body, context), -32600, call_id)
    assert context.calls == []


async def test_an_empty_batch_is_one_invalid_request() -> None:
    assert_error(await handle([]), -32600, None)


async def test_an_oversized_batch_is_refused_before_any_call_runs() -> None:
    context = Recorder()
    response = await handle([call("echo", [i], i) for i in range(MAX_BATCH + 1)], context)
    error = assert_error(response, -32600, None)
    assert str(MAX_BATCH) in error["message"]
    assert context.calls == []


async def test_a_batch_is_answered_in_order_and_runs_in_order() -> None:
    context = Recorder()
    response = await handle(
        [
            call("echo", ["a"], "first"),
            1,
            call("nope", [], 3),
            call("echo", ["notified"], ...),
            {"foo": "boo"},
            call("two", [], 5),
            call("explode", [], 6),
            call("echo", ["z"], 7),
        ],
        context,
    )
    assert [answer["id"] for answer in response] == ["first", None, 3, None, 5, 6, 7]
    assert response[0]["result"] == ["a"]
    assert response[1]["error"]["code"] == -32600
    assert response[2]["error"]["code"] == -32601
    assert response[3]["error"]["code"] == -32600
    assert response[4]["error"]["code"] == -32602
    assert response[5]["error"]["code"] == -32603
    assert response[6]["result"] == ["z"]
    assert context.calls == [("echo", ["a"]), ("echo", ["notified"]), ("echo", ["z"])]


async def test_notifications_run_but_get_no_answer() -> None:
    context = Recorder()
    assert await handle(call("echo", ["n"], ...), context) is None
    # Errors of a notification are not answered either (JSON-RPC 2.0 §4.1).
    assert await handle(call("nope", [], ...), context) is None
    assert await handle(call("explode", [], ...), context) is None
    assert await handle(call("two", [], ...), context) is None
    assert await handle([call("echo", [1], ...), call("echo", [2], ...)], context) is None
    assert context.calls == [("echo", ["n"]), ("echo", [1]), ("echo", [2])]


async def test_an_unknown_method_is_method_not_found_and_named() -> None:
    error = assert_error(await handle(call("custodian_doesNotExist", [])), -32601)
    assert "custodian_doesNotExist" in error["message"]


async def test_too_few_params_name_the_first_missing_position() -> None:
    error = assert_error(await handle(call("two", [])), -32602)
    assert error["data"] == {"param": "0"}
    assert "at least 1" in error["message"]


async def test_too_many_params_name_the_first_extra_position() -> None:
    error = assert_error(await handle(call("two", [1, 2, 3])), -32602)
    assert error["data"] == {"param": "2"}
    assert "at most 2" in error["message"]
    error = assert_error(await handle(call("none", [1])), -32602)
    assert error["data"] == {"param": "0"}


async def test_params_within_bounds_reach_the_handler() -> None:
    for params in ([1], [1, 2]):
        assert (await handle(call("two", params)))["result"] == "ok"


async def test_params_by_name_are_refused_as_invalid_params() -> None:
    context = Recorder()
    error = assert_error(await handle(call("echo", {"a": 1}), context), -32602)
    assert error["data"] == {"param": "params"}
    assert context.calls == []


async def test_a_txgate_error_keeps_its_code_message_and_data() -> None:
    error = assert_error(await handle(call("bad_param", [])), -32602)
    assert error == {
        "code": -32602,
        "message": "0.value must be hex",
        "data": {"param": "0.value"},
    }
    error = assert_error(await handle(call("conflict", [])), -32009)
    assert error == {"code": -32009, "message": "already final"}


async def test_an_unhandled_exception_is_an_internal_error_without_details() -> None:
    response = await handle(call("explode", [], 9))
    assert response == {
        "jsonrpc": "2.0",
        "id": 9,
        "error": {"code": -32603, "message": "internal error"},
    }
    assert "hunter2" not in json.dumps(response) and "RuntimeError" not in json.dumps(response)


def test_methods_lists_the_registered_names() -> None:
    assert make_dispatcher().methods == sorted(
        ["echo", "none", "two", "explode", "conflict", "bad_param"]
    )
