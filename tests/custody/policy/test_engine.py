"""The engine: each condition alone at its edges, first match wins, default deny, approvals,
fiat with and without a price, velocity."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from txgate.core.errors import InternalError
from txgate.custody.policy.calldata import describe_typed_data
from txgate.custody.policy.document import parse_policy
from txgate.custody.policy.engine import (
    DEFAULT_DENY,
    ApprovalRequirement,
    ApproverGroup,
    CompiledPolicy,
    PolicyDecision,
)
from txgate.custody.policy.facts import RequestFacts, message_facts, transaction_facts
from txgate.custody.policy.hook import Decision, Verdict

NOW = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)
ALICE_ADDR = "0x1111111111111111111111111111111111111111"
BOB_ADDR = "0x2222222222222222222222222222222222222222"
CAROL_ADDR = "0x3333333333333333333333333333333333333333"
SOURCE = "0x4444444444444444444444444444444444444444"
TOKEN = "0x5555555555555555555555555555555555555555"
ETHER = 10**18

GROUPS = {"traders": ["alice"], "approvers": ["bob", "carol", "dave"], "ops": ["erin"]}
ALLOWLISTS = {"spenders": [BOB_ADDR]}


def compile_policy(*rules: dict[str, Any], prices: dict[str, Any] | None = None) -> CompiledPolicy:
    data: dict[str, Any] = {
        "version": 1,
        "groups": GROUPS,
        "allowlists": ALLOWLISTS,
        "rules": list(rules),
    }
    if prices is not None:
        data["prices"] = prices
    return CompiledPolicy.compile(parse_policy(data))


def facts(**changes: Any) -> RequestFacts:
    base = transaction_facts(
        customer_id="c1",
        initiator="alice",
        initiator_id="u-alice",
        chain_id=1,
        source=SOURCE,
        to=BOB_ADDR,
        value=ETHER,
        destination_is_contract=False,
        now=NOW,
    )
    return replace(base, **changes)


class Ledger:
    """A `VelocityLookup` answering a fixed history, recording what it was asked."""

    def __init__(self, history: int) -> None:
        self.history = history
        self.asked: list[dict[str, Any]] = []

    async def total(self, *, scope: str, key: str, asset: str, since: datetime) -> int:
        self.asked.append({"scope": scope, "key": key, "asset": asset, "since": since})
        return self.history


async def allows(match: dict[str, Any], request: RequestFacts, **policy: Any) -> bool:
    compiled = compile_policy({"name": "only", "match": match, "action": "allow"}, **policy)
    decision = await compiled.evaluate(request, velocity=Ledger(0))
    return decision.verdict is Verdict.ALLOW


MATCHER_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("kind hit", {"kind": ["transaction"]}, {}, True),
    ("kind miss", {"kind": ["message"]}, {}, False),
    ("chain hit", {"chain": [1, 5]}, {}, True),
    ("chain miss", {"chain": [5]}, {}, False),
    ("chain none", {"chain": [1]}, {"chain_id": None}, False),
    ("user hit", {"initiator": {"users": ["alice"]}}, {}, True),
    ("user miss", {"initiator": {"users": ["bob"]}}, {}, False),
    ("group hit", {"initiator": {"groups": ["traders"]}}, {}, True),
    ("group miss", {"initiator": {"groups": ["ops"]}}, {}, False),
    ("user or group", {"initiator": {"users": ["zed"], "groups": ["traders"]}}, {}, True),
    ("source hit (any case)", {"source": [SOURCE.upper().replace("0X", "0x")]}, {}, True),
    ("source miss", {"source": [ALICE_ADDR]}, {}, False),
    ("address hit", {"destination": {"addresses": [BOB_ADDR]}}, {}, True),
    ("address miss", {"destination": {"addresses": [CAROL_ADDR]}}, {}, False),
    ("allowlist hit", {"destination": {"allowlists": ["spenders"]}}, {}, True),
    (
        "allowlist miss",
        {"destination": {"allowlists": ["spenders"]}},
        {"destination": ALICE_ADDR},
        False,
    ),
    ("no destination", {"destination": {"addresses": [BOB_ADDR]}}, {"destination": None}, False),
    ("any", {"destination": {"any": True}}, {"destination": None}, True),
    ("type eoa", {"destination": {"type": "eoa"}}, {}, True),
    ("type contract", {"destination": {"type": "contract"}}, {}, False),
    ("type unknown", {"destination": {"type": "eoa"}}, {"destination_is_contract": None}, False),
    ("listed and type", {"destination": {"addresses": [BOB_ADDR], "type": "contract"}}, {}, False),
    ("asset hit", {"asset": ["native"]}, {}, True),
    ("asset miss", {"asset": [TOKEN]}, {}, False),
    ("asset none", {"asset": ["native"]}, {"asset": None}, False),
    ("amount at max", {"amount": {"max": "1 ether"}}, {}, True),
    ("amount over max", {"amount": {"max": ETHER - 1}}, {}, False),
    ("amount at min", {"amount": {"min": "1 ether"}}, {}, True),
    ("amount under min", {"amount": {"min": ETHER + 1}}, {}, False),
    ("amount exact range", {"amount": {"min": ETHER, "max": ETHER}}, {}, True),
    ("value at max", {"value": {"max": ETHER}}, {"amount": 0}, True),
    ("value over max", {"value": {"max": ETHER - 1}}, {"amount": 0}, False),
    ("value under min", {"value": {"min": 1}}, {"value": 0}, False),
    (
        "method name",
        {"method": ["transfer"]},
        {"method": "transfer", "selector": "0xa9059cbb"},
        True,
    ),
    (
        "method selector",
        {"method": ["0xA9059CBB"]},
        {"method": None, "selector": "0xa9059cbb"},
        True,
    ),
    (
        "method miss",
        {"method": ["approve"]},
        {"method": "transfer", "selector": "0xa9059cbb"},
        False,
    ),
    ("method none: plain", {"method": ["none"]}, {}, True),
    ("method none: call", {"method": ["none"]}, {"selector": "0xdeadbeef"}, False),
    ("method none: deploy", {"method": ["none"]}, {"method": "deploy"}, False),
    ("method none: message", {"method": ["none"]}, {"kind": "message"}, False),
    ("method deploy", {"method": ["deploy"]}, {"method": "deploy", "destination": None}, True),
    ("verdict hit", {"verdict": ["Benign"]}, {"verdict": "Benign"}, True),
    ("verdict miss", {"verdict": ["Benign"]}, {"verdict": "Warning"}, False),
    ("verdict none", {"verdict": ["Benign", "Error"]}, {}, False),
    ("message on tx", {"message": {}}, {}, False),
    ("message any", {"message": {}}, {"kind": "message"}, True),
    (
        "message kind",
        {"message": {"kind": ["typed_data"]}},
        {"kind": "message", "message_kind": "personal_sign"},
        False,
    ),
    (
        "primary type",
        {"message": {"primary_type": ["Permit"]}},
        {"kind": "message", "message_kind": "typed_data", "primary_type": "Permit"},
        True,
    ),
    ("empty match", {}, {}, True),
]


@pytest.mark.parametrize(
    ("match", "changes", "expected"),
    [case[1:] for case in MATCHER_CASES],
    ids=[case[0] for case in MATCHER_CASES],
)
async def test_each_condition_alone(
    match: dict[str, Any], changes: dict[str, Any], expected: bool
) -> None:
    assert await allows(match, facts(**changes)) is expected


PRICES = {"native": {"usd": "3000", "decimals": 18}, TOKEN: {"usd": "0.5", "decimals": 6}}


@pytest.mark.parametrize(
    ("fiat", "changes", "expected"),
    [
        ({"max_usd": "3000"}, {}, True),  # 1 ETH at $3000: on the edge
        ({"max_usd": "2999.99"}, {}, False),
        ({"min_usd": "3000"}, {}, True),
        ({"min_usd": "3000.01"}, {}, False),
        ({"max_usd": "0.000000000000003"}, {"amount": 1}, True),  # 1 wei is $3e-15
        ({"max_usd": "0.000000000000002"}, {"amount": 1}, False),
        ({"max_usd": "5"}, {"asset": TOKEN, "amount": 10 * 10**6}, True),  # 10 tokens at $0.5
        ({"max_usd": "4.99"}, {"asset": TOKEN, "amount": 10 * 10**6}, False),
        ({"max_usd": "1000000"}, {"asset": CAROL_ADDR}, False),  # no price: never matches
        ({"min_usd": "0"}, {"asset": None}, False),
    ],
)
async def test_fiat(fiat: dict[str, Any], changes: dict[str, Any], expected: bool) -> None:
    assert await allows({"fiat": fiat}, facts(**changes), prices=PRICES) is expected


async def test_fiat_without_any_price_never_matches() -> None:
    assert not await allows({"fiat": {"min_usd": "0"}}, facts())


async def test_first_matching_rule_wins_and_no_match_is_denied() -> None:
    policy = compile_policy(
        {"name": "block-bob", "match": {"initiator": {"users": ["bob"]}}, "action": "block"},
        {"name": "small", "match": {"amount": {"max": "1 ether"}}, "action": "allow"},
        {"name": "all-alice", "match": {"initiator": {"users": ["alice"]}}, "action": "block"},
    )
    assert (await policy.evaluate(facts())).rule == "small"
    assert (await policy.evaluate(facts(amount=2 * ETHER))).rule == "all-alice"
    bob = await policy.evaluate(facts(initiator="bob"))
    assert (bob.rule, bob.verdict) == ("block-bob", Verdict.BLOCK)
    denied = await policy.evaluate(facts(initiator="zed", amount=2 * ETHER))
    assert denied == PolicyDecision(
        Verdict.BLOCK, DEFAULT_DENY, "Blocked by rule 'default-deny': no rule matched", None
    )
    assert await compile_policy().evaluate(facts()) == denied


async def test_reasons_and_the_hook_decision() -> None:
    policy = compile_policy(
        {"name": "no-eth", "match": {"asset": ["native"]}, "action": "block", "reason": "frozen"},
        {"name": "quiet", "action": "block"},
    )
    blocked = await policy.evaluate(facts())
    assert blocked.reason == "Blocked by rule 'no-eth': frozen"
    assert blocked.to_decision() == Decision(
        Verdict.BLOCK, "no-eth", "Blocked by rule 'no-eth': frozen"
    )
    assert (await policy.evaluate(facts(asset=TOKEN))).reason == "Blocked by rule 'quiet'"


APPROVALS_RULE: dict[str, Any] = {
    "name": "big",
    "action": "require_approval",
    "reason": "big transfer",
    "approvals": {
        "groups": [{"group": "approvers", "threshold": 2}, {"users": ["erin"], "threshold": 1}],
        "mode": "all",
        "extra_on_warning": 1,
    },
}


async def test_approval_requirement_and_extra_on_warning() -> None:
    policy = compile_policy(APPROVALS_RULE)
    decision = await policy.evaluate(facts())
    assert decision.verdict is Verdict.REQUIRE_APPROVAL
    assert decision.reason == "Approval required by rule 'big': big transfer"
    assert decision.approval == ApprovalRequirement(
        (
            ApproverGroup("approvers", frozenset({"bob", "carol", "dave"}), 2),
            ApproverGroup("users erin", frozenset({"erin"}), 1),
        ),
        "all",
        False,
    )
    warned = await policy.evaluate(facts(verdict="Warning"))
    assert warned.approval is not None
    # +1 each, but never more than the group has members.
    assert [g.threshold for g in warned.approval.groups] == [3, 1]
    assert (await policy.evaluate(facts(verdict="Benign"))).approval == decision.approval


def test_approval_requirement_round_trips_and_counts_votes() -> None:
    requirement = ApprovalRequirement(
        (
            ApproverGroup("approvers", frozenset({"carol", "bob"}), 2),
            ApproverGroup("ops", frozenset({"erin"}), 1),
        ),
        "all",
        False,
    )
    stored = requirement.as_dict()
    assert stored["groups"][0]["members"] == ["bob", "carol"]
    assert ApprovalRequirement.from_dict(stored) == requirement
    assert requirement.reached({"bob", "carol", "erin"}, initiator="alice")
    assert not requirement.reached({"bob", "carol"}, initiator="alice")
    assert not requirement.reached({"bob", "carol", "erin"}, initiator="erin")
    anyone = replace(requirement, mode="any", initiator_may_approve=True)
    assert anyone.reached({"erin"}, initiator="erin")
    with pytest.raises(ValueError, match="mode"):
        ApprovalRequirement.from_dict({**stored, "mode": "most"})


async def test_velocity_sums_history_and_the_request_within_the_window() -> None:
    rule = {
        "name": "daily",
        "match": {"velocity": {"scope": "initiator", "window": "24h", "max": "10 ether"}},
        "action": "allow",
    }
    policy = compile_policy(rule)
    at_limit = Ledger(9 * ETHER)
    assert (await policy.evaluate(facts(), velocity=at_limit)).verdict is Verdict.ALLOW
    assert at_limit.asked == [
        {
            "scope": "initiator",
            "key": "u-alice",
            "asset": "native",
            "since": NOW - timedelta(hours=24),
        }
    ]
    over = await policy.evaluate(facts(), velocity=Ledger(9 * ETHER + 1))
    assert over.rule == DEFAULT_DENY


@pytest.mark.parametrize(
    ("scope", "key"), [("initiator", "u-alice"), ("source", SOURCE), ("destination", BOB_ADDR)]
)
async def test_velocity_keys(scope: str, key: str) -> None:
    rule = {
        "name": "v",
        "match": {"velocity": {"scope": scope, "window": "30s", "min": 0}},
        "action": "allow",
    }
    ledger = Ledger(0)
    await compile_policy(rule).evaluate(facts(), velocity=ledger)
    assert ledger.asked[0]["key"] == key
    assert ledger.asked[0]["since"] == NOW - timedelta(seconds=30)


async def test_velocity_min_blocks_above_a_limit() -> None:
    policy = compile_policy(
        {
            "name": "over-daily",
            "match": {"velocity": {"scope": "source", "window": "1d", "min": ETHER * 5 + 1}},
            "action": "block",
        },
        {"name": "rest", "action": "allow"},
    )
    assert (await policy.evaluate(facts(), velocity=Ledger(4 * ETHER))).rule == "rest"
    assert (await policy.evaluate(facts(), velocity=Ledger(4 * ETHER + 1))).rule == "over-daily"


async def test_velocity_is_asked_only_when_everything_else_matched() -> None:
    policy = compile_policy(
        {
            "name": "bob-daily",
            "match": {
                "initiator": {"users": ["bob"]},
                "velocity": {"scope": "initiator", "window": "1h", "max": 1},
            },
            "action": "allow",
        }
    )
    ledger = Ledger(0)
    await policy.evaluate(facts(), velocity=ledger)
    assert ledger.asked == []


async def test_velocity_without_a_destination_or_asset_does_not_match() -> None:
    policy = compile_policy(
        {
            "name": "d",
            "match": {"velocity": {"scope": "destination", "window": "1h", "min": 0}},
            "action": "allow",
        }
    )
    ledger = Ledger(0)
    assert (await policy.evaluate(facts(destination=None), velocity=ledger)).rule == DEFAULT_DENY
    assert (await policy.evaluate(facts(asset=None), velocity=ledger)).rule == DEFAULT_DENY
    assert ledger.asked == []


async def test_a_velocity_rule_without_a_ledger_is_an_error_not_a_silent_miss() -> None:
    policy = compile_policy(
        {
            "name": "v",
            "match": {"velocity": {"scope": "source", "window": "1h", "min": 1}},
            "action": "block",
        }
    )
    with pytest.raises(InternalError, match="velocity"):
        await policy.evaluate(facts())


async def test_message_facts_from_a_permit() -> None:
    typed = describe_typed_data(
        {
            "primaryType": "Permit",
            "domain": {"chainId": 5, "verifyingContract": TOKEN},
            "message": {"spender": BOB_ADDR, "value": 100},
        }
    )
    request = message_facts(
        customer_id="c1",
        initiator="alice",
        initiator_id="u-alice",
        source=SOURCE,
        message_kind="typed_data",
        typed=typed,
        now=NOW,
    )
    assert (request.chain_id, request.destination, request.asset, request.amount) == (
        5,
        BOB_ADDR,
        TOKEN,
        100,
    )
    policy = compile_policy(
        {
            "name": "small-permits",
            "match": {
                "method": ["permit"],
                "asset": [TOKEN],
                "amount": {"max": 100},
                "destination": {"allowlists": ["spenders"]},
            },
            "action": "allow",
        }
    )
    assert (await policy.evaluate(request)).verdict is Verdict.ALLOW
    assert (await policy.evaluate(replace(request, amount=101))).rule == DEFAULT_DENY


def test_facts_need_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone"):
        transaction_facts(
            customer_id="c",
            initiator="a",
            initiator_id="u",
            chain_id=1,
            source=SOURCE,
            to=None,
            value=0,
            now=datetime(2025, 1, 1),
        )
