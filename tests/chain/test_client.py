"""NodeClient against a real anvil (started by this module's fixture) and against a swapped
httpx transport for the failures a healthy node never produces."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from eth_abi.abi import decode, encode
from eth_account import Account
from eth_utils.abi import function_signature_to_4byte_selector
from web3 import Web3

from support.contracts import compile_test_contracts, connect, deploy
from txgate.chain import DEV_ACCOUNTS, Anvil, NodeClient
from txgate.chain.devchain import free_port
from txgate.core.errors import ChainError

ETHER = 10**18
SECRET_URL_PARTS = ("alice", "s3cret", "apikey", "k3y")


@pytest.fixture(scope="module")
async def anvil() -> AsyncIterator[Anvil]:
    async with Anvil() as node:
        yield node


@pytest.fixture
async def client(anvil: Anvil) -> AsyncIterator[NodeClient]:
    async with NodeClient(anvil.url, timeout=5.0) as node_client:
        yield node_client


@pytest.fixture(scope="module")
def w3(anvil: Anvil) -> Iterator[Web3]:
    with connect(anvil.url) as web3:
        yield web3


def selector(signature: str) -> bytes:
    return function_signature_to_4byte_selector(signature)


# -- against anvil ------------------------------------------------------------------------


async def test_chain_id_and_block_number(client: NodeClient) -> None:
    assert await client.chain_id() == 31337
    assert await client.block_number() >= 0
    latest = await client.get_block("latest")
    assert int(latest["number"], 16) >= 0
    assert "baseFeePerGas" in latest


async def test_balances_nonce_and_code(client: NodeClient) -> None:
    untouched = DEV_ACCOUNTS[9].address  # no test in this module spends from it
    assert await client.get_balance(untouched) == 10_000 * ETHER
    assert await client.get_transaction_count(untouched) == 0
    assert await client.get_code(untouched) == b""
    assert await client.get_balance(Account.create().address) == 0


async def test_fee_suggestion(client: NodeClient) -> None:
    max_fee, tip = await client.fee_suggestion()
    base_fee = int((await client.get_block("latest"))["baseFeePerGas"], 16)
    assert tip > 0
    assert max_fee >= base_fee + tip


async def test_signed_eip1559_transfer(client: NodeClient) -> None:
    sender = Account.from_key(DEV_ACCOUNTS[0].private_key)
    recipient = Account.create().address
    max_fee, tip = await client.fee_suggestion()
    gas = await client.estimate_gas({"from": sender.address, "to": recipient, "value": 12345})
    assert gas == 21_000
    signed = sender.sign_transaction(
        {
            "type": 2,
            "chainId": await client.chain_id(),
            "nonce": await client.get_transaction_count(sender.address),
            "to": recipient,
            "value": 12345,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
    )

    tx_hash = await client.send_raw_transaction(bytes(signed.raw_transaction))

    assert tx_hash == "0x" + bytes(signed.hash).hex()
    receipt = await _receipt(client, tx_hash)
    assert receipt is not None
    assert receipt["status"] == "0x1"
    tx = await client.get_transaction(tx_hash)
    assert tx is not None
    assert Web3.to_checksum_address(tx["from"]) == sender.address
    assert await client.get_balance(recipient) == 12345


async def test_unknown_transaction_is_none(client: NodeClient) -> None:
    assert await client.get_transaction_receipt(b"\x11" * 32) is None
    assert await client.get_transaction("0x" + "22" * 32) is None


async def test_replayed_transaction_is_a_chain_error(client: NodeClient) -> None:
    sender = Account.from_key(DEV_ACCOUNTS[3].private_key)
    max_fee, tip = await client.fee_suggestion()
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": await client.get_transaction_count(sender.address),
        "to": sender.address,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": max_fee,
        "maxPriorityFeePerGas": tip,
    }
    raw = bytes(sender.sign_transaction(tx).raw_transaction)
    await client.send_raw_transaction(raw)

    with pytest.raises(ChainError) as caught:
        await client.send_raw_transaction(raw)

    assert "nonce" in caught.value.message.lower()
    assert isinstance(caught.value.rpc_error, dict)


async def test_batch_keeps_a_failed_slot_in_place(client: NodeClient) -> None:
    results = await client.batch(
        [
            ("eth_chainId", []),
            ("eth_noSuchMethod", []),
            ("eth_getBalance", [DEV_ACCOUNTS[9].address, "latest"]),
        ]
    )

    assert results[0] == "0x7a69"
    assert isinstance(results[1], ChainError)
    assert results[1].rpc_error["code"] == -32601
    assert "eth_noSuchMethod" in results[1].message
    assert results[2] == hex(10_000 * ETHER)
    assert await client.batch([]) == []


async def test_node_error_keeps_raw_error(client: NodeClient) -> None:
    with pytest.raises(ChainError) as caught:
        await client.call("eth_getBalance", ["not-an-address", "latest"])

    raw = caught.value.rpc_error
    assert isinstance(raw, dict)
    assert raw["code"] == -32602
    assert raw["message"] in caught.value.message


async def test_deployed_token_balance_via_eth_call(client: NodeClient, w3: Web3) -> None:
    artifacts = compile_test_contracts()
    deployer = DEV_ACCOUNTS[1]
    supply = 1_000_000 * 10**18
    token = deploy(w3, artifacts["TestToken"], deployer.private_key, "Test", "TST", supply)

    assert await client.get_code(token) != b""
    data = selector("balanceOf(address)") + encode(["address"], [deployer.address])
    answer = await client.eth_call({"to": token, "data": data})

    assert decode(["uint256"], answer) == (supply,)
    assert compile_test_contracts() is artifacts  # cached: no second compiler run


async def test_reverting_call_reports_reason(client: NodeClient, w3: Web3) -> None:
    artifacts = compile_test_contracts()
    sender = Account.from_key(DEV_ACCOUNTS[2].private_key)
    reverter = deploy(w3, artifacts["Reverter"], sender.key.hex())
    call = {"from": sender.address, "to": reverter, "data": selector("fail()")}

    with pytest.raises(ChainError) as caught:
        await client.eth_call(call)
    assert "Reverter: always reverts" in caught.value.message

    with pytest.raises(ChainError):
        await client.estimate_gas(call)

    # Sent anyway with a fixed gas limit, it is mined as a failed transaction.
    max_fee, tip = await client.fee_suggestion()
    signed = sender.sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": await client.get_transaction_count(sender.address),
            "to": reverter,
            "data": selector("fail()"),
            "gas": 100_000,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
    )
    tx_hash = await client.send_raw_transaction(bytes(signed.raw_transaction))
    receipt = await _receipt(client, tx_hash)
    assert receipt is not None
    assert receipt["status"] == "0x0"


# -- transport failures -------------------------------------------------------------------


def assert_no_secrets(error: ChainError) -> None:
    text = f"{error} {error!r} {error.message}"
    for part in SECRET_URL_PARTS:
        assert part not in text
    assert error.__cause__ is None  # httpx errors carry the full URL


async def test_refused_connection_names_host_port_only() -> None:
    port = free_port()
    url = f"http://alice:s3cret@127.0.0.1:{port}/rpc?apikey=k3y"
    async with NodeClient(url, timeout=2.0) as node_client:
        assert "s3cret" not in repr(node_client)
        with pytest.raises(ChainError) as caught:
            await node_client.chain_id()

    assert f"127.0.0.1:{port}" in caught.value.message
    assert_no_secrets(caught.value)


Handler = Callable[[httpx.Request], httpx.Response]


async def fail_with(handler: Handler) -> ChainError:
    url = "https://alice:s3cret@node.example:8545/v1/rpc?apikey=k3y"
    transport = httpx.MockTransport(handler)
    async with NodeClient(url, transport=transport, timeout=0.5) as node_client:
        with pytest.raises(ChainError) as caught:
            await node_client.block_number()
    assert_no_secrets(caught.value)
    return caught.value


async def test_http_5xx_is_a_chain_error() -> None:
    error = await fail_with(lambda request: httpx.Response(503, text="upstream down"))
    assert error.message == "node at node.example:8545 answered HTTP 503"


async def test_non_json_answer_is_a_chain_error() -> None:
    error = await fail_with(lambda request: httpx.Response(200, text="<html>hi</html>"))
    assert error.message == "node at node.example:8545 sent a non-JSON answer"


async def test_timeout_is_a_chain_error() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    error = await fail_with(hang)
    assert error.message == "node at node.example:8545 did not answer within 0.5s"


async def test_json_rpc_error_in_an_http_error_body_is_kept() -> None:
    body = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "rate limited"}}
    error = await fail_with(lambda request: httpx.Response(429, json=body))
    assert "rate limited" in error.message
    assert error.rpc_error == body["error"]


def rpc_answers(answers: dict[str, Any]) -> httpx.MockTransport:
    """A node that answers each method from `answers`; an exception value becomes its error."""

    def one(call: dict[str, Any]) -> dict[str, Any]:
        answer = answers.get(call["method"], KeyError(call["method"]))
        if isinstance(answer, Exception):
            return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32601, "message": "no"}}
        return {"jsonrpc": "2.0", "id": call["id"], "result": answer}

    def handle(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        if isinstance(payload, list):
            return httpx.Response(200, json=[one(call) for call in reversed(payload)])
        return httpx.Response(200, json=one(payload))

    return httpx.MockTransport(handle)


async def test_fee_suggestion_without_priority_fee_method() -> None:
    transport = rpc_answers({"eth_getBlockByNumber": {"baseFeePerGas": hex(7)}})
    async with NodeClient("http://node:8545", transport=transport) as node_client:
        assert await node_client.fee_suggestion() == (14 + 10**9, 10**9)


async def test_fee_suggestion_on_a_pre_london_chain() -> None:
    transport = rpc_answers(
        {
            "eth_getBlockByNumber": {"number": "0x1"},
            "eth_maxPriorityFeePerGas": "0x5",
            "eth_gasPrice": hex(50),
        }
    )
    async with NodeClient("http://node:8545", transport=transport) as node_client:
        assert await node_client.fee_suggestion() == (50, 50)


async def test_batch_answers_are_matched_by_id_not_position() -> None:
    transport = rpc_answers({"eth_chainId": "0x1", "eth_blockNumber": "0x2"})
    async with NodeClient("http://node:8545", transport=transport) as node_client:
        results = await node_client.batch([("eth_chainId", []), ("eth_blockNumber", [])])
    assert results == ["0x1", "0x2"]


async def test_malformed_quantity_is_a_chain_error() -> None:
    transport = rpc_answers({"eth_blockNumber": "twelve"})
    async with NodeClient("http://node:8545", transport=transport) as node_client:
        with pytest.raises(ChainError, match="malformed quantity"):
            await node_client.block_number()


async def _receipt(client: NodeClient, tx_hash: str) -> dict[str, Any] | None:
    """Anvil automines, but the receipt may trail the send by a moment on a loaded machine."""
    for _ in range(100):
        receipt = await client.get_transaction_receipt(tx_hash)
        if receipt is not None:
            return receipt
        await asyncio.sleep(0.05)
    return None
