"""The twelve ECA-3 methods, each a thin handler: parse params → service → spec-shaped result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from txgate.core.errors import InvalidParams
from txgate.core.status import FINAL, Status
from txgate.core.types import checksum, parse_address, to_hex_uint
from txgate.custody import directory, messages, transactions
from txgate.custody.requests import parse_fee_bump, parse_transaction
from txgate.custody.tokens import Caller
from txgate.jsonrpc import Dispatcher
from txgate.storage.tables import SignedMessage

if TYPE_CHECKING:
    from txgate.custody.service import Custodian


class Eca3Methods:
    """Binds the methods to one custodian; `dispatcher()` registers them."""

    def __init__(self, custodian: Custodian) -> None:
        self.custodian = custodian

    def dispatcher(self) -> Dispatcher[Caller]:
        d: Dispatcher[Caller] = Dispatcher()
        d.add("custodian_listAccounts", self.list_accounts, max_params=0)
        d.add("custodian_listAccountsSigned", self.list_accounts_signed, max_params=0)
        d.add(
            "custodian_listAccountChainIds", self.list_account_chain_ids, min_params=1, max_params=1
        )
        d.add("custodian_createTransaction", self.create_transaction, min_params=2, max_params=2)
        d.add(
            "custodian_getTransactionById", self.get_transaction_by_id, min_params=1, max_params=1
        )
        d.add("custodian_replaceTransaction", self.replace_transaction, min_params=1, max_params=2)
        d.add("custodian_getTransactionLink", self.get_transaction_link, min_params=1, max_params=1)
        d.add("custodian_sign", self.sign, min_params=1, max_params=2)
        d.add("custodian_signTypedData", self.sign_typed_data, min_params=1, max_params=2)
        d.add(
            "custodian_getSignedMessageById",
            self.get_signed_message_by_id,
            min_params=1,
            max_params=1,
        )
        d.add(
            "custodian_getSignedMessageLink",
            self.get_signed_message_link,
            min_params=1,
            max_params=1,
        )
        d.add("custodian_getCustomerProof", self.get_customer_proof, max_params=0)
        return d

    # -- accounts ------------------------------------------------------------------------------

    async def list_accounts(self, caller: Caller, params: list[Any]) -> list[dict[str, Any]]:
        async with self.custodian.db.read() as session:
            accounts = await directory.list_accounts(session, customer_id=caller.customer_id)
        return [
            {
                "address": checksum(account.address),
                "name": account.name,
                "tags": [
                    {"name": "account-name", "value": account.name},
                    {"name": "customer-name", "value": caller.customer_name},
                ],
                "metadata": {"active": True, "deleted": False, "isContract": False},
            }
            for account in accounts
        ]

    async def list_accounts_signed(self, caller: Caller, params: list[Any]) -> dict[str, str]:
        async with self.custodian.db.read() as session:
            accounts = await directory.list_accounts(session, customer_id=caller.customer_id)
        token = self.custodian.proofs.signed_accounts(
            caller, accounts, ttl=self.custodian.settings.customer_proof_ttl
        )
        return {"jwt": token}

    async def list_account_chain_ids(self, caller: Caller, params: list[Any]) -> list[str]:
        address = parse_address(params[0], param="0")
        async with self.custodian.db.read() as session:
            await directory.customer_account(
                session, customer_id=caller.customer_id, address=address, param="0"
            )
        return [to_hex_uint(chain_id) for chain_id in sorted(self.custodian.supported_chains)]

    async def get_customer_proof(self, caller: Caller, params: list[Any]) -> dict[str, str]:
        return {
            "jwt": self.custodian.proofs.customer_proof(
                caller, ttl=self.custodian.settings.customer_proof_ttl
            )
        }

    # -- transactions --------------------------------------------------------------------------

    async def create_transaction(self, caller: Caller, params: list[Any]) -> str:
        request = parse_transaction(params, supported_chains=self.custodian.supported_chains)
        tx = await self.custodian.writes.run(
            lambda session: transactions.create_transaction(
                session, caller=caller, request=request, policy=self.custodian.policy
            )
        )
        self.custodian.wake()
        return tx.id

    async def get_transaction_by_id(
        self, caller: Caller, params: list[Any]
    ) -> dict[str, Any] | None:
        tx_id = _single_id(params[0])
        async with self.custodian.db.read() as session:
            tx = await transactions.get_transaction(session, caller=caller, tx_id=tx_id)
        return None if tx is None else transactions.eca3_transaction(tx)

    async def replace_transaction(self, caller: Caller, params: list[Any]) -> dict[str, str]:
        body = params[0]
        if not isinstance(body, dict):
            raise InvalidParams("0 must be an object with transactionId and action", param="0")
        bump = parse_fee_bump(params[1] if len(params) > 1 else None, param="1")
        async with self.custodian.db.transaction() as session:
            replacement = await transactions.replace_transaction(
                session,
                caller=caller,
                tx_id=body.get("transactionId"),
                action=body.get("action"),
                bump=bump,
                policy=self.custodian.policy,
            )
        self.custodian.wake()
        return {"transactionId": replacement.id}

    async def get_transaction_link(
        self, caller: Caller, params: list[Any]
    ) -> dict[str, Any] | None:
        tx_id = _single_id(params[0])
        async with self.custodian.db.read() as session:
            tx = await transactions.get_transaction(session, caller=caller, tx_id=tx_id)
        if tx is None:
            return None
        waiting = tx.status == Status.PENDING_APPROVAL.value
        return {
            "transactionId": tx.id,
            "url": f"{self.custodian.settings.custodian_url}/transactions/{tx.id}",
            "text": "Approve your transaction in the custodian"
            if waiting
            else f"Transaction is {tx.status.replace('_', ' ')}",
            "action": "Approve" if waiting else "View",
            "showLink": waiting,
            "ethereum": {
                "accounts": [checksum(tx.from_address)],
                "chainIds": [to_hex_uint(tx.chain_id)],
            },
        }

    # -- signed messages -----------------------------------------------------------------------

    async def sign(self, caller: Caller, params: list[Any]) -> str:
        address, message, meta = messages.parse_personal(params)
        return await self._request_signature(
            caller, address, messages.PERSONAL, "0x" + message.hex(), meta
        )

    async def sign_typed_data(self, caller: Caller, params: list[Any]) -> str:
        address, data, version, meta = messages.parse_typed(params)
        kind = messages.TYPED_V3 if version == "v3" else messages.TYPED_V4
        return await self._request_signature(caller, address, kind, data, meta)

    async def _request_signature(
        self, caller: Caller, address: str, version: str, payload: Any, meta: dict[str, Any]
    ) -> str:
        message = await self.custodian.writes.run(
            lambda session: messages.request_signature(
                session,
                caller=caller,
                vault=self.custodian.vault,
                policy=self.custodian.policy,
                address=address,
                version=version,
                payload=payload,
                meta=meta,
            )
        )
        return message.id

    async def get_signed_message_by_id(
        self, caller: Caller, params: list[Any]
    ) -> dict[str, Any] | None:
        message = await self._message(caller, _single_id(params[0]))
        return None if message is None else messages.eca3_signed_message(message)

    async def get_signed_message_link(
        self, caller: Caller, params: list[Any]
    ) -> dict[str, Any] | None:
        message = await self._message(caller, _single_id(params[0]))
        if message is None:
            return None
        waiting = message.status == Status.PENDING_APPROVAL.value
        chain_ids = [to_hex_uint(message.meta["chainId"])] if "chainId" in message.meta else []
        return {
            "signedMessageId": message.id,
            "url": f"{self.custodian.settings.custodian_url}/signed-messages/{message.id}",
            "text": "Approve your signature in the custodian"
            if waiting
            else f"Signature is {message.status.replace('_', ' ')}",
            "action": "Approve" if waiting else "View",
            "showLink": waiting and Status(message.status) not in FINAL,
            "ethereum": {"accounts": [checksum(message.address)], "chainIds": chain_ids},
        }

    async def _message(self, caller: Caller, message_id: str) -> SignedMessage | None:
        async with self.custodian.db.read() as session:
            message = await session.get(SignedMessage, message_id)
        if message is None or message.customer_id != caller.customer_id:
            return None
        return message


def _single_id(value: Any) -> str:
    """An id given as `"id"` or, as in the spec's own example, `["id"]`."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value or len(value) > 64:
        raise InvalidParams("0 must be an id string", param="0")
    return value
