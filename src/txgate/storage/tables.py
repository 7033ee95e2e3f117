"""The tables of txgate, one SQLAlchemy metadata for SQLite and PostgreSQL alike.

Addresses are stored lower-case; amounts as `Uint256`; times as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from txgate.storage.types import Uint256

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Id = String(36)
Hex = String(66)
AddressColumn = String(42)
Time = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Customer(Base):
    """An organisation holding assets with the custodian."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(Time)


class User(Base):
    """A person (or service) of a customer; `id` is the `sub` of their customer proof."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("customer_id", "name"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(Time)


class RefreshToken(Base):
    """A long-lived refresh token, stored as its SHA-256 only."""

    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(Time)
    expires_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(Id, nullable=True)


class AccessToken(Base):
    """A short-lived bearer token issued from a refresh token, stored as its SHA-256 only."""

    __tablename__ = "access_tokens"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    refresh_token_id: Mapped[str] = mapped_column(ForeignKey("refresh_tokens.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(Time)
    expires_at: Mapped[datetime] = mapped_column(Time)
    revoked_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)


class VaultKey(Base):
    """The key-encryption key's parameters (KDF salt) and a check value, never the key itself."""

    __tablename__ = "vault_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    check: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Time)


class Account(Base):
    """A custodial account: an address and its private key sealed by the vault."""

    __tablename__ = "accounts"
    address: Mapped[str] = mapped_column(AddressColumn, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    signer_backend: Mapped[str] = mapped_column(String(40))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Time)


class SigningKey(Base):
    """The custodian's own JWT signing keys (customer proofs); the private half sealed."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Time)
    retired_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)


class NonceCursor(Base):
    """The next nonce the custodian will assign for an account on a chain (row-locked on PG)."""

    __tablename__ = "nonce_cursors"
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address: Mapped[str] = mapped_column(AddressColumn, primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)


class Transaction(Base):
    """A transaction request and its whole lifecycle."""

    __tablename__ = "transactions"
    __table_args__ = (
        Index("ix_transactions_status_chain", "status", "chain_id"),
        Index("ix_transactions_account_nonce", "chain_id", "from_address", "nonce"),
        # Velocity sums: per initiator, source or destination, one asset, over a time window.
        Index("ix_transactions_velocity_user", "customer_id", "user_id", "asset", "created_at"),
        Index("ix_transactions_velocity_source", "from_address", "asset", "created_at"),
        Index("ix_transactions_velocity_destination", "destination", "asset", "created_at"),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    tx_type: Mapped[int] = mapped_column(Integer)
    from_address: Mapped[str] = mapped_column(AddressColumn)
    to_address: Mapped[str | None] = mapped_column(AddressColumn, nullable=True)
    value: Mapped[int] = mapped_column(Uint256)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    gas: Mapped[int] = mapped_column(BigInteger)
    max_fee_per_gas: Mapped[int | None] = mapped_column(Uint256, nullable=True)
    max_priority_fee_per_gas: Mapped[int | None] = mapped_column(Uint256, nullable=True)
    gas_price: Mapped[int | None] = mapped_column(Uint256, nullable=True)
    nonce: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(Hex, nullable=True, index=True)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    was_signed: Mapped[bool] = mapped_column(default=False)
    replaces_id: Mapped[str | None] = mapped_column(Id, nullable=True, index=True)
    replace_action: Mapped[str | None] = mapped_column(String(10), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Time, index=True)
    updated_at: Mapped[datetime] = mapped_column(Time)
    # The ledger view the policy engine reads (velocity limits): what moves, how much, to whom.
    asset: Mapped[str | None] = mapped_column(String(42), nullable=True)
    amount: Mapped[int | None] = mapped_column(Uint256, nullable=True)
    destination: Mapped[str | None] = mapped_column(AddressColumn, nullable=True)
    # The policy decision that applies: version, rule, and the approval requirement if any.
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class SignedMessage(Base):
    """A personal_sign or EIP-712 signature request and its lifecycle."""

    __tablename__ = "signed_messages"
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    address: Mapped[str] = mapped_column(AddressColumn)
    version: Mapped[str] = mapped_column(String(20))
    payload: Mapped[Any] = mapped_column(JSON)
    signature: Mapped[str | None] = mapped_column(String(140), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Time)
    updated_at: Mapped[datetime] = mapped_column(Time)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Policy(Base):
    """One version of a customer's policy: the file as written and its checked form."""

    __tablename__ = "policies"
    __table_args__ = (
        UniqueConstraint("customer_id", "version"),
        # At most one version in force per customer, whatever the code does.
        Index(
            "uq_policies_one_active",
            "customer_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    # proposed → active → superseded, or proposed → rejected
    status: Mapped[str] = mapped_column(String(20))
    proposed_by: Mapped[str] = mapped_column(String(200))
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Time)
    updated_at: Mapped[datetime] = mapped_column(Time)


class Vote(Base):
    """One approver's vote on one request; the unique constraint is the one-vote rule."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("subject_kind", "subject_id", "user_id"),)
    id: Mapped[str] = mapped_column(Id, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(Id, index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    decision: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(Time)


class Event(Base):
    """The outbox: one row per state change, written in the same database transaction."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("subject_kind", "subject_id", "seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(Id)
    seq: Mapped[int] = mapped_column(Integer)
    customer_id: Mapped[str] = mapped_column(Id, index=True)
    status: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Time)
    delivered_at: Mapped[datetime | None] = mapped_column(Time, nullable=True, index=True)


class AuditHead(Base):
    """One row holding the hash of the newest audit entry; locking it serialises appends."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    """A hash-chained record of one security-relevant action."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(Time)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
