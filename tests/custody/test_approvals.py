"""The quorum arithmetic and the one-vote rule, without servers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from txgate.custody.approvals import may_vote, tally
from txgate.storage.engine import Database
from txgate.storage.tables import Customer, User, Vote

TWO_OF_TWO = {
    "groups": [{"name": "approvers", "members": ["bob", "carol"], "threshold": 2}],
    "mode": "all",
    "initiator_may_approve": False,
    "initiator": "alice",
}


def votes(*approvers: str, reject: str | None = None) -> list[dict[str, str]]:
    cast = [{"user": name, "decision": "approve"} for name in approvers]
    return cast + ([{"user": reject, "decision": "reject"}] if reject else [])


def test_progress_counts_approvals_up_to_each_threshold() -> None:
    assert tally({**TWO_OF_TWO, "votes": []}).text == "Pending approval: 0 of 2"
    assert not tally({**TWO_OF_TWO, "votes": votes("bob")}).reached
    done = tally({**TWO_OF_TWO, "votes": votes("bob", "carol")})
    assert done.reached and done.text == "Pending approval: 2 of 2"
    # A voter outside every group adds nothing.
    assert tally({**TWO_OF_TWO, "votes": votes("bob", "mallory")}).counted == 1


def test_all_and_any_modes() -> None:
    two_groups = {
        **TWO_OF_TWO,
        "groups": [
            {"name": "risk", "members": ["bob"], "threshold": 1},
            {"name": "ops", "members": ["carol", "dan"], "threshold": 2},
        ],
    }
    assert not tally({**two_groups, "votes": votes("bob")}).reached
    assert tally({**two_groups, "votes": votes("bob", "carol", "dan")}).reached
    anyone = {**two_groups, "mode": "any"}
    assert tally({**anyone, "votes": votes("bob")}).reached
    assert not tally({**anyone, "votes": votes("carol")}).reached


def test_separation_of_duties() -> None:
    pending = {**TWO_OF_TWO, "votes": votes("bob")}
    assert "initiator" in (
        may_vote(
            {**pending, "groups": [{"name": "g", "members": ["alice"], "threshold": 1}]}, "alice"
        )
        or ""
    )
    assert "not in an approver group" in (may_vote(pending, "mallory") or "")
    assert "already voted" in (may_vote(pending, "bob") or "")
    assert may_vote(pending, "carol") is None
    allowed = {
        **TWO_OF_TWO,
        "initiator_may_approve": True,
        "groups": [{"name": "g", "members": ["alice"], "threshold": 1}],
    }
    assert may_vote({**allowed, "votes": []}, "alice") is None


async def test_one_vote_per_approver_is_a_database_constraint(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'votes.db'}")
    try:
        await db.upgrade()
        now = datetime.now(UTC)
        async with db.transaction() as session:
            session.add(Customer(id="c", name="Fund", created_at=now))
            await session.flush()
            session.add(User(id="u", customer_id="c", name="bob", role="approver", created_at=now))
        subject = str(uuid.uuid4())

        def vote() -> Vote:
            return Vote(
                id=str(uuid.uuid4()),
                subject_kind="transaction",
                subject_id=subject,
                user_id="u",
                decision="approve",
                created_at=now,
            )

        async with db.transaction() as session:
            session.add(vote())
        with pytest.raises(IntegrityError):
            async with db.transaction() as session:
                session.add(vote())
    finally:
        await db.dispose()
