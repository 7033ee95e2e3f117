"""`parse_transaction`: every refusal names its parameter; good input becomes plain typed values."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from txgate.core.errors import InvalidParams
from txgate.custody.requests import (
    MAX_DATA,
    MAX_FEE_PER_GAS,
    MAX_GAS,
    MAX_NOTE,
    MAX_URL,
    MIN_GAS,
    TransactionRequest,
    parse_transaction,
)

CHAINS = frozenset({31337, 1})
SENDER = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
RECIPIENT = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
HEX_QUANTITY = re.compile(r"^0x[0-9a-fA-F]+$")


def tx(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": SENDER,
        "to": RECIPIENT,
        "type": "0x2",
        "value": "0x1",
        "gas": hex(21_000),
        "maxFeePerGas": hex(20 * 10**9),
        "maxPriorityFeePerGas": hex(10**9),
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not DROP}


DROP = object()


def parse(body: Any, meta: Any = None, *, extra: list[Any] | None = None) -> TransactionRequest:
    params = [body, {"chainId": "0x7a69"} if meta is None else meta, *(extra or [])]
    return parse_transaction(params, supported_chains=CHAINS)


def refused(body: Any, meta: Any = None) -> InvalidParams:
    with pytest.raises(InvalidParams) as caught:
        parse(body, meta)
    error = caught.value
    assert error.param and error.data == {"param": error.param}
    assert error.param in error.message, error.message
    return error


def test_an_eip1559_transfer_parses_into_typed_values() -> None:
    request = parse(tx(), {"chainId": "0x7a69", "note": "hi", "originUrl": "https://a.example"})
    assert request.chain_id == 31337 and request.tx_type == 2
    assert request.from_address == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # checksummed
    assert request.to_address == RECIPIENT
    assert request.value == 1 and request.data == b"" and request.gas == 21_000
    assert request.max_fee_per_gas == 20 * 10**9 and request.max_priority_fee_per_gas == 10**9
    assert request.gas_price is None
    assert request.meta == {
        "note": "hi",
        "originUrl": "https://a.example",
        "custodianPublishesTransaction": True,
    }


def test_defaults_and_inferred_type() -> None:
    request = parse(tx(type=DROP, value=DROP, data=DROP))
    assert request.tx_type == 2 and request.value == 0 and request.data == b""


def test_a_legacy_transaction_parses() -> None:
    body = tx(type=DROP, maxFeePerGas=DROP, maxPriorityFeePerGas=DROP, gasPrice="0x3b9aca00")
    request = parse(body)
    assert request.tx_type == 0 and request.gas_price == 10**9
    assert request.max_fee_per_gas is None and request.max_priority_fee_per_gas is None


def test_type_1_without_access_list_signs_as_legacy() -> None:
    body = tx(type="0x1", maxFeePerGas=DROP, maxPriorityFeePerGas=DROP, gasPrice="0x1")
    assert parse(body).tx_type == 0


def test_contract_creation_needs_data_but_no_to() -> None:
    request = parse(tx(to=DROP, data="0x6080", gas=hex(100_000)))
    assert request.to_address is None and request.data == b"\x60\x80"
    assert parse(tx(to=None, data="0x00")).to_address is None


def test_limits_are_inclusive() -> None:
    assert parse(tx(gas=hex(MIN_GAS))).gas == MIN_GAS
    assert parse(tx(gas=hex(MAX_GAS))).gas == MAX_GAS
    fee = hex(MAX_FEE_PER_GAS)
    assert parse(tx(maxFeePerGas=fee, maxPriorityFeePerGas=fee)).max_fee_per_gas == MAX_FEE_PER_GAS
    assert parse(tx(data="0x" + "00" * MAX_DATA)).data == bytes(MAX_DATA)
    assert parse(tx(value=hex(2**256 - 1))).value == 2**256 - 1
    assert parse(tx(maxPriorityFeePerGas="0x0")).max_priority_fee_per_gas == 0


def test_metadata_is_kept_only_for_known_keys() -> None:
    meta = {
        "chainId": "0x1",
        "originUrl": "https://dapp.example",
        "note": "n" * MAX_NOTE,
        "transactionCategory": "transfer",
        "rpcUrl": "https://rpc.example",
        "custodianPublishesTransaction": False,
        "somethingElse": {"x": 1},
        "note2": None,
    }
    request = parse(tx(), meta)
    assert request.chain_id == 1
    assert request.meta == {
        "originUrl": "https://dapp.example",
        "note": "n" * MAX_NOTE,
        "transactionCategory": "transfer",
        "rpcUrl": "https://rpc.example",
        "custodianPublishesTransaction": False,
    }


@pytest.mark.parametrize(
    ("body", "meta", "param"),
    [
        # the two positional params
        ("not an object", None, "0"),
        ([SENDER], None, "0"),
        (tx(), "0x7a69", "1"),
        (tx(), ["0x7a69"], "1"),
        # from / to
        (tx(**{"from": DROP}), None, "0.from"),
        (tx(**{"from": None}), None, "0.from"),
        (tx(**{"from": 1}), None, "0.from"),
        (tx(**{"from": "alice"}), None, "0.from"),
        (tx(**{"from": SENDER[2:]}), None, "0.from"),
        (tx(**{"from": SENDER + "00"}), None, "0.from"),
        (tx(to="0x123"), None, "0.to"),
        (tx(to=12), None, "0.to"),
        (tx(to=DROP), None, "0.to"),  # neither a recipient nor creation code
        (tx(to=DROP, data="0x"), None, "0.to"),
        # value
        (tx(value=1), None, "0.value"),
        (tx(value=True), None, "0.value"),
        (tx(value="12"), None, "0.value"),
        (tx(value="-0x1"), None, "0.value"),
        (tx(value="0x"), None, "0.value"),
        (tx(value="0xg"), None, "0.value"),
        (tx(value="1e18"), None, "0.value"),
        (tx(value=None), None, "0.value"),
        (tx(value=hex(2**256)), None, "0.value"),
        # data
        (tx(data="0x1"), None, "0.data"),
        (tx(data="abcd"), None, "0.data"),
        (tx(data="0xzz"), None, "0.data"),
        (tx(data=b"\x00"), None, "0.data"),
        (tx(data="0x" + "00" * (MAX_DATA + 1)), None, "0.data"),
        # gas
        (tx(gas=DROP), None, "0.gas"),
        (tx(gas=21_000), None, "0.gas"),
        (tx(gas=hex(MIN_GAS - 1)), None, "0.gas"),
        (tx(gas=hex(MAX_GAS + 1)), None, "0.gas"),
        (tx(gas="0x0"), None, "0.gas"),
        # type
        (tx(type="0x3"), None, "0.type"),
        (tx(type="0x100"), None, "0.type"),
        (tx(type=2), None, "0.type"),
        (tx(type="0x0"), None, "0.type"),  # 1559 fee fields on a legacy type
        (tx(type="0x1", maxFeePerGas=DROP), None, "0.type"),
        # EIP-1559 fees
        (tx(maxFeePerGas=DROP), None, "0.maxFeePerGas"),
        (tx(maxPriorityFeePerGas=DROP), None, "0.maxPriorityFeePerGas"),
        (tx(gasPrice="0x1"), None, "0.gasPrice"),
        (tx(maxFeePerGas=20 * 10**9), None, "0.maxFeePerGas"),
        (tx(maxFeePerGas=hex(MAX_FEE_PER_GAS + 1)), None, "0.maxFeePerGas"),
        (tx(maxPriorityFeePerGas=hex(MAX_FEE_PER_GAS + 1)), None, "0.maxPriorityFeePerGas"),
        (
            tx(maxFeePerGas=hex(10**9), maxPriorityFeePerGas=hex(10**9 + 1)),
            None,
            "0.maxPriorityFeePerGas",
        ),
        (tx(maxFeePerGas="0x0", maxPriorityFeePerGas="0x0"), None, "0.maxFeePerGas"),
        # legacy fees
        (tx(type="0x0", maxFeePerGas=DROP, maxPriorityFeePerGas=DROP), None, "0.gasPrice"),
        (
            tx(type="0x0", maxFeePerGas=DROP, maxPriorityFeePerGas=DROP, gasPrice="0x0"),
            None,
            "0.gasPrice",
        ),
        (
            tx(type="0x0", maxFeePerGas=DROP, maxPriorityFeePerGas=DROP, gasPrice="1"),
            None,
            "0.gasPrice",
        ),
        (
            tx(
                type="0x0",
                maxFeePerGas=DROP,
                maxPriorityFeePerGas=DROP,
                gasPrice=hex(MAX_FEE_PER_GAS + 1),
            ),
            None,
            "0.gasPrice",
        ),
        # chain id
        (tx(), {}, "1.chainId"),
        (tx(), {"chainId": None}, "1.chainId"),
        (tx(), {"chainId": 31337}, "1.chainId"),
        (tx(), {"chainId": "31337"}, "1.chainId"),
        (tx(), {"chainId": "0x5"}, "1.chainId"),
        (tx(), {"chainId": hex(2**63)}, "1.chainId"),
        # metadata
        (tx(), {"chainId": "0x1", "note": 5}, "1.note"),
        (tx(), {"chainId": "0x1", "note": "n" * (MAX_NOTE + 1)}, "1.note"),
        (tx(), {"chainId": "0x1", "originUrl": "u" * (MAX_URL + 1)}, "1.originUrl"),
        (tx(), {"chainId": "0x1", "rpcUrl": ["x"]}, "1.rpcUrl"),
        (tx(), {"chainId": "0x1", "transactionCategory": "t" * 41}, "1.transactionCategory"),
        (
            tx(),
            {"chainId": "0x1", "custodianPublishesTransaction": "yes"},
            "1.custodianPublishesTransaction",
        ),
    ],
)
def test_each_bad_field_is_refused_by_name(body: Any, meta: Any, param: str) -> None:
    assert refused(body, meta).param == param


def test_a_missing_metadata_param_is_refused() -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_transaction([tx()], supported_chains=CHAINS)
    assert caught.value.param == "1"


def test_an_unsupported_chain_lists_the_supported_ones() -> None:
    error = refused(tx(), {"chainId": "0x5"})
    assert "0x5" in error.message and "0x1" in error.message and "0x7a69" in error.message
    with pytest.raises(InvalidParams, match="none"):
        parse_transaction([tx(), {"chainId": "0x1"}], supported_chains=frozenset())


@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789abcdefABCDEFxX-+ _\n\t").map(lambda s: "0x" + s),
        st.from_regex(r"\A0x[0-9a-fA-F]+\n\Z"),
    )
)
@example("-0x1")
@example("12")
@example("0X1")
@example(" 0x1")
@example("0x1 ")
@example("0x1\n")
@example("0x1_0")
@example("0x")
@example("0x٣")  # a digit, but not an ASCII hex digit
def test_a_value_that_is_not_hex_is_refused(value: str) -> None:
    if HEX_QUANTITY.fullmatch(value):
        return
    with pytest.raises(InvalidParams) as caught:
        parse(tx(value=value))
    assert caught.value.param == "0.value"


@given(st.integers(min_value=0, max_value=2**256 - 1), st.booleans())
def test_any_hex_value_in_range_parses_to_its_integer(number: int, upper: bool) -> None:
    text = hex(number).upper().replace("X", "x") if upper else hex(number)
    assert parse(tx(value=text)).value == number
