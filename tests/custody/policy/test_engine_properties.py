"""Properties of the engine over random policies and random requests.

A naive reference matcher, written here from the policy format's description and reading the
raw rule dicts (not the checked document), says which rules match; the engine must pick the
first of them, and therefore never allow a request that no allow rule matches. Evaluating twice,
or after shuffling every list inside the rules, gives the same decision.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from txgate.custody.policy.document import parse_policy
from txgate.custody.policy.engine import DEFAULT_DENY, CompiledPolicy
from txgate.custody.policy.facts import RequestFacts
from txgate.custody.policy.hook import Verdict

NOW = datetime(2025, 6, 1, tzinfo=UTC)
USERS = ["alice", "bob", "carol", "dave"]
GROUPS = {"g1": ["alice", "bob"], "g2": ["carol"], "g3": ["dave", "alice"]}
ADDRS = [f"0x{digit * 40}" for digit in "abcd"]
ALLOWLISTS = {"l1": [ADDRS[0]], "l2": [ADDRS[1], ADDRS[2]]}
T1, T2 = "0x" + "1" * 40, "0x" + "2" * 40
ASSETS = ["native", T1, T2]
PRICES: dict[str, dict[str, Any]] = {
    "native": {"usd": "1.5", "decimals": 1},
    T1: {"usd": "2", "decimals": 0},
}  # T2: no price
METHODS = ["transfer", "approve", "deploy", "permit", "none", "0xa9059cbb", "0xdeadbeef"]
VERDICTS = ["Benign", "Warning", "Malicious", "Error"]
USD = ["0", "0.15", "1", "1.5", "3", "7.5", "20"]


def some(pool: list[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)


def ordered(
    values: st.SearchStrategy[Any], low: str, high: str
) -> st.SearchStrategy[dict[str, Any]]:
    """A {low, high} range with either side optional but not both absent, low <= high."""

    def build(pair: list[Any], keep: str) -> dict[str, Any]:
        a, b = sorted(pair, key=Decimal)
        return {k: v for k, v in ((low, a), (high, b)) if keep in (k, "both")}

    return st.builds(
        build, st.lists(values, min_size=2, max_size=2), st.sampled_from([low, high, "both"])
    )


amounts = st.integers(0, 25)
destination = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "addresses": some(ADDRS),
            "allowlists": some(list(ALLOWLISTS)),
            "type": st.sampled_from(["contract", "eoa"]),
        },
    ).filter(bool),
    st.fixed_dictionaries(
        {"any": st.just(True)}, optional={"type": st.sampled_from(["contract", "eoa"])}
    ),
)
match = st.fixed_dictionaries(
    {},
    optional={
        "kind": some(["transaction", "message"]),
        "initiator": st.fixed_dictionaries(
            {}, optional={"users": some(USERS), "groups": some(list(GROUPS))}
        ).filter(bool),
        "source": some(ADDRS),
        "destination": destination,
        "asset": some(ASSETS),
        "amount": ordered(amounts, "min", "max"),
        "value": ordered(amounts, "min", "max"),
        "fiat": ordered(st.sampled_from(USD), "min_usd", "max_usd"),
        "method": some(METHODS),
        "chain": some([1, 5]),
        "message": st.fixed_dictionaries(
            {},
            optional={
                "kind": some(["personal_sign", "typed_data"]),
                "primary_type": some(["Permit", "Mail"]),
            },
        ),
        "verdict": some(VERDICTS),
        "velocity": st.builds(
            lambda scope, bounds: {"scope": scope, "window": "1h", **bounds},
            st.sampled_from(["initiator", "source", "destination"]),
            ordered(st.integers(0, 60), "min", "max"),
        ),
    },
)
rule = st.builds(
    lambda m, action: {
        "match": m,
        "action": action,
        **(
            {"approvals": {"groups": [{"group": "g1", "threshold": 1}]}}
            if action == "require_approval"
            else {}
        ),
    },
    match,
    st.sampled_from(["allow", "block", "require_approval"]),
)
rules = st.lists(rule, max_size=8).map(
    lambda found: [{"name": f"r{i}", **r} for i, r in enumerate(found)]
)
request = st.builds(
    lambda initiator, **fields: RequestFacts(
        customer_id="c",
        initiator=initiator,
        initiator_id=f"id-{initiator}",
        verdict_reasons=(),
        now=NOW,
        **fields,
    ),
    initiator=st.sampled_from([*USERS, "zed"]),
    kind=st.sampled_from(["transaction", "message"]),
    chain_id=st.sampled_from([1, 5, None]),
    source=st.sampled_from(ADDRS),
    to=st.sampled_from([*ADDRS, None]),
    destination=st.sampled_from([*ADDRS, None]),
    destination_is_contract=st.sampled_from([True, False, None]),
    asset=st.sampled_from([*ASSETS, None]),
    amount=amounts,
    value=amounts,
    method=st.sampled_from(["transfer", "approve", "deploy", "permit", None]),
    selector=st.sampled_from(["0xa9059cbb", "0xdeadbeef", None]),
    message_kind=st.sampled_from(["personal_sign", "typed_data", None]),
    primary_type=st.sampled_from(["Permit", "Mail", None]),
    verdict=st.sampled_from([*VERDICTS, None]),
)


def document(rule_list: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "groups": GROUPS,
        "allowlists": ALLOWLISTS,
        "prices": PRICES,
        "rules": rule_list,
    }


class Ledger:
    def __init__(self, history: int) -> None:
        self.history = history

    async def total(self, *, scope: str, key: str, asset: str, since: datetime) -> int:
        return self.history


# --- the reference: one plain function, no precomputation --------------------------------


def reference_matches(rule: dict[str, Any], f: RequestFacts, history: int) -> bool:
    m = rule["match"]

    def within(number: int | Fraction, bounds: dict[str, Any], low: str, high: str) -> bool:
        return (low not in bounds or Fraction(bounds[low]) <= number) and (
            high not in bounds or number <= Fraction(bounds[high])
        )

    checks: list[bool] = []
    if "kind" in m:
        checks.append(f.kind in m["kind"])
    if "initiator" in m:
        names = list(m["initiator"].get("users", []))
        for group in m["initiator"].get("groups", []):
            names += GROUPS[group]
        checks.append(f.initiator in names)
    if "source" in m:
        checks.append(f.source in [a.lower() for a in m["source"]])
    if "destination" in m:
        d = m["destination"]
        if "addresses" in d or "allowlists" in d:
            listed = [a.lower() for a in d.get("addresses", [])]
            for name in d.get("allowlists", []):
                listed += ALLOWLISTS[name]
            checks.append(f.destination in listed)
        if "type" in d:
            checks.append(
                f.destination_is_contract is not None
                and f.destination_is_contract == (d["type"] == "contract")
            )
    if "asset" in m:
        checks.append(f.asset in m["asset"])
    if "amount" in m:
        checks.append(within(f.amount, m["amount"], "min", "max"))
    if "value" in m:
        checks.append(within(f.value, m["value"], "min", "max"))
    if "fiat" in m:
        price = PRICES.get(f.asset) if f.asset is not None else None
        if price is None:
            checks.append(False)
        else:
            usd = Fraction(f.amount) * Fraction(price["usd"]) / 10 ** price["decimals"]
            checks.append(within(usd, m["fiat"], "min_usd", "max_usd"))
    if "method" in m:
        checks.append(
            any(
                x == f.method
                or x == f.selector
                or (
                    x == "none"
                    and f.kind == "transaction"
                    and f.method is None
                    and f.selector is None
                )
                for x in m["method"]
            )
        )
    if "chain" in m:
        checks.append(f.chain_id in m["chain"])
    if "message" in m:
        msg = m["message"]
        checks.append(
            f.kind == "message"
            and ("kind" not in msg or f.message_kind in msg["kind"])
            and ("primary_type" not in msg or f.primary_type in msg["primary_type"])
        )
    if "verdict" in m:
        checks.append(f.verdict in m["verdict"])
    if "velocity" in m:
        v = m["velocity"]
        key = {"initiator": f.initiator_id, "source": f.source, "destination": f.destination}[
            v["scope"]
        ]
        checks.append(
            key is not None and f.asset is not None and within(history + f.amount, v, "min", "max")
        )
    return all(checks)


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        return {k: shuffled(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        items = [shuffled(v, rng) for v in value]
        rng.shuffle(items)
        return items
    return value


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(rule_list=rules, facts=request, history=st.integers(0, 40))
async def test_the_engine_decides_as_the_reference_does(
    rule_list: list[dict[str, Any]], facts: RequestFacts, history: int
) -> None:
    policy = CompiledPolicy.compile(parse_policy(document(rule_list)))
    decision = await policy.evaluate(facts, velocity=Ledger(history))
    matching = [r for r in rule_list if reference_matches(r, facts, history)]
    if decision.verdict is Verdict.ALLOW:
        # The safety property, stated on its own: never allow what no allow rule allows.
        assert any(r["action"] == "allow" for r in matching)
    if matching:
        assert (decision.rule, decision.verdict.value) == (
            matching[0]["name"],
            matching[0]["action"],
        )
    else:
        assert (decision.rule, decision.verdict) == (DEFAULT_DENY, Verdict.BLOCK)


@FAST
@given(rule_list=rules, facts=request, history=st.integers(0, 40), rng=st.randoms())
async def test_evaluation_is_deterministic_and_ignores_list_order(
    rule_list: list[dict[str, Any]], facts: RequestFacts, history: int, rng: random.Random
) -> None:
    data = document(rule_list)
    policy = CompiledPolicy.compile(parse_policy(data))
    first = await policy.evaluate(facts, velocity=Ledger(history))
    assert await policy.evaluate(facts, velocity=Ledger(history)) == first
    # Lists inside rules are sets of alternatives; the rule list itself stays in order.
    reordered = {**data, "rules": [{**r, "match": shuffled(r["match"], rng)} for r in rule_list]}
    again = CompiledPolicy.compile(parse_policy(reordered))
    assert await again.evaluate(facts, velocity=Ledger(history)) == first
