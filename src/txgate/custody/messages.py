"""Signature requests: `custodian_sign` (EIP-191 personal_sign) and `custodian_signTypedData`
(EIP-712 v3/v4), with the same lifecycle as transactions up to `signed`."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.core.errors import InvalidParams
from txgate.core.status import Status, eca3_message_status
from txgate.core.types import checksum, normalise_address, parse_address, parse_bytes
from txgate.custody.directory import customer_account
from txgate.custody.events import move, now, record
from txgate.custody.policy import PolicyHook, Verdict
from txgate.custody.requests import parse_message_metadata
from txgate.custody.signer import encode_typed_message
from txgate.custody.tokens import Caller
from txgate.custody.transactions import waiting_text
from txgate.custody.vault import Vault
from txgate.storage.tables import SignedMessage

PERSONAL = "personal_sign"
TYPED_V3 = "eip_712_v3"
TYPED_V4 = "eip_712_v4"
MAX_MESSAGE = 64 * 1024


def parse_personal(params: list[Any]) -> tuple[str, bytes, dict[str, Any]]:
    body = params[0]
    if not isinstance(body, dict):
        raise InvalidParams("0 must be an object with address and message", param="0")
    address = parse_address(body.get("address"), param="0.address")
    if "message" not in body:
        raise InvalidParams("0.message is required", param="0.message")
    message = parse_bytes(body["message"], param="0.message")
    if len(message) > MAX_MESSAGE:
        raise InvalidParams(f"0.message is larger than {MAX_MESSAGE} bytes", param="0.message")
    return (
        address,
        message,
        parse_message_metadata(params[1] if len(params) > 1 else None, param="1"),
    )


def parse_typed(params: list[Any]) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    body = params[0]
    if not isinstance(body, dict):
        raise InvalidParams("0 must be an object with address, data and version", param="0")
    address = parse_address(body.get("address"), param="0.address")
    version = body.get("version")
    if version not in ("v3", "v4"):
        raise InvalidParams('0.version must be "v3" or "v4"', param="0.version")
    data = body.get("data")
    if isinstance(data, str):  # some wallets send the typed data JSON-encoded
        import json

        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidParams("0.data is not valid typed-data JSON", param="0.data") from None
    if not isinstance(data, dict):
        raise InvalidParams("0.data must be an EIP-712 typed-data object", param="0.data")
    for key in ("types", "primaryType", "domain", "message"):
        if key not in data:
            raise InvalidParams(f"0.data.{key} is required", param=f"0.data.{key}")
    if not isinstance(data["types"], dict) or "EIP712Domain" not in data["types"]:
        raise InvalidParams("0.data.types must include EIP712Domain", param="0.data.types")
    # Encode now, exactly as the signer will: malformed typed data fails here, before anything
    # is stored, instead of at signing time.
    try:
        encode_typed_message(data, version)
    except InvalidParams as error:
        raise InvalidParams(
            f"0.data: {error.message}", param=f"0.{error.param or 'data'}"
        ) from None
    except Exception as error:  # eth-account raises many kinds for malformed typed data
        raise InvalidParams(
            f"0.data is not valid EIP-712 typed data: {str(error)[:200]}", param="0.data"
        ) from None
    return (
        address,
        data,
        version,
        parse_message_metadata(params[1] if len(params) > 1 else None, param="1"),
    )


async def request_signature(
    session: AsyncSession,
    *,
    caller: Caller,
    vault: Vault,
    policy: PolicyHook,
    address: str,
    version: str,
    payload: Any,
    meta: dict[str, Any],
) -> SignedMessage:
    """Create the request, ask the policy, and sign at once when allowed (all in one commit)."""
    account = await customer_account(
        session, customer_id=caller.customer_id, address=address, param="0.address"
    )
    stamp = now()
    message = SignedMessage(
        id=str(uuid.uuid4()),
        customer_id=caller.customer_id,
        user_id=caller.user_id,
        address=normalise_address(address),
        version=version,
        payload=payload,
        status=Status.CREATED.value,
        meta=meta,
        event_seq=0,
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(message)
    record(session, message)
    await audit(
        session,
        actor=f"user:{caller.user_id}",
        action="message.created",
        subject=f"signed_message:{message.id}",
        details={"address": message.address, "version": version},
    )
    decision = await policy.decide(session, caller=caller, subject=message)
    if decision.verdict is Verdict.BLOCK:
        move(
            session,
            message,
            Status.BLOCKED,
            reason=decision.reason,
        )
        return message
    if decision.verdict is Verdict.REQUIRE_APPROVAL:
        move(session, message, Status.PENDING_APPROVAL, payload={"policy": {"rule": decision.rule}})
        return message
    move(session, message, Status.APPROVED, payload={"policy": {"rule": decision.rule}})
    await sign_approved(session, vault=vault, message=message, sealed_key=account.sealed_key)
    return message


async def sign_approved(
    session: AsyncSession, *, vault: Vault, message: SignedMessage, sealed_key: bytes
) -> None:
    signer = vault.signer(message.address, sealed_key)
    if message.version == PERSONAL:
        signature = await signer.sign_personal_message(bytes.fromhex(message.payload[2:]))
    else:
        signature = await signer.sign_typed_data(
            message.payload, "v3" if message.version == TYPED_V3 else "v4"
        )
    message.signature = signature
    move(session, message, Status.SIGNED, payload={"signature": signature})
    await audit(
        session,
        actor="custodian",
        action="message.signed",
        subject=f"signed_message:{message.id}",
        details={"address": message.address, "version": message.version},
    )


def eca3_signed_message(message: SignedMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": message.id,
        "address": checksum(message.address),
        "signatureVersion": message.version,
        "status": eca3_message_status(
            Status(message.status),
            reason=message.reason,
            display_text=waiting_text(message.approval, Status(message.status)),
        ),
    }
    if message.signature:
        body["signature"] = message.signature
    return body
