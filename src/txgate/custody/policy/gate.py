"""The policy engine behind the pipeline's hook: the customer's active policy decides.

For each request it builds the facts (who asks, from which account, what moves where, which
method), evaluates the compiled policy (cached per version), records the decision on the request
(policy version, the ledger columns velocity limits sum over, and a snapshot of the approval
requirement), and returns the hook's `Decision`. A customer without an active policy gets every
request blocked: the default is deny.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from txgate.chain.client import NodeClient
from txgate.core.types import checksum
from txgate.custody.approvals import requirement_snapshot
from txgate.custody.policy import store
from txgate.custody.policy.calldata import describe_typed_data
from txgate.custody.policy.document import parse_policy
from txgate.custody.policy.engine import CompiledPolicy
from txgate.custody.policy.facts import RequestFacts, message_facts, transaction_facts
from txgate.custody.policy.hook import Decision, PolicyHook, Verdict
from txgate.custody.policy.ledger import SqlVelocity
from txgate.custody.tokens import Caller
from txgate.storage.tables import SignedMessage, Transaction

NO_POLICY = "no-policy"
# Whether an address holds code changes rarely (a deployment, an EIP-7702 delegation): a short
# cache keeps eth_getCode off the hot path without trusting an old answer for long.
CODE_CACHE_SECONDS = 60.0


class PolicyGate(PolicyHook):
    def __init__(self, *, nodes: Mapping[int, NodeClient], approval_ttl: int) -> None:
        self._nodes = nodes
        self._approval_ttl = approval_ttl
        self._compiled: dict[str, CompiledPolicy] = {}
        self._code: dict[tuple[int, str], tuple[float, bool]] = {}

    async def decide(
        self, session: AsyncSession, *, caller: Caller, subject: Transaction | SignedMessage
    ) -> Decision:
        row = await store.active(session, customer_id=caller.customer_id)
        if row is None:
            return Decision(
                Verdict.BLOCK,
                rule=NO_POLICY,
                reason=f"Blocked by rule {NO_POLICY!r}: your organisation has no active policy; "
                "an administrator must apply one",
            )
        policy = self._compiled.get(row.id)
        if policy is None:
            policy = self._compiled[row.id] = CompiledPolicy.compile(parse_policy(row.document))
        facts = await self._facts(caller, subject, checks_code=_checks_code(row.document))
        decision = await policy.evaluate(
            facts, velocity=SqlVelocity(session, customer_id=caller.customer_id)
        )
        subject.policy_version = row.version
        if isinstance(subject, Transaction):
            subject.asset = facts.asset
            subject.amount = facts.amount
            subject.destination = facts.destination
        if decision.approval is not None:
            subject.approval = {
                **requirement_snapshot(
                    decision.approval.as_dict(),
                    initiator=caller.user_name,
                    ttl_seconds=self._approval_ttl,
                ),
                "rule": decision.rule,
            }
        return decision.to_decision()

    async def _facts(
        self, caller: Caller, subject: Transaction | SignedMessage, *, checks_code: bool
    ) -> RequestFacts:
        now = datetime.now(UTC)
        if isinstance(subject, Transaction):
            facts = transaction_facts(
                customer_id=caller.customer_id,
                initiator=caller.user_name,
                initiator_id=caller.user_id,
                chain_id=subject.chain_id,
                source=subject.from_address,
                to=subject.to_address,
                value=subject.value,
                data=subject.data,
                now=now,
            )
        else:
            typed = (
                describe_typed_data(subject.payload) if subject.version != "personal_sign" else None
            )
            facts = message_facts(
                customer_id=caller.customer_id,
                initiator=caller.user_name,
                initiator_id=caller.user_id,
                source=subject.address,
                message_kind="personal_sign" if typed is None else "typed_data",
                typed=typed,
                chain_id=subject.meta.get("chainId"),
                now=now,
            )
        chain_id = facts.chain_id
        if checks_code and facts.destination and chain_id is not None and chain_id in self._nodes:
            is_contract = await self._is_contract(chain_id, facts.destination)
            facts = replace(facts, destination_is_contract=is_contract)
        return facts

    async def _is_contract(self, chain_id: int, address: str) -> bool:
        key = (chain_id, address)
        cached = self._code.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        code = await self._nodes[chain_id].get_code(checksum(address))
        self._code[key] = (time.monotonic() + CODE_CACHE_SECONDS, len(code) > 0)
        return len(code) > 0


def _checks_code(document: Mapping[str, object]) -> bool:
    """Only ask the node for code when some rule matches on contract vs. account."""
    rules = document.get("rules") or []
    assert isinstance(rules, list)
    return any((rule.get("match") or {}).get("destination", {}).get("type") for rule in rules)
