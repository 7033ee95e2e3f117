"""The facts of one request: the only input of the policy engine.

The engine never reads a table row, a token or a raw payload; the pipeline builds one
`RequestFacts` per request with `transaction_facts` or `message_facts` (addresses lower-case,
amounts ints in base units), so the engine stays pure, fast and testable without a database.
`verdict` and `verdict_reasons` carry the pre-sign security result (Blockaid vocabulary) when
the insight part provides one; until then they stay None and empty, and rules that match on a
verdict simply do not match.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from txgate.custody.policy.calldata import CallSummary, TypedSummary, describe_call

RequestKind = Literal["transaction", "message"]
MessageKind = Literal["personal_sign", "typed_data"]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What is requested, by whom, from which account, moving what to whom.

    `to` is the contract or account called (for typed data, the verifying contract);
    `destination` is the party that receives value or an allowance (a transfer's recipient, a
    spender); `asset` is "native" or a token address, None when nothing moves (a plain
    signature); `amount` is in the asset's base units and `value` the native value carried.
    """

    kind: RequestKind
    customer_id: str
    initiator: str
    initiator_id: str
    chain_id: int | None
    source: str
    to: str | None
    destination: str | None
    destination_is_contract: bool | None
    asset: str | None
    amount: int
    value: int
    method: str | None
    selector: str | None
    message_kind: MessageKind | None
    primary_type: str | None
    verdict: str | None
    verdict_reasons: tuple[str, ...]
    now: datetime


def transaction_facts(
    *,
    customer_id: str,
    initiator: str,
    initiator_id: str,
    chain_id: int,
    source: str,
    to: str | None,
    value: int,
    data: bytes = b"",
    call: CallSummary | None = None,
    destination_is_contract: bool | None = None,
    verdict: str | None = None,
    verdict_reasons: Iterable[str] = (),
    now: datetime,
) -> RequestFacts:
    """Facts of a transaction request; `call` is described from (to, value, data) if not given."""
    summary = call if call is not None else describe_call(to, value, data)
    return RequestFacts(
        kind="transaction",
        customer_id=customer_id,
        initiator=initiator,
        initiator_id=initiator_id,
        chain_id=chain_id,
        source=source.lower(),
        to=to.lower() if to is not None else None,
        destination=summary.destination,
        destination_is_contract=destination_is_contract,
        asset=summary.asset,
        amount=summary.amount,
        value=value,
        method=summary.method,
        selector=summary.selector,
        message_kind=None,
        primary_type=None,
        verdict=verdict,
        verdict_reasons=tuple(verdict_reasons),
        now=_aware(now),
    )


def message_facts(
    *,
    customer_id: str,
    initiator: str,
    initiator_id: str,
    source: str,
    message_kind: MessageKind,
    typed: TypedSummary | None = None,
    chain_id: int | None = None,
    destination_is_contract: bool | None = None,
    verdict: str | None = None,
    verdict_reasons: Iterable[str] = (),
    now: datetime,
) -> RequestFacts:
    """Facts of a signature request. A permit (see `describe_typed_data`) moves an allowance to
    its spender; any other message moves nothing (asset None, amount 0). The chain is the
    typed-data domain's unless given."""
    return RequestFacts(
        kind="message",
        customer_id=customer_id,
        initiator=initiator,
        initiator_id=initiator_id,
        chain_id=chain_id if chain_id is not None else (typed.chain_id if typed else None),
        source=source.lower(),
        to=typed.verifying_contract if typed else None,
        destination=typed.destination if typed else None,
        destination_is_contract=destination_is_contract,
        asset=typed.asset if typed else None,
        amount=typed.amount if typed else 0,
        value=0,
        method=typed.method if typed else None,
        selector=None,
        message_kind=message_kind,
        primary_type=typed.primary_type if typed else None,
        verdict=verdict,
        verdict_reasons=tuple(verdict_reasons),
        now=_aware(now),
    )


def _aware(now: datetime) -> datetime:
    # Velocity windows are compared with the ledger's UTC times; a naive time would be a guess.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now
