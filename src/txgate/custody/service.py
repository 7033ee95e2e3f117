"""The custodian service: the one place that wires database, vault, nodes, policy and pipeline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from txgate.chain.client import NodeClient
from txgate.config import Settings
from txgate.core.errors import Forbidden, InvalidParams
from txgate.core.status import Status
from txgate.custody import approvals, messages
from txgate.custody.pipeline import Pipeline, PipelineSettings
from txgate.custody.policy import PolicyHook
from txgate.custody.policy import store as policy_store
from txgate.custody.policy.gate import PolicyGate
from txgate.custody.policy.store import PolicyFormat
from txgate.custody.proofs import ProofSigner
from txgate.custody.tokens import Caller
from txgate.custody.vault import Vault
from txgate.storage.engine import Database
from txgate.storage.group_commit import GroupCommit
from txgate.storage.tables import Account, Policy, SignedMessage, Transaction

log = structlog.get_logger(__name__)

EXPIRY_CHECK_SECONDS = 2.0


class Custodian:
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        vault: Vault,
        nodes: Mapping[int, NodeClient],
        proofs: ProofSigner,
        policy: PolicyHook,
        pipeline: Pipeline,
    ) -> None:
        self.settings = settings
        self.db = db
        self.vault = vault
        self.nodes = dict(nodes)
        self.proofs = proofs
        self.policy = policy
        self.pipeline = pipeline
        self.supported_chains = frozenset(self.nodes)
        # Requests that only insert (create transaction, request signature) share commits.
        self.writes = GroupCommit(db)
        self._expiry: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, settings: Settings, *, db: Database | None = None, policy: PolicyHook | None = None
    ) -> Custodian:
        """Connect to the database (migrating it), open the vault, reach every node."""
        db = db or Database(settings.resolved_database_url)
        await db.upgrade()
        vault = await Vault.open(
            db.transaction,
            passphrase=settings.vault_passphrase.get_secret_value()
            if settings.vault_passphrase
            else None,
            key_file=settings.resolved_vault_key_file,
        )
        nodes: dict[int, NodeClient] = {}
        for url in settings.rpc_urls:
            node = NodeClient(url)
            chain_id = await node.chain_id()
            if chain_id in nodes:
                await node.aclose()
                raise InvalidParams(f"two node URLs serve chain {chain_id}", param="rpc_urls")
            nodes[chain_id] = node
        proofs = await ProofSigner.load(db, vault, issuer=settings.custodian_url)
        pipeline = Pipeline(
            database=db,
            vault=vault,
            nodes=nodes,
            settings=PipelineSettings(
                confirmations=settings.confirmations, poll_interval=settings.poll_interval
            ),
        )
        return cls(
            settings=settings,
            db=db,
            vault=vault,
            nodes=nodes,
            proofs=proofs,
            policy=policy or PolicyGate(nodes=nodes, approval_ttl=settings.approval_ttl),
            pipeline=pipeline,
        )

    def start(self) -> None:
        self.pipeline.start()
        self._expiry = asyncio.create_task(self._expire_approvals(), name="approval-expiry")
        log.info("custodian.started", chains=sorted(self.supported_chains))

    async def _expire_approvals(self) -> None:
        """Abort requests whose approval window closed (checked every few seconds)."""
        while True:
            await asyncio.sleep(EXPIRY_CHECK_SECONDS)
            try:
                async with self.db.transaction() as session:
                    await approvals.expire(session, at=datetime.now(UTC))
            except Exception:
                log.exception("approvals.expiry_failed")

    def wake(self) -> None:
        self.pipeline.wake()

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        await self.pipeline.stop()
        for node in self.nodes.values():
            await node.aclose()
        await self.db.dispose()

    # -- approvals and policy versions (the REST API and the CLI come here) ---------------------

    async def vote(
        self, caller: Caller, *, subject_id: str, decision: str, reason: str | None
    ) -> dict[str, Any]:
        """Count a vote; finish what the quorum unlocks (sign a message, activate a policy)."""
        async with self.db.transaction() as session:
            outcome = await approvals.vote(
                session,
                caller=caller,
                kind=None,
                subject_id=subject_id,
                decision=decision,
                reason=reason,
            )
            subject = outcome.subject
            if outcome.status == Status.APPROVED.value and isinstance(subject, SignedMessage):
                account = await session.get(Account, subject.address)
                assert account is not None
                await messages.sign_approved(
                    session, vault=self.vault, message=subject, sealed_key=account.sealed_key
                )
            elif isinstance(subject, Policy) and subject.status == "approved":
                await policy_store.activate(session, subject, actor=f"user:{caller.user_id}")
        if isinstance(subject, Transaction):
            self.wake()
        return {
            "kind": outcome.kind,
            "id": subject.id,
            "status": subject.status,
            "text": outcome.text,
        }

    async def policy_versions(self, caller: Caller) -> dict[str, Any]:
        async with self.db.read() as session:
            rows = await policy_store.versions(session, customer_id=caller.customer_id)
        return {"versions": [policy_store.describe(row) for row in rows]}

    async def propose_policy(
        self, caller: Caller, *, source: str, format: PolicyFormat
    ) -> dict[str, Any]:
        if caller.role != "admin":
            raise Forbidden("only an administrator of your organisation may change its policy")
        async with self.db.transaction() as session:
            row = await policy_store.propose(
                session,
                customer_id=caller.customer_id,
                source=source,
                format=format,
                proposer=caller.user_name,
                actor=f"user:{caller.user_id}",
                approval_ttl=self.settings.approval_ttl,
            )
        return policy_store.describe(row)
