"""End to end over HTTP against anvil, on SQLite and PostgreSQL: tokens, accounts, transfers
mined and matching the chain, signatures recovering to the account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct, encode_typed_data

from support.contracts import compile_test_contracts, connect, deploy
from support.custodian import CustodianProcess, Eca3Client, Seeded, fund, seed
from support.payloads import MAIL
from txgate.chain import DEV_ACCOUNTS, Anvil

pytestmark = pytest.mark.integration


@pytest.fixture
async def custodian(
    database_url: str, anvil: Anvil, tmp_path: Path
) -> AsyncIterator[tuple[CustodianProcess, Seeded]]:
    seeded = await seed(database_url)
    await fund(anvil.url, seeded.accounts)
    process = await CustodianProcess(database_url, anvil.url, tmp_path / "data").start()
    try:
        yield process, seeded
    finally:
        await process.stop()


async def test_eth_and_erc20_transfers_are_mined_as_requested(
    custodian: tuple[CustodianProcess, Seeded], anvil: Anvil
) -> None:
    process, seeded = custodian
    sender, _ = seeded.accounts
    recipient = EthAccount.create().address
    async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
        grant = await client.login()
        assert grant["token_type"] == "bearer" and grant["expires_in"] > 0
        listed = await client.call("custodian_listAccounts", [])
        assert {a["address"] for a in listed} == set(seeded.accounts)

        tx_id = await client.call(
            "custodian_createTransaction",
            [
                {
                    "from": sender,
                    "to": recipient,
                    "type": "0x2",
                    "value": hex(12345),
                    "gas": hex(21000),
                    "maxFeePerGas": hex(20 * 10**9),
                    "maxPriorityFeePerGas": hex(10**9),
                },
                {"chainId": hex(31337), "note": "eth transfer", "originUrl": "https://app.example"},
            ],
        )
        final = await client.wait_final(tx_id)
        status = final["transaction"]["status"]
        assert status["success"] and status["displayText"] == "Mined", final

        token_artifact = compile_test_contracts()["TestToken"]
        with connect(anvil.url) as w3:
            token = deploy(w3, token_artifact, DEV_ACCOUNTS[1].private_key, "Test", "TST", 10**24)
            receipt = w3.eth.get_transaction_receipt(final["transaction"]["hash"])
            assert receipt["status"] == 1
            assert receipt["from"] == sender and receipt["to"] == recipient
            onchain = w3.eth.get_transaction(final["transaction"]["hash"])
            assert onchain["value"] == 12345 and onchain["nonce"] == int(
                final["transaction"]["nonce"], 16
            )
            assert w3.eth.get_balance(recipient) == 12345

            contract = w3.eth.contract(address=token, abi=token_artifact["abi"])
            fund_tx = contract.functions.transfer(sender, 10**21).build_transaction(
                {
                    "from": DEV_ACCOUNTS[1].address,
                    "nonce": w3.eth.get_transaction_count(DEV_ACCOUNTS[1].address),
                }
            )
            signed = EthAccount.sign_transaction(fund_tx, DEV_ACCOUNTS[1].private_key)
            w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
            calldata = contract.encode_abi("transfer", [recipient, 777])

        tx_id = await client.call(
            "custodian_createTransaction",
            [
                {
                    "from": sender,
                    "to": token,
                    "type": "0x2",
                    "value": "0x0",
                    "data": calldata,
                    "gas": hex(100_000),
                    "maxFeePerGas": hex(20 * 10**9),
                    "maxPriorityFeePerGas": hex(10**9),
                },
                {"chainId": hex(31337), "transactionCategory": "transfer"},
            ],
        )
        final = await client.wait_final(tx_id)
        assert final["transaction"]["status"]["success"], final
        with connect(anvil.url) as w3:
            contract = w3.eth.contract(address=token, abi=token_artifact["abi"])
            assert contract.functions.balanceOf(recipient).call() == 777
            receipt = w3.eth.get_transaction_receipt(final["transaction"]["hash"])
            assert receipt["to"] == token and len(receipt["logs"]) == 1


async def test_signatures_recover_to_the_account(
    custodian: tuple[CustodianProcess, Seeded],
) -> None:
    process, seeded = custodian
    account = seeded.accounts[0]
    async with Eca3Client(process.url, seeded.refresh_tokens["alice"]) as client:
        message_id = await client.call(
            "custodian_sign",
            [{"address": account, "message": "0x" + b"hello world".hex()}, {"chainId": "0x7a69"}],
        )
        signed = await client.call("custodian_getSignedMessageById", [message_id])
        assert signed["status"]["signed"] and signed["signatureVersion"] == "personal_sign"
        assert (
            EthAccount.recover_message(
                encode_defunct(b"hello world"), signature=signed["signature"]
            )
            == account
        )

        for version in ("v3", "v4"):
            message_id = await client.call(
                "custodian_signTypedData",
                [{"address": account, "data": MAIL, "version": version}, {}],
            )
            signed = await client.call("custodian_getSignedMessageById", [message_id])
            assert signed["signatureVersion"] == f"eip_712_{version}"
            recovered = EthAccount.recover_message(
                encode_typed_data(full_message=MAIL), signature=signed["signature"]
            )
            assert recovered == account
