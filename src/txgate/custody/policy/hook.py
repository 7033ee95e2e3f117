"""The policy hook the pipeline consults for every transaction and signature request.

This issue ships `AllowAll`; the policy engine (ordered rules, default deny, approval quorum)
replaces it behind the same `PolicyHook` interface without touching the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from txgate.custody.tokens import Caller
from txgate.storage.tables import SignedMessage, Transaction


class Verdict(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str
    reason: str


class PolicyHook(ABC):
    @abstractmethod
    async def decide(
        self, session: AsyncSession, *, caller: Caller, subject: Transaction | SignedMessage
    ) -> Decision:
        """Decide inside the caller's database transaction (velocity queries see the ledger)."""


class AllowAll(PolicyHook):
    """Placeholder policy until the policy engine lands: every request is allowed."""

    async def decide(
        self, session: AsyncSession, *, caller: Caller, subject: Transaction | SignedMessage
    ) -> Decision:
        return Decision(Verdict.ALLOW, rule="allow-all", reason="allow-all placeholder policy")
