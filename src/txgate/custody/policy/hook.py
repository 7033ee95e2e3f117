"""The policy hook the pipeline consults for every transaction and signature request.

The custodian runs `gate.PolicyGate`, the policy engine (ordered rules, default deny, approval
quorum), behind this interface; another decision source (an external policy service) would
implement the same one.
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
    """The verdict, the rule that gave it, and `reason`: the text shown as it is to the user
    (it names the rule, e.g. "Blocked by rule 'default-deny': no rule matched")."""

    verdict: Verdict
    rule: str
    reason: str


class PolicyHook(ABC):
    @abstractmethod
    async def decide(
        self, session: AsyncSession, *, caller: Caller, subject: Transaction | SignedMessage
    ) -> Decision:
        """Decide inside the caller's database transaction (velocity queries see the ledger)."""
