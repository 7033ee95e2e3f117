"""`describe_call` and `describe_typed_data`: who receives what, and never an exception."""

from __future__ import annotations

from typing import Any

from eth_abi.abi import encode
from hypothesis import given
from hypothesis import strategies as st

from txgate.core.types import UINT256_MAX
from txgate.custody.policy.calldata import (
    CallSummary,
    TypedSummary,
    describe_call,
    describe_typed_data,
)

TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
ALICE = "0x1111111111111111111111111111111111111111"
BOB = "0x2222222222222222222222222222222222222222"


def call(selector: str, types: list[str], args: list[Any]) -> bytes:
    return bytes.fromhex(selector) + encode(types, args)


def test_plain_transfer_and_deploy() -> None:
    assert describe_call(BOB, 5, b"") == CallSummary(None, None, "native", 5, BOB.lower())
    assert describe_call(None, 7, b"\x60\x80") == CallSummary("deploy", None, "native", 7, None)


def test_erc20_transfer_moves_tokens_to_the_recipient() -> None:
    data = call("a9059cbb", ["address", "uint256"], [BOB, 10**6])
    assert describe_call(TOKEN, 0, data) == CallSummary(
        "transfer", "0xa9059cbb", TOKEN.lower(), 10**6, BOB.lower()
    )


def test_transfer_from_goes_to_its_second_argument() -> None:
    data = call("23b872dd", ["address", "address", "uint256"], [ALICE, BOB, 3])
    summary = describe_call(TOKEN, 0, data)
    assert (summary.method, summary.destination, summary.amount) == ("transferFrom", BOB.lower(), 3)


def test_allowances_go_to_the_spender() -> None:
    for selector, method in (("095ea7b3", "approve"), ("39509351", "increaseAllowance")):
        data = call(selector, ["address", "uint256"], [BOB, UINT256_MAX])
        summary = describe_call(TOKEN, 0, data)
        assert summary == CallSummary(
            method, "0x" + selector, TOKEN.lower(), UINT256_MAX, BOB.lower()
        )


def test_set_approval_for_all_is_unlimited_and_its_revocation_is_zero() -> None:
    grant = describe_call(TOKEN, 0, call("a22cb465", ["address", "bool"], [BOB, True]))
    revoke = describe_call(TOKEN, 0, call("a22cb465", ["address", "bool"], [BOB, False]))
    assert (grant.method, grant.destination, grant.amount) == (
        "setApprovalForAll",
        BOB.lower(),
        UINT256_MAX,
    )
    assert revoke.amount == 0


def test_nft_transfers_move_one_token_and_name_its_id() -> None:
    plain = call("42842e0e", ["address", "address", "uint256"], [ALICE, BOB, 42])
    with_data = call("b88d4fde", ["address", "address", "uint256", "bytes"], [ALICE, BOB, 42, b"x"])
    for data in (plain, with_data):
        summary = describe_call(TOKEN, 0, data)
        assert (summary.method, summary.destination, summary.amount, summary.token_id) == (
            "safeTransferFrom",
            BOB.lower(),
            1,
            42,
        )
    erc1155 = call(
        "f242432a", ["address", "address", "uint256", "uint256", "bytes"], [ALICE, BOB, 7, 30, b""]
    )
    assert describe_call(TOKEN, 0, erc1155).amount == 30
    batch = call(
        "2eb2c2d6",
        ["address", "address", "uint256[]", "uint256[]", "bytes"],
        [ALICE, BOB, [1, 2], [5, 6], b""],
    )
    assert describe_call(TOKEN, 0, batch).amount == 11


def test_eip2612_permit_call() -> None:
    data = call(
        "d505accf",
        ["address", "address", "uint256", "uint256", "uint8", "bytes32", "bytes32"],
        [ALICE, BOB, 500, 2**40, 27, b"\x01" * 32, b"\x02" * 32],
    )
    summary = describe_call(TOKEN, 0, data)
    assert (summary.method, summary.asset, summary.amount, summary.destination) == (
        "permit",
        TOKEN.lower(),
        500,
        BOB.lower(),
    )


def test_malformed_known_calldata_is_an_unknown_call() -> None:
    truncated = call("a9059cbb", ["address", "uint256"], [BOB, 1])[:-1]
    dirty_address = bytes.fromhex("a9059cbb") + b"\xff" * 32 + (1).to_bytes(32, "big")
    for data in (truncated, dirty_address, bytes.fromhex("a9059cbb")):
        assert describe_call(TOKEN, 9, data) == CallSummary(
            None, "0xa9059cbb", "native", 9, TOKEN.lower()
        )


def test_unknown_and_short_calldata() -> None:
    assert describe_call(TOKEN, 1, bytes.fromhex("deadbeef00")) == CallSummary(
        None, "0xdeadbeef", "native", 1, TOKEN.lower()
    )
    # Under four bytes reaches the fallback: a call, not a plain transfer.
    assert describe_call(TOKEN, 1, b"\x01").selector == "0x01"


@given(
    to=st.none() | st.just(TOKEN), value=st.integers(0, UINT256_MAX), data=st.binary(max_size=200)
)
def test_describe_call_never_raises(to: str | None, value: int, data: bytes) -> None:
    summary = describe_call(to, value, data)
    assert 0 <= summary.amount <= UINT256_MAX


@given(
    selector=st.sampled_from(["a9059cbb", "23b872dd", "095ea7b3", "a22cb465", "2eb2c2d6"]),
    tail=st.binary(max_size=300),
)
def test_known_selectors_with_random_arguments_never_raise(selector: str, tail: bytes) -> None:
    describe_call(TOKEN, 0, bytes.fromhex(selector) + tail)


def typed(primary: str, message: dict[str, Any], **domain: Any) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": []},
        "primaryType": primary,
        "domain": {"chainId": 1, **domain},
        "message": message,
    }


def test_eip2612_permit_message() -> None:
    data = typed(
        "Permit",
        {"owner": ALICE, "spender": BOB, "value": "1000", "nonce": 0, "deadline": 1},
        verifyingContract=TOKEN,
    )
    assert describe_typed_data(data) == TypedSummary(
        "Permit", TOKEN.lower(), 1, "permit", BOB.lower(), TOKEN.lower(), 1000
    )


def test_dai_permit_is_unlimited_when_allowed() -> None:
    message = {"holder": ALICE, "spender": BOB, "nonce": 0, "expiry": 0, "allowed": True}
    assert describe_typed_data(typed("Permit", message, verifyingContract=TOKEN)).amount == (
        UINT256_MAX
    )
    message["allowed"] = False
    assert describe_typed_data(typed("Permit", message, verifyingContract=TOKEN)).amount == 0


def test_permit2_single_and_transfer_from() -> None:
    single = typed(
        "PermitSingle",
        {
            "details": {"token": TOKEN, "amount": "0x10", "expiration": 0, "nonce": 0},
            "spender": BOB,
        },
    )
    summary = describe_typed_data(single)
    assert (summary.method, summary.asset, summary.amount, summary.destination) == (
        "permit",
        TOKEN.lower(),
        16,
        BOB.lower(),
    )
    transfer = typed(
        "PermitTransferFrom", {"permitted": {"token": TOKEN, "amount": 5}, "spender": BOB}
    )
    assert describe_typed_data(transfer).amount == 5


def test_permit2_batch_of_one_token_sums_and_of_several_names_no_asset() -> None:
    same = typed(
        "PermitBatch",
        {"details": [{"token": TOKEN, "amount": 1}, {"token": TOKEN, "amount": 2}], "spender": BOB},
    )
    assert (describe_typed_data(same).asset, describe_typed_data(same).amount) == (TOKEN.lower(), 3)
    mixed = typed(
        "PermitBatchTransferFrom",
        {
            "permitted": [{"token": TOKEN, "amount": 1}, {"token": ALICE, "amount": 9}],
            "spender": BOB,
        },
    )
    assert (describe_typed_data(mixed).asset, describe_typed_data(mixed).amount) == (None, 9)


def test_unreadable_permit_amount_counts_as_unlimited() -> None:
    data = typed("Permit", {"spender": BOB, "value": "lots"}, verifyingContract=TOKEN)
    assert describe_typed_data(data).amount == UINT256_MAX


def test_other_messages_move_nothing() -> None:
    summary = describe_typed_data(typed("Mail", {"contents": "hi"}, verifyingContract=TOKEN))
    assert summary == TypedSummary("Mail", TOKEN.lower(), 1)
    assert describe_typed_data({}) == TypedSummary(None, None, None)


@given(
    st.dictionaries(
        st.sampled_from(["primaryType", "domain", "message", "types"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["spender", "details", "token", "amount"]), inner)
            ),
            max_leaves=10,
        )
        | st.sampled_from(["Permit", "PermitSingle", "PermitBatch"]),
    )
)
def test_describe_typed_data_never_raises(data: dict[str, Any]) -> None:
    describe_typed_data(data)
