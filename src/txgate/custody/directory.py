"""Customers (organisations), their users and their custodial accounts."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from txgate.audit.log import append as audit
from txgate.core.errors import Conflict, InvalidParams, NotFound
from txgate.core.types import normalise_address
from txgate.custody.events import now
from txgate.custody.vault import Vault
from txgate.storage.tables import Account, Customer, User

ROLES = ("admin", "trader", "approver", "viewer")


async def create_customer(session: AsyncSession, *, name: str, actor: str) -> Customer:
    name = name.strip()
    if not name:
        raise InvalidParams("customer name must not be empty", param="name")
    if (await session.execute(select(Customer).where(Customer.name == name))).scalar_one_or_none():
        raise Conflict(f"a customer named {name!r} already exists")
    customer = Customer(id=str(uuid.uuid4()), name=name, created_at=now())
    session.add(customer)
    # The tables declare no ORM relationships, so flushing here is what inserts a parent row
    # before the rows that refer to it later in the same transaction.
    await session.flush()
    await audit(
        session,
        actor=actor,
        action="customer.created",
        subject=f"customer:{customer.id}",
        details={"name": name},
    )
    return customer


async def find_customer(session: AsyncSession, *, name_or_id: str) -> Customer:
    customer = (
        await session.execute(
            select(Customer).where((Customer.name == name_or_id) | (Customer.id == name_or_id))
        )
    ).scalar_one_or_none()
    if customer is None:
        raise NotFound(f"no customer {name_or_id!r}")
    return customer


async def list_customers(session: AsyncSession) -> list[Customer]:
    return list((await session.execute(select(Customer).order_by(Customer.created_at))).scalars())


async def create_user(
    session: AsyncSession, *, customer: Customer, name: str, role: str, actor: str
) -> User:
    name = name.strip()
    if not name:
        raise InvalidParams("user name must not be empty", param="name")
    if role not in ROLES:
        raise InvalidParams(f"role must be one of {', '.join(ROLES)}", param="role")
    existing = await session.execute(
        select(User).where(User.customer_id == customer.id, User.name == name)
    )
    if existing.scalar_one_or_none() is not None:
        raise Conflict(f"{customer.name} already has a user named {name!r}")
    user = User(
        id=str(uuid.uuid4()), customer_id=customer.id, name=name, role=role, created_at=now()
    )
    session.add(user)
    await session.flush()
    await audit(
        session,
        actor=actor,
        action="user.created",
        subject=f"user:{user.id}",
        details={"customer_id": customer.id, "name": name, "role": role},
    )
    return user


async def find_user(
    session: AsyncSession, *, name_or_id: str, customer: Customer | None = None
) -> User:
    query = select(User).where((User.name == name_or_id) | (User.id == name_or_id))
    if customer is not None:
        query = query.where(User.customer_id == customer.id)
    users = list((await session.execute(query)).scalars())
    if not users:
        raise NotFound(f"no user {name_or_id!r}")
    if len(users) > 1:
        raise InvalidParams(
            f"several customers have a user named {name_or_id!r}; name the customer",
            param="customer",
        )
    return users[0]


async def list_users(session: AsyncSession, *, customer: Customer) -> list[User]:
    return list(
        (
            await session.execute(
                select(User).where(User.customer_id == customer.id).order_by(User.created_at)
            )
        ).scalars()
    )


async def create_account(
    session: AsyncSession, *, vault: Vault, customer: Customer, name: str, actor: str
) -> Account:
    """A new secp256k1 account for `customer`; its key is sealed before it touches the session."""
    name = name.strip()
    if not name:
        raise InvalidParams("account name must not be empty", param="name")
    address, sealed = vault.new_account_key()
    account = Account(
        address=normalise_address(address),
        customer_id=customer.id,
        name=name,
        signer_backend="local",
        sealed_key=sealed,
        created_at=now(),
    )
    session.add(account)
    await session.flush()
    await audit(
        session,
        actor=actor,
        action="account.created",
        subject=f"account:{address}",
        details={"customer_id": customer.id, "name": name},
    )
    return account


async def list_accounts(session: AsyncSession, *, customer_id: str) -> list[Account]:
    query = (
        select(Account)
        .where(Account.customer_id == customer_id)
        .order_by(Account.created_at, Account.address)
    )
    return list((await session.execute(query)).scalars())


async def customer_account(
    session: AsyncSession, *, customer_id: str, address: str, param: str
) -> Account:
    """The account at `address` if it belongs to `customer_id`; otherwise one indistinct error,
    so a caller cannot probe which addresses the custodian holds for others."""
    account = await session.get(Account, normalise_address(address))
    if account is None or account.customer_id != customer_id:
        raise InvalidParams(
            f"{param}: {address} is not an account of your organisation", param=param
        )
    return account
