"""Every bad input to a live custodian gets a clear error (JSON-RPC code and a message naming the
parameter, or an HTTP 4xx with a JSON body) and stores nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import to_checksum_address
from sqlalchemy import func, select, update

from support.custodian import CustodianProcess, Eca3Client, Seeded, fund, seed
from txgate.chain import Anvil
from txgate.custody.tokens import token_hash
from txgate.storage.engine import Database
from txgate.storage.tables import AccessToken, Event, SignedMessage, Transaction

pytestmark = pytest.mark.integration

STORED = {"transactions": Transaction, "signed_messages": SignedMessage, "events": Event}
RECIPIENT = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


@dataclass
class Target:
    process: CustodianProcess
    seeded: Seeded
    other: Seeded  # a second customer in the same database
    client: Eca3Client
    database_url: str
    baseline: dict[str, int]
    clients: list[Eca3Client] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)

    def new_client(self, user: str = "alice") -> Eca3Client:
        client = Eca3Client(self.process.url, self.seeded.refresh_tokens[user])
        self.clients.append(client)
        return client

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        answer = await self.client.http.post(path, **kwargs)
        self.bodies.append(answer.text)
        return answer

    async def rpc(self, method: str, params: Any, *, call_id: Any = 7) -> dict[str, Any]:
        answer = await self.client.raw(
            {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}
        )
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        assert document["id"] == call_id
        return document


async def count_rows(database_url: str) -> dict[str, int]:
    db = Database(database_url)
    try:
        async with db.read() as session:
            return {
                name: int((await session.execute(select(func.count()).select_from(table))).scalar())
                for name, table in STORED.items()
            }
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
async def target(
    module_database_url: str, anvil: Anvil, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    seeded = await seed(module_database_url, users=("alice", "carol"))
    other = await seed(module_database_url, customer="Other Fund", users=("bob",), accounts=1)
    await fund(anvil.url, seeded.accounts[:1])
    process = CustodianProcess(module_database_url, anvil.url, tmp_path_factory.mktemp("data"))
    await process.start()
    try:
        client = Eca3Client(process.url, seeded.refresh_tokens["alice"])
        baseline = await count_rows(module_database_url)
        found = Target(process, seeded, other, client, module_database_url, baseline)
        found.clients.append(client)
        try:
            await client.login()
            yield found
        finally:
            for opened in found.clients:
                await opened.http.aclose()
    finally:
        await process.stop()


def assert_error(
    document: dict[str, Any], code: int, *, param: str | None = None, says: str | None = None
) -> dict[str, Any]:
    assert "result" not in document, document
    error: dict[str, Any] = document["error"]
    assert error["code"] == code, document
    assert isinstance(error["message"], str) and error["message"], document
    if param is not None:
        assert error["data"] == {"param": param}, document
    if says is not None:
        assert says in error["message"], document
    return error


def good_tx(target: Target, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": target.seeded.accounts[0],
        "to": RECIPIENT,
        "type": "0x2",
        "value": "0x1",
        "gas": hex(21_000),
        "maxFeePerGas": hex(20 * 10**9),
        "maxPriorityFeePerGas": hex(10**9),
    }
    body.update(changes)
    return body


META = {"chainId": "0x7a69"}

# -- framing ------------------------------------------------------------------------------------


async def test_malformed_json_is_a_parse_error_with_id_null(target: Target) -> None:
    for content in (b'{"jsonrpc": "2.0", "id": 1, "method": "custodian_listAccounts"', b"\xff"):
        answer = await target.client.raw(None, content=content)
        assert answer.status_code == 200
        document = answer.json()
        assert document["id"] is None
        assert_error(document, -32700, says="JSON")


@pytest.mark.parametrize(
    ("body", "call_id"),
    [
        (42, None),
        (["not a request"], None),
        ({"id": 3, "method": "custodian_listAccounts", "params": []}, 3),  # no "jsonrpc"
        ({"jsonrpc": "1.0", "id": 4, "method": "custodian_listAccounts"}, 4),
        ({"jsonrpc": "2.0", "id": 5}, 5),  # no method
        ({"jsonrpc": "2.0", "id": 6, "method": "custodian_listAccounts", "params": "x"}, 6),
        ({"method": "custodian_listAccounts"}, None),  # not a request, so not a notification
        ([], None),  # an empty batch
    ],
)
async def test_something_that_is_not_a_request_is_an_invalid_request(
    target: Target, body: Any, call_id: Any
) -> None:
    answer = await target.client.raw(body)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    if isinstance(document, list):
        (document,) = document
    assert document["id"] == call_id
    assert_error(document, -32600)


async def test_an_unknown_method_is_named(target: Target) -> None:
    document = await target.rpc("custodian_transferEverything", [])
    assert_error(document, -32601, says="custodian_transferEverything")
    document = await target.rpc("eth_sendTransaction", [good_tx(target)])
    assert_error(document, -32601, says="eth_sendTransaction")


@pytest.mark.parametrize(
    ("method", "params", "param"),
    [
        ("custodian_createTransaction", [], "0"),
        ("custodian_createTransaction", [{"from": "0x0"}], "1"),
        ("custodian_getTransactionById", [], "0"),
        ("custodian_sign", [], "0"),
        ("custodian_listAccounts", ["extra"], "0"),
        ("custodian_getCustomerProof", [{}], "0"),
        ("custodian_getTransactionLink", ["a", "b"], "1"),
    ],
)
async def test_a_wrong_number_of_params_is_refused(
    target: Target, method: str, params: list[Any], param: str
) -> None:
    assert_error(await target.rpc(method, params), -32602, param=param, says=method)


async def test_params_by_name_are_refused(target: Target) -> None:
    document = await target.rpc("custodian_createTransaction", {"tx": good_tx(target)})
    assert_error(document, -32602, param="params", says="positional")


# -- createTransaction fields ---------------------------------------------------------------------

BAD_TRANSACTIONS: list[tuple[str, Callable[[Target], list[Any]], str]] = [
    ("value as a number", lambda t: [good_tx(t, value=1), META], "0.value"),
    ("value negative", lambda t: [good_tx(t, value="-0x1"), META], "0.value"),
    ("value in decimal", lambda t: [good_tx(t, value="12"), META], "0.value"),
    ("value over uint256", lambda t: [good_tx(t, value=hex(2**256)), META], "0.value"),
    ("from not an address", lambda t: [good_tx(t, **{"from": "alice"}), META], "0.from"),
    ("from missing", lambda t: [{**good_tx(t), "from": None}, META], "0.from"),
    ("to too short", lambda t: [good_tx(t, to="0x1234"), META], "0.to"),
    ("data of odd length", lambda t: [good_tx(t, data="0x123"), META], "0.data"),
    ("gas too low", lambda t: [good_tx(t, gas="0x1"), META], "0.gas"),
    ("gas too high", lambda t: [good_tx(t, gas=hex(30_000_001)), META], "0.gas"),
    ("gas as a number", lambda t: [good_tx(t, gas=21000), META], "0.gas"),
    (
        "priority fee over max fee",
        lambda t: [good_tx(t, maxPriorityFeePerGas=hex(21 * 10**9)), META],
        "0.maxPriorityFeePerGas",
    ),
    ("unknown type", lambda t: [good_tx(t, type="0x4"), META], "0.type"),
    ("tx not an object", lambda t: ["0xdeadbeef", META], "0"),
    ("metadata not an object", lambda t: [good_tx(t), "0x7a69"], "1"),
    ("unsupported chain", lambda t: [good_tx(t), {"chainId": "0x1"}], "1.chainId"),
    ("chain id in decimal", lambda t: [good_tx(t), {"chainId": 31337}], "1.chainId"),
    ("note not text", lambda t: [good_tx(t), {**META, "note": ["x"]}], "1.note"),
]


@pytest.mark.parametrize(
    ("case", "params", "param"), BAD_TRANSACTIONS, ids=[case for case, _, _ in BAD_TRANSACTIONS]
)
async def test_a_bad_transaction_field_is_named(
    target: Target, case: str, params: Callable[[Target], list[Any]], param: str
) -> None:
    document = await target.rpc("custodian_createTransaction", params(target))
    assert_error(document, -32602, param=param, says=param)


async def test_another_customers_account_is_refused_as_from(target: Target) -> None:
    foreign = target.other.accounts[0]
    document = await target.rpc(
        "custodian_createTransaction", [good_tx(target, **{"from": foreign}), META]
    )
    # The message names the address; it must not tell whether another customer holds it.
    error = assert_error(document, -32602, param="0.from", says=foreign)
    assert "Other Fund" not in error["message"]
    unknown = to_checksum_address("0x" + "12" * 20)
    document = await target.rpc(
        "custodian_createTransaction", [good_tx(target, **{"from": unknown}), META]
    )
    other = assert_error(document, -32602, param="0.from", says=unknown)
    assert other["message"].replace(unknown, "<address>") == error["message"].replace(
        foreign, "<address>"
    )


# -- the other methods --------------------------------------------------------------------------


async def test_bad_params_of_the_other_methods_are_named(target: Target) -> None:
    mine, foreign = target.seeded.accounts[0], target.other.accounts[0]
    typed = {"types": {"EIP712Domain": []}, "primaryType": "Nope", "domain": {}, "message": {}}
    sign = "custodian_sign"
    typed_sign = "custodian_signTypedData"
    replace = "custodian_replaceTransaction"
    # (method, params, the parameter named in error.data, what the message must mention)
    cases: list[tuple[str, list[Any], str, str]] = [
        ("custodian_listAccountChainIds", ["0x12"], "0", "0"),
        # An account of another customer: the message names the address, and says no more.
        ("custodian_listAccountChainIds", [foreign], "0", foreign),
        ("custodian_getTransactionById", [5], "0", "0"),
        ("custodian_getTransactionById", ["x" * 65], "0", "0"),
        ("custodian_getSignedMessageLink", [None], "0", "0"),
        (sign, [{"address": mine, "message": "hello"}, {}], "0.message", "0.message"),
        (sign, [{"address": mine}, {}], "0.message", "0.message"),
        (sign, [{"address": foreign, "message": "0x00"}, {}], "0.address", foreign),
        (sign, [{"address": mine, "message": "0x00"}, {"chainId": 1}], "1.chainId", "1.chainId"),
        (typed_sign, [{"address": mine, "data": {}, "version": "v5"}], "0.version", "0.version"),
        (typed_sign, [{"address": mine, "data": "{", "version": "v4"}], "0.data", "0.data"),
        (
            typed_sign,
            [{"address": mine, "data": typed, "version": "v4"}],
            "0.data.primaryType",
            "primaryType",
        ),
        (
            replace,
            [{"transactionId": "no-such-id", "action": "speedUp"}, {}],
            "0.transactionId",
            "no-such-id",
        ),
        (replace, [{"transactionId": "x", "action": "boost"}], "0.action", "0.action"),
        (replace, [{"transactionId": "x", "action": "cancel"}, {"gas": 21000}], "1.gas", "1.gas"),
    ]
    for method, params, param, says in cases:
        document = await target.rpc(method, params)
        assert_error(document, -32602, param=param, says=says)


async def test_a_batch_of_good_and_bad_calls_is_answered_in_order(target: Target) -> None:
    answer = await target.client.raw(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "custodian_listAccounts", "params": []},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "custodian_createTransaction",
                "params": [good_tx(target, value="12"), META],
            },
            {"jsonrpc": "2.0", "id": 3, "method": "custodian_nope", "params": []},
            42,
            {"jsonrpc": "2.0", "id": "four", "method": "custodian_getCustomerProof"},
            {"jsonrpc": "2.0", "method": "custodian_listAccounts"},  # a notification: no answer
            {
                "jsonrpc": "2.0",
                "id": None,
                "method": "custodian_listAccountChainIds",
                "params": [1],
            },
        ]
    )
    assert answer.status_code == 200
    answers = answer.json()
    assert [item["id"] for item in answers] == [1, 2, 3, None, "four", None]
    assert [a["address"] for a in answers[0]["result"]] == target.seeded.accounts
    assert_error(answers[1], -32602, param="0.value")
    assert_error(answers[2], -32601, says="custodian_nope")
    assert_error(answers[3], -32600)
    assert set(answers[4]["result"]) == {"jwt"}
    assert_error(answers[5], -32602, param="0")


# -- authentication -----------------------------------------------------------------------------

LIST = {"jsonrpc": "2.0", "id": 11, "method": "custodian_listAccounts", "params": []}


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing"),
        ({"Authorization": "Basic YWxpY2U6cGFzcw=="}, "missing"),
        ({"Authorization": "Bearer"}, "missing"),
        ({"Authorization": "Bearer txg_at_not-a-token"}, "unknown"),
    ],
)
async def test_a_missing_or_unknown_token_is_refused(
    target: Target, headers: dict[str, str], says: str
) -> None:
    answer = await target.post("/v3/json-rpc", json=LIST, headers=headers)
    assert answer.status_code == 200
    document = answer.json()
    assert document["id"] == 11
    assert_error(document, -32001, says=says)


async def test_an_expired_access_token_is_refused(target: Target) -> None:
    client = target.new_client()
    await client.login()
    assert client.access_token is not None
    assert "result" in await client.call_raw("custodian_listAccounts", [])
    db = Database(target.database_url)
    try:
        async with db.transaction() as session:
            result = await session.execute(
                update(AccessToken)
                .where(AccessToken.token_hash == token_hash(client.access_token))
                .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
            )
            assert getattr(result, "rowcount", 0) == 1
    finally:
        await db.dispose()
    assert_error(await client.call_raw("custodian_listAccounts", []), -32001, says="expired")


async def test_a_revoked_refresh_token_ends_its_access_tokens(target: Target) -> None:
    client = target.new_client("carol")
    grant = await client.login()
    assert "result" in await client.call_raw("custodian_listAccounts", [])
    answer = await target.post("/oauth/revoke", json={"token": grant["refresh_token"]})
    assert answer.status_code == 200
    assert_error(await client.call_raw("custodian_listAccounts", []), -32001, says="revoked")
    answer = await target.post(
        "/oauth/token",
        json={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


# -- HTTP-level refusals ------------------------------------------------------------------------


async def test_an_oversized_body_is_refused_with_413_and_json(target: Target) -> None:
    padding = "x" * (256 * 1024 + 1)
    body = {"jsonrpc": "2.0", "id": 1, "method": "custodian_sign", "params": [padding]}
    answer = await target.client.raw(body)
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert_error(answer.json(), -32600, says="larger than")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(40):
            yield b" " * 8192

    answer = await target.post(
        "/v3/json-rpc",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {target.client.access_token}",
            "content-type": "application/json",
        },
    )
    assert answer.status_code == 413, answer.text
    assert_error(answer.json(), -32600, says="larger than")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"json": {"grant_type": "password", "refresh_token": "x"}}, "unsupported_grant_type"),
        ({"json": {"refresh_token": "x"}}, "unsupported_grant_type"),
        ({"json": {"grant_type": "refresh_token"}}, "invalid_request"),
        ({"json": {"grant_type": "refresh_token", "refresh_token": ""}}, "invalid_request"),
        ({"json": {"grant_type": "refresh_token", "refresh_token": 5}}, "invalid_request"),
        ({"json": {"grant_type": "refresh_token", "refresh_token": "txg_rt_x"}}, "invalid_grant"),
        ({"json": ["grant_type"]}, "invalid_request"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "invalid_request",
        ),
        ({"data": {"grant_type": "client_credentials"}}, "unsupported_grant_type"),
    ],
)
async def test_the_token_endpoint_refuses_bad_requests_with_400_json(
    target: Target, kwargs: dict[str, Any], error: str
) -> None:
    answer = await target.post("/oauth/token", **kwargs)
    assert answer.status_code == 400, answer.text
    document = answer.json()
    assert set(document) == {"error", "error_description"}
    assert document["error"] == error and document["error_description"]


async def test_the_token_endpoint_also_takes_a_form_body(target: Target) -> None:
    answer = await target.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": target.seeded.refresh_tokens["alice"],
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "bearer"


async def test_the_revoke_endpoint_needs_a_token(target: Target) -> None:
    answer = await target.post("/oauth/revoke", json={})
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


# -- nothing was stored ---------------------------------------------------------------------------


async def test_nothing_was_stored_and_nothing_leaked(target: Target) -> None:
    assert await count_rows(target.database_url) == target.baseline
    bodies = target.bodies + [text for client in target.clients for text in client.responses]
    assert len(bodies) > 50
    for body in bodies:
        assert "Traceback" not in body and 'File "' not in body, body
    log = Path(target.process.log_path).read_text()
    assert "Traceback" not in log, log[-3000:]
