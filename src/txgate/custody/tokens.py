"""Refresh and access tokens: issue, exchange, authenticate, revoke. Stored as SHA-256 only.

A refresh token is long-lived and is what a user pastes into their wallet; it buys short-lived
access tokens at `POST /oauth/token`. With rotation on, each exchange retires the refresh token
and hands back a new one. Revoking a refresh token revokes the access tokens bought with it.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.core.errors import Unauthenticated
from txgate.storage.tables import AccessToken, Customer, RefreshToken, User

REFRESH_PREFIX = "txg_rt_"
ACCESS_PREFIX = "txg_at_"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user behind a request."""

    user_id: str
    user_name: str
    role: str
    customer_id: str
    customer_name: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_oauth(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": "",
        }


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _refresh_row(user_id: str, ttl: int | None) -> tuple[str, RefreshToken]:
    """A new clear refresh token and the row that stores only its hash."""
    token = _new_token(REFRESH_PREFIX)
    now = datetime.now(UTC)
    row = RefreshToken(
        id=str(uuid.uuid4()),
        user_id=user_id,
        token_hash=token_hash(token),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl) if ttl else None,
    )
    return token, row


async def issue_refresh_token(
    session: AsyncSession, *, user: User, ttl: int | None, actor: str
) -> str:
    """A new refresh token for `user`; the clear token is returned once and never stored."""
    token, row = _refresh_row(user.id, ttl)
    session.add(row)
    await audit(
        session,
        actor=actor,
        action="token.issued",
        subject=f"user:{user.id}",
        details={"refresh_token_id": row.id},
    )
    return token


async def exchange_refresh_token(
    session: AsyncSession,
    *,
    refresh_token: str,
    access_ttl: int,
    rotate: bool,
    refresh_ttl: int | None,
) -> TokenGrant:
    """Trade a refresh token for an access token (and, with rotation, a new refresh token)."""
    now = datetime.now(UTC)
    row = (
        await session.execute(
            select(RefreshToken)
            .where(RefreshToken.token_hash == token_hash(refresh_token))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if (
        row is None
        or row.revoked_at is not None
        or (row.expires_at and _utc(row.expires_at) <= now)
    ):
        raise Unauthenticated("refresh token is unknown, expired or revoked")
    user = await session.get(User, row.user_id)
    assert user is not None
    next_refresh = refresh_token
    source_id = row.id
    if rotate:
        next_refresh, successor = _refresh_row(row.user_id, refresh_ttl)
        session.add(successor)
        await session.flush()  # before the access token that refers to it
        row.revoked_at = now
        row.replaced_by = successor.id
        source_id = successor.id
    access = _new_token(ACCESS_PREFIX)
    session.add(
        AccessToken(
            id=str(uuid.uuid4()),
            user_id=row.user_id,
            refresh_token_id=source_id,
            token_hash=token_hash(access),
            created_at=now,
            expires_at=now + timedelta(seconds=access_ttl),
        )
    )
    await audit(
        session,
        actor=f"user:{user.id}",
        action="token.exchanged",
        subject=f"user:{user.id}",
        details={"refresh_token_id": row.id, "rotated": rotate},
    )
    return TokenGrant(access_token=access, refresh_token=next_refresh, expires_in=access_ttl)


async def authenticate(session: AsyncSession, *, access_token: str) -> Caller:
    now = datetime.now(UTC)
    row = (
        await session.execute(
            select(AccessToken, User, Customer)
            .join(User, User.id == AccessToken.user_id)
            .join(Customer, Customer.id == User.customer_id)
            .where(AccessToken.token_hash == token_hash(access_token))
        )
    ).one_or_none()
    if row is None:
        raise Unauthenticated("access token is unknown")
    token, user, customer = row
    if token.revoked_at is not None:
        raise Unauthenticated("access token was revoked")
    if _utc(token.expires_at) <= now:
        raise Unauthenticated("access token expired; get a new one from the token endpoint")
    return Caller(user.id, user.name, user.role, customer.id, customer.name)


async def revoke(session: AsyncSession, *, token: str, actor: str) -> bool:
    """Revoke a refresh or access token (RFC 7009 semantics: unknown tokens are not an error).

    Revoking a refresh token also revokes every access token bought with it."""
    now = datetime.now(UTC)
    digest = token_hash(token)
    refresh = (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == digest))
    ).scalar_one_or_none()
    if refresh is not None:
        if refresh.revoked_at is None:
            refresh.revoked_at = now
        await session.execute(
            update(AccessToken)
            .where(AccessToken.refresh_token_id == refresh.id, AccessToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await audit(
            session,
            actor=actor,
            action="token.revoked",
            subject=f"user:{refresh.user_id}",
            details={"refresh_token_id": refresh.id},
        )
        return True
    access = (
        await session.execute(select(AccessToken).where(AccessToken.token_hash == digest))
    ).scalar_one_or_none()
    if access is not None:
        access.revoked_at = access.revoked_at or now
        await audit(
            session,
            actor=actor,
            action="token.revoked",
            subject=f"user:{access.user_id}",
            details={"access_token_id": access.id},
        )
        return True
    return False


async def revoke_user_tokens(session: AsyncSession, *, user_id: str, actor: str) -> int:
    """Revoke every refresh and access token of a user (an off-boarding or a lost device)."""
    now = datetime.now(UTC)
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await audit(
        session,
        actor=actor,
        action="token.revoked",
        subject=f"user:{user_id}",
        details={"all": True},
    )
    return int(getattr(result, "rowcount", 0) or 0)
