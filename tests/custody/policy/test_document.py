"""The policy file: YAML and TOML read the same; every error names its rule and field; all are
reported together; unknown keys are refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from txgate.core.errors import InvalidParams
from txgate.custody.policy.document import (
    PolicyDocument,
    PolicyError,
    load_policy,
    load_policy_file,
    parse_policy,
    window_seconds,
)

SPENDER = "0x1111111111111111111111111111111111111111"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"

YAML = f"""
version: 1
groups:
  traders: [alice]
  approvers: [bob, carol]
  admins: [admin]
allowlists:
  known-spenders: ["{SPENDER}"]
prices:
  native: {{usd: "3000", decimals: 18}}
  "{USDC}": {{usd: "1", decimals: 6}}
governance:
  approvals: {{groups: [{{group: admins, threshold: 1}}], mode: all}}
rules:
  - name: small-trader-transfers
    description: traders move small amounts to known spenders
    match:
      kind: [transaction, message]
      initiator: {{users: [alice], groups: [traders]}}
      destination: {{allowlists: [known-spenders], type: eoa}}
      asset: [native, "{USDC}"]
      amount: {{min: 0, max: "1.5 ether"}}
      value: {{max: "1000 gwei"}}
      fiat: {{max_usd: "5000.50"}}
      method: [transfer, none, "0xA9059CBB"]
      chain: [1, 31337]
      verdict: [Benign]
      velocity: {{scope: initiator, window: 24h, max: "10 ether"}}
    action: allow
  - name: permits
    match:
      message: {{kind: [typed_data], primary_type: [Permit, PermitSingle]}}
    action: require_approval
    approvals:
      groups: [{{group: approvers, threshold: 2}}, {{users: [dana], threshold: 1}}]
      mode: any
      initiator_may_approve: true
      extra_on_warning: 1
    reason: permits need two approvers
  - name: everything-else
    action: block
"""

TOML = f"""
version = 1

[groups]
traders = ["alice"]
approvers = ["bob", "carol"]
admins = ["admin"]

[allowlists]
known-spenders = ["{SPENDER}"]

[prices]
native = {{ usd = "3000", decimals = 18 }}
"{USDC}" = {{ usd = "1", decimals = 6 }}

[governance.approvals]
groups = [{{ group = "admins", threshold = 1 }}]
mode = "all"

[[rules]]
name = "small-trader-transfers"
description = "traders move small amounts to known spenders"
action = "allow"
[rules.match]
kind = ["transaction", "message"]
initiator = {{ users = ["alice"], groups = ["traders"] }}
destination = {{ allowlists = ["known-spenders"], type = "eoa" }}
asset = ["native", "{USDC}"]
amount = {{ min = 0, max = "1.5 ether" }}
value = {{ max = "1000 gwei" }}
fiat = {{ max_usd = "5000.50" }}
method = ["transfer", "none", "0xA9059CBB"]
chain = [1, 31337]
verdict = ["Benign"]
velocity = {{ scope = "initiator", window = "24h", max = "10 ether" }}

[[rules]]
name = "permits"
action = "require_approval"
reason = "permits need two approvers"
match = {{ message = {{ kind = ["typed_data"], primary_type = ["Permit", "PermitSingle"] }} }}
[rules.approvals]
groups = [{{ group = "approvers", threshold = 2 }}, {{ users = ["dana"], threshold = 1 }}]
mode = "any"
initiator_may_approve = true
extra_on_warning = 1

[[rules]]
name = "everything-else"
action = "block"
"""


def base(**rule: Any) -> dict[str, Any]:
    """A minimal valid policy with one rule (fields overridable)."""
    return {
        "version": 1,
        "groups": {"approvers": ["bob", "carol"]},
        "allowlists": {"spenders": [SPENDER]},
        "rules": [{"name": "r", "action": "allow", **rule}],
    }


def errors_of(data: Any) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    return caught.value.errors


def test_yaml_and_toml_give_the_same_document() -> None:
    from_yaml = load_policy(YAML, format="yaml")
    from_toml = load_policy(TOML, format="toml")
    assert from_yaml == from_toml
    rule = from_yaml.rules[0]
    assert rule.match.amount is not None and rule.match.amount.max == 15 * 10**17
    assert rule.match.value is not None and rule.match.value.max == 1000 * 10**9
    assert rule.match.fiat is not None and rule.match.fiat.max_usd == Decimal("5000.50")
    assert rule.match.method == ["transfer", "none", "0xa9059cbb"]
    assert rule.match.asset == ["native", USDC.lower()]
    assert USDC.lower() in from_yaml.prices
    assert rule.match.velocity is not None and window_seconds(rule.match.velocity.window) == 86400


def test_the_stored_json_form_reads_back_unchanged() -> None:
    document = load_policy(YAML, format="yaml")
    assert parse_policy(document.as_dict()) == document


def test_files_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(YAML)
    (tmp_path / "p.toml").write_text(TOML)
    assert load_policy_file(tmp_path / "p.yml") == load_policy_file(tmp_path / "p.toml")
    with pytest.raises(PolicyError, match=r"\.yaml, \.yml or \.toml"):
        load_policy_file(tmp_path / "p.json")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy_file(tmp_path / "missing.yaml")


def test_an_empty_rule_list_is_allowed() -> None:
    assert parse_policy({"version": 1, "rules": []}).rules == []


def test_policy_error_is_invalid_params_and_lists_every_error() -> None:
    data = base(match={"amount": {"max": 1.5}, "chain": [0]}, actoin="block")
    with pytest.raises(InvalidParams) as caught:
        parse_policy(data)
    error = caught.value
    assert isinstance(error, PolicyError)
    assert error.errors == [
        'rules[0] "r": match.amount.max: must be a whole number of base units or '
        '"<number> ether|gwei|wei"',
        'rules[0] "r": match.chain[0]: must be at least 1',
        'rules[0] "r": actoin: unknown key; did you mean "action"?',
    ]
    assert error.data == {"errors": error.errors}
    assert "3 errors" in error.message


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"match": {"ammount": {"max": 1}}}, 'match.ammount: unknown key; did you mean "amount"?'),
        ({"match": {"amount": {"max": "1 eth"}}}, "match.amount.max: must be a whole number"),
        ({"match": {"amount": {"max": "1.5"}}}, "match.amount.max: must be a whole number"),
        ({"match": {"amount": {"max": True}}}, "match.amount.max: must be a whole number"),
        ({"match": {"amount": {"max": -1}}}, "match.amount.max: must not be negative"),
        ({"match": {"amount": {"max": 2**256}}}, "match.amount.max: must be at most 2**256 - 1"),
        ({"match": {"amount": {"max": "0.1 wei"}}}, "match.amount.max: '0.1 wei' is not a whole"),
        ({"match": {"amount": {"min": 5, "max": 3}}}, "match.amount: min (5) is greater than max"),
        ({"match": {"amount": {}}}, "match.amount: give min, max or both"),
        ({"match": {"value": {"min": "2 gwei", "max": "1 gwei"}}}, "match.value: min (2000000000)"),
        ({"match": {"fiat": {"max_usd": "lots"}}}, "match.fiat.max_usd: must be a decimal number"),
        ({"match": {"fiat": {"min_usd": 5, "max_usd": 1}}}, "match.fiat: min_usd (5) is greater"),
        ({"match": {"source": ["0x12"]}}, "match.source[0]: must be a 0x-prefixed address"),
        ({"match": {"source": [0x12]}}, "match.source[0]: must be a quoted string"),
        ({"match": {"source": []}}, "match.source: must not be empty"),
        ({"match": {"asset": ["eth"]}}, 'match.asset[0]: must be "native" or a token'),
        ({"match": {"method": ["transfr"]}}, "match.method[0]: must be a 4-byte selector"),
        ({"match": {"method": ["0xa9059c"]}}, "match.method[0]: must be a 4-byte selector"),
        ({"match": {"kind": ["tx"]}}, "match.kind[0]: must be 'transaction' or 'message'"),
        ({"match": {"chain": ["1"]}}, "match.chain[0]: must be a whole number"),
        ({"match": {"verdict": ["benign"]}}, "match.verdict[0]: must be 'Benign'"),
        ({"match": {"message": {"kind": ["eth_sign"]}}}, "match.message.kind[0]: must be"),
        ({"match": {"initiator": {}}}, "match.initiator: give users, groups or both"),
        ({"match": {"initiator": {"groups": ["aprovers"]}}}, 'did you mean "approvers"?'),
        ({"match": {"destination": {}}}, "match.destination: give addresses, allowlists"),
        (
            {"match": {"destination": {"any": True, "addresses": [SPENDER]}}},
            "match.destination: any: true matches every destination",
        ),
        ({"match": {"destination": {"type": "wallet"}}}, "match.destination.type: must be"),
        ({"match": {"destination": {"allowlists": ["nope"]}}}, 'no allowlist named "nope"'),
        ({"match": {"velocity": {"scope": "initiator", "window": "1w", "max": 1}}}, "window:"),
        ({"match": {"velocity": {"scope": "team", "window": "1h", "max": 1}}}, "scope: must be"),
        ({"match": {"velocity": {"scope": "source", "window": "1h"}}}, "give min, max or both"),
        ({"match": {"velocity": {"window": "1h", "max": 1}}}, "match.velocity.scope: is required"),
        ({"match": "everything"}, "match: must be a mapping"),
        ({"action": "deny"}, "action: must be 'allow', 'block' or 'require_approval'"),
        ({"action": "require_approval"}, "approvals: required when action is require_approval"),
        (
            {"approvals": {"groups": [{"group": "approvers", "threshold": 1}]}},
            "approvals: only allowed when action is require_approval",
        ),
        ({"name": ""}, "name: must be a non-empty string"),
        ({"description": 5}, "description: must be a string"),
    ],
)
def test_each_error_names_its_rule_and_field(rule: dict[str, Any], expected: str) -> None:
    data = base(**rule)
    name = rule.get("name", "r")
    errors = errors_of(data)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f'rules[0] "{name}": '), errors
    assert expected in errors[0], errors


@pytest.mark.parametrize(
    ("approvals", "expected"),
    [
        ({"groups": []}, "approvals.groups: must not be empty"),
        ({"groups": [{"group": "approvers", "threshold": 0}]}, "threshold: must be at least 1"),
        (
            {"groups": [{"group": "approvers", "threshold": 3}]},
            'approvals.groups[0].threshold: 3 is more than the 2 possible approver(s) of group "approvers"',
        ),
        (
            {"groups": [{"users": ["dana", "dana"], "threshold": 2}]},
            "approvals.groups[0].threshold: 2 is more than the 1 possible approver(s) of users dana",
        ),
        ({"groups": [{"group": "admins", "threshold": 1}]}, 'no group named "admins"'),
        ({"groups": [{"threshold": 1}]}, "approvals.groups[0]: give exactly one of group or users"),
        ({"groups": [{"group": "approvers"}]}, "approvals.groups[0].threshold: is required"),
        ({"groups": [{"group": "approvers", "threshold": 1}], "mode": "most"}, "mode: must be"),
        (
            {"groups": [{"group": "approvers", "threshold": 1}], "extra_on_warning": -1},
            "extra_on_warning: must be at least 0",
        ),
        (
            {"groups": [{"group": "approvers", "threshold": 1}], "initiator_may_approve": "no"},
            "initiator_may_approve: must be true or false",
        ),
    ],
)
def test_approval_errors(approvals: dict[str, Any], expected: str) -> None:
    errors = errors_of(base(action="require_approval", approvals=approvals))
    assert len(errors) == 1, errors
    assert errors[0].startswith('rules[0] "r": '), errors
    assert expected in errors[0], errors


def test_top_level_errors() -> None:
    assert errors_of({"version": 2, "rules": []}) == ["version: must be 1"]
    assert errors_of({"rules": []}) == ["version: is required"]
    assert errors_of({"version": 1}) == ["rules: is required"]
    assert errors_of({"version": 1, "rules": [], "rule": []}) == [
        'rule: unknown key; did you mean "rules"?'
    ]
    assert errors_of({"version": 1, "rules": [], "allowlists": {"a": ["0x1"]}}) == [
        "allowlists.a[0]: must be a 0x-prefixed address of 40 hex digits"
    ]
    assert errors_of({"version": 1, "rules": [], "prices": {"eth": {"usd": 1, "decimals": 18}}})[
        0
    ].startswith("prices.eth (key): must be")
    assert errors_of({"version": 1, "rules": [], "groups": {"g": "alice"}}) == [
        "groups.g: must be a list"
    ]
    assert errors_of(
        {
            "version": 1,
            "rules": [],
            "groups": {"admins": ["a"]},
            "governance": {"approvals": {"groups": [{"group": "admins", "threshold": 2}]}},
        }
    ) == [
        'governance.approvals.groups[0].threshold: 2 is more than the 1 possible approver(s) of group "admins"'
    ]
    assert errors_of(
        {
            "version": 1,
            "rules": [],
            "governance": {
                "approvals": {"groups": [{"users": ["a"], "threshold": 1}], "extra_on_warning": 1}
            },
        }
    ) == ["governance.approvals.extra_on_warning: not allowed here"]
    assert errors_of([]) == ["policy: must be a mapping with version, groups, … and rules"]
    assert errors_of({"version": 1, "rules": ["allow"]}) == ["rules[0]: must be a mapping"]


def test_errors_of_every_rule_are_reported_together_even_when_the_header_is_broken() -> None:
    data = {
        "version": "1",
        "groups": {"ops": ["a"]},
        "rules": [
            {"name": "a", "action": "allow", "match": {"amount": {"max": "x"}}},
            {"name": "a", "action": "block", "match": {"initiator": {"groups": ["opz"]}}},
            {"action": "allow"},
        ],
    }
    assert errors_of(data) == [
        "version: must be 1",
        'rules[0] "a": match.amount.max: must be a whole number of base units or '
        '"<number> ether|gwei|wei"',
        'rules[1] "a": name: duplicates rules[0] "a"',
        'rules[1] "a": match.initiator.groups[0]: no group named "opz" in the policy; '
        'did you mean "ops"?',
        "rules[2]: name: is required",
    ]


def test_amount_spellings() -> None:
    cases = {
        123: 123,
        "123": 123,
        "1_000": 1000,
        "1 ether": 10**18,
        "1.5 ether": 15 * 10**17,
        "2 gwei": 2 * 10**9,
        "7 wei": 7,
        " 3 ETHER ": 3 * 10**18,
        str(2**256 - 1): 2**256 - 1,
    }
    for written, expected in cases.items():
        document = parse_policy(base(match={"amount": {"max": written}}))
        assert document.rules[0].match.amount is not None
        assert document.rules[0].match.amount.max == expected, written


def test_scalars_stand_for_lists_of_one() -> None:
    document = parse_policy(base(match={"kind": "message", "chain": 1, "source": SPENDER}))
    match = document.rules[0].match
    assert (match.kind, match.chain, match.source) == (["message"], [1], [SPENDER])


def test_windows() -> None:
    assert [window_seconds(w) for w in ("30s", "15m", "24h", "7d")] == [30, 900, 86400, 604800]
    for bad in ("0h", "1 h", "h", "1w", "1.5h"):
        errors = errors_of(base(match={"velocity": {"scope": "source", "window": bad, "max": 1}}))
        assert errors == [
            'rules[0] "r": match.velocity.window: must be a duration such as "30s", "15m", "24h" or "7d"'
        ]


def test_yaml_duplicate_keys_and_syntax_errors_are_reported_with_their_line() -> None:
    text = "version: 1\nrules:\n  - name: a\n    action: allow\n    action: block\n"
    with pytest.raises(PolicyError, match=r"line 5, column 5: duplicate key 'action'"):
        load_policy(text, format="yaml")
    with pytest.raises(PolicyError, match=r"YAML line \d+, column \d+"):
        load_policy("version: [1\n", format="yaml")
    with pytest.raises(PolicyError, match="TOML"):
        load_policy("version = \n", format="toml")
    with pytest.raises(PolicyError, match="policy: must be a mapping"):
        load_policy("", format="yaml")


def test_document_is_frozen() -> None:
    document = parse_policy(base())
    assert isinstance(document, PolicyDocument)
    with pytest.raises(ValueError, match="frozen"):
        document.version = 2  # type: ignore[assignment]
