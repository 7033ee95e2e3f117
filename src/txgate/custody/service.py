"""The custodian service: the one place that wires database, vault, nodes, policy and pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from eth_account.messages import encode_typed_data

from txgate.chain.client import NodeClient
from txgate.config import Settings
from txgate.core.errors import InvalidParams
from txgate.custody.pipeline import Pipeline, PipelineSettings
from txgate.custody.policy import AllowAll, PolicyHook
from txgate.custody.proofs import ProofSigner
from txgate.custody.vault import Vault
from txgate.storage.engine import Database
from txgate.storage.group_commit import GroupCommit

log = structlog.get_logger(__name__)


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
            policy=policy or AllowAll(),
            pipeline=pipeline,
        )

    def start(self) -> None:
        self.pipeline.start()
        log.info("custodian.started", chains=sorted(self.supported_chains))

    def wake(self) -> None:
        self.pipeline.wake()

    async def close(self) -> None:
        await self.pipeline.stop()
        for node in self.nodes.values():
            await node.aclose()
        await self.db.dispose()

    @staticmethod
    def check_typed_data(data: dict[str, Any], version: str) -> None:
        try:
            encode_typed_data(full_message=data)
        except Exception as error:  # eth-account raises many kinds for malformed typed data
            raise InvalidParams(
                f"0.data is not valid EIP-712 typed data: {str(error)[:200]}", param="0.data"
            ) from None
