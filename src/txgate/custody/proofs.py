"""The custodian's own signatures: customer proofs and signed account lists (ES256 JWTs), and the
JWKS document that lets anyone (the relay, a wallet) verify them."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select

from txgate.audit.log import append as audit
from txgate.core.types import checksum
from txgate.custody.tokens import Caller
from txgate.custody.vault import Vault
from txgate.storage.engine import Database
from txgate.storage.tables import Account, SigningKey

ALGORITHM = "ES256"


class ProofSigner:
    """Holds the active signing key (opened once at start) and the public keys of all keys."""

    def __init__(
        self,
        *,
        kid: str,
        private_key: ec.EllipticCurvePrivateKey,
        jwks: list[dict[str, Any]],
        issuer: str,
    ) -> None:
        self._kid = kid
        self._key = private_key
        self._jwks = jwks
        self.issuer = issuer

    def __repr__(self) -> str:
        return f"ProofSigner(kid={self._kid!r}, issuer={self.issuer!r})"

    @classmethod
    async def load(cls, database: Database, vault: Vault, *, issuer: str) -> ProofSigner:
        """Open the newest unretired key, creating the first one on a new database."""
        async with database.transaction() as session:
            keys = list(
                (
                    await session.execute(select(SigningKey).order_by(SigningKey.created_at))
                ).scalars()
            )
            active = next((key for key in reversed(keys) if key.retired_at is None), None)
            if active is None:
                private = ec.generate_private_key(ec.SECP256R1())
                pem = private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                public_jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
                kid = hashlib.sha256(json.dumps(public_jwk, sort_keys=True).encode()).hexdigest()[
                    :16
                ]
                public_jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
                active = SigningKey(
                    kid=kid,
                    algorithm=ALGORITHM,
                    public_jwk=public_jwk,
                    sealed_key=vault.seal(pem, context=f"jwt:{kid}".encode()),
                    created_at=datetime.now(UTC),
                )
                session.add(active)
                keys.append(active)
                await audit(
                    session, actor="custodian", action="signing_key.created", subject=f"jwk:{kid}"
                )
            pem = vault.unseal(active.sealed_key, context=f"jwt:{active.kid}".encode())
        private_key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        return cls(
            kid=active.kid,
            private_key=private_key,
            jwks=[key.public_jwk for key in keys],
            issuer=issuer,
        )

    def jwks(self) -> dict[str, Any]:
        return {"keys": self._jwks}

    def _sign(self, claims: dict[str, Any], ttl: int) -> str:
        now = datetime.now(UTC)
        body = {
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=ttl),
            "jti": str(uuid.uuid4()),
        }
        body.update(claims)
        return jwt.encode(body, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})

    def customer_proof(self, caller: Caller, *, ttl: int) -> str:
        """`sub` is the user id (the `userId` of webhook metadata); the relay checks it."""
        return self._sign(
            {
                "sub": caller.user_id,
                "aud": "txgate-relay",
                "customerId": caller.customer_id,
                "customerName": caller.customer_name,
            },
            ttl,
        )

    def signed_accounts(self, caller: Caller, accounts: list[Account], *, ttl: int) -> str:
        payload = {
            "customerId": caller.customer_id,
            "customerName": caller.customer_name,
            "accounts": [{"address": checksum(a.address), "name": a.name} for a in accounts],
        }
        return self._sign({"sub": caller.user_id, "payload": payload}, ttl)
