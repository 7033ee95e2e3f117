"""The policy file: its format, its loader, and the checks that turn every typo into an error.

A customer's policy is written in YAML or TOML (one structure, two syntaxes) and checked here
once, when it is loaded: first its shape, by pydantic models that forbid unknown keys (a
misspelt key must never silently widen a rule), then what a shape check cannot see (unique rule
names, groups and allowlists that exist, reachable approval thresholds). Every problem is
collected and reported together in one `PolicyError`, each message naming the rule and the
field, e.g. `rules[2] "big-transfers": match.amount.max: must be a whole number …`.

The checked `PolicyDocument` is what the engine (`engine.py`) compiles; nothing here runs per
request. `PolicyDocument.as_dict()` is the JSON form stored beside the source text, and
`parse_policy` reads it back.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from txgate.core.errors import InvalidParams
from txgate.core.types import UINT256_MAX

NATIVE = "native"
# The method names a rule may use; anything else is written as a 4-byte selector.
METHOD_NAMES = frozenset(
    [
        "transfer",
        "transferFrom",
        "approve",
        "increaseAllowance",
        "setApprovalForAll",
        "safeTransferFrom",
        "safeBatchTransferFrom",
        "permit",
        "deploy",
        "none",
    ]
)
AMOUNT_HINT = 'must be a whole number of base units or "<number> ether|gwei|wei"'
_UNITS = {"wei": 0, "gwei": 9, "ether": 18}
_AMOUNT_RE = re.compile(r"(\d+(?:_\d+)*)(?:\.(\d+))?\s*([a-z]+)?")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_SELECTOR_RE = re.compile(r"0x[0-9a-fA-F]{8}")
_WINDOW_RE = re.compile(r"([1-9]\d*)([smhd])")
_WINDOW_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PolicyError(InvalidParams):
    """A policy that cannot be loaded; `errors` lists every problem, one message each."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        if len(self.errors) == 1:
            message = f"invalid policy: {self.errors[0]}"
        else:
            lines = "".join(f"\n  {error}" for error in self.errors)
            message = f"invalid policy ({len(self.errors)} errors):{lines}"
        super().__init__(message, param="policy", data={"errors": self.errors})


def _fail(message: str) -> NoReturn:
    # A custom error type keeps pydantic from prefixing "Value error, " to our message.
    raise PydanticCustomError("policy", message)


# The value parsers: each returns the normalised value or raises one readable error.
def _amount(value: object) -> int:
    if isinstance(value, bool):
        _fail(AMOUNT_HINT)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (found := _AMOUNT_RE.fullmatch(value.strip().lower())):
        whole, fraction, unit = found.groups()
        if unit is None and fraction is None:
            number = int(whole.replace("_", ""))
        elif unit not in _UNITS:
            _fail(AMOUNT_HINT)
        else:
            scaled = Decimal(f"{whole.replace('_', '')}.{fraction or 0}").scaleb(_UNITS[unit])
            if scaled != scaled.to_integral_value():
                _fail(f"{value!r} is not a whole number of wei")
            number = int(scaled)
    else:
        _fail(AMOUNT_HINT)
    if number < 0:
        _fail("must not be negative")
    if number > UINT256_MAX:
        _fail("must be at most 2**256 - 1")
    return number


def _usd(value: object) -> Decimal:
    # A YAML float is taken as written (its shortest repr), never as its binary approximation.
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        _fail('must be a decimal number of US dollars, e.g. "1000" or "0.5"')
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        _fail('must be a decimal number of US dollars, e.g. "1000" or "0.5"')
    if not number.is_finite() or number < 0:
        _fail("must be a finite, non-negative number of US dollars")
    return number


def _address(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        _fail("must be a quoted string (YAML reads an unquoted 0x… as a number)")
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        _fail("must be a 0x-prefixed address of 40 hex digits")
    return value.lower()


def _asset(value: object) -> str:
    if value == NATIVE:
        return NATIVE
    if isinstance(value, str) and not value.startswith("0x"):
        _fail('must be "native" or a token contract address')
    return _address(value)


def _method(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        _fail("must be a quoted string (YAML reads an unquoted 0x… as a number)")
    if isinstance(value, str) and value in METHOD_NAMES:
        return value
    if isinstance(value, str) and _SELECTOR_RE.fullmatch(value):
        return value.lower()
    _fail(
        f"must be a 4-byte selector (0x + 8 hex digits) or one of {', '.join(sorted(METHOD_NAMES))}"
    )


def _window(value: object) -> str:
    if not isinstance(value, str) or not _WINDOW_RE.fullmatch(value.strip()):
        _fail('must be a duration such as "30s", "15m", "24h" or "7d"')
    return value.strip()


def window_seconds(window: str) -> int:
    """The length of a checked window string ("24h") in seconds."""
    found = _WINDOW_RE.fullmatch(window)
    assert found is not None, window
    return int(found.group(1)) * _WINDOW_SECONDS[found.group(2)]


def _listed(value: object) -> object:
    # A single scalar where a list is expected means a list of one; it cannot widen anything.
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail("must be a non-empty string")
    return value


T = TypeVar("T")
# A non-empty list (a lone scalar counts as a list of one): a condition's alternatives.
OneOrMore = Annotated[list[T], BeforeValidator(_listed), Field(min_length=1)]
Amount = Annotated[int, BeforeValidator(_amount)]
Usd = Annotated[Decimal, BeforeValidator(_usd)]
AddressValue = Annotated[str, BeforeValidator(_address)]
AssetValue = Annotated[str, BeforeValidator(_asset)]
Name = Annotated[str, BeforeValidator(_name)]
Window = Annotated[str, BeforeValidator(_window)]
Names = OneOrMore[Name]
Addresses = OneOrMore[AddressValue]
Assets = OneOrMore[AssetValue]
Methods = OneOrMore[Annotated[str, BeforeValidator(_method)]]
Kinds = OneOrMore[Literal["transaction", "message"]]
MessageKinds = OneOrMore[Literal["personal_sign", "typed_data"]]
SecurityVerdicts = OneOrMore[Literal["Benign", "Warning", "Malicious", "Error"]]
Chains = OneOrMore[Annotated[int, Field(ge=1)]]
Action = Literal["allow", "block", "require_approval"]


# --- the document's shape ------------------------------------------------------------------


class _Model(BaseModel):
    # Strict: YAML's "yes" or "1" must not become a bool or an int behind the author's back.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InitiatorMatch(_Model):
    users: Names | None = None
    groups: Names | None = None

    @model_validator(mode="after")
    def _some(self) -> InitiatorMatch:
        if self.users is None and self.groups is None:
            _fail("give users, groups or both")
        return self


class DestinationMatch(_Model):
    addresses: Addresses | None = None
    allowlists: Names | None = None
    any: bool = False
    type: Literal["contract", "eoa"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DestinationMatch:
        listed = self.addresses is not None or self.allowlists is not None
        if self.any and listed:
            _fail("any: true matches every destination; drop it or drop addresses/allowlists")
        if not (listed or self.any or self.type):
            _fail("give addresses, allowlists, any: true or type")
        return self


class AmountRange(_Model):
    min: Amount | None = None
    max: Amount | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AmountRange:
        _check_range(self.min, self.max, "min", "max")
        return self


class FiatRange(_Model):
    min_usd: Usd | None = None
    max_usd: Usd | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FiatRange:
        _check_range(self.min_usd, self.max_usd, "min_usd", "max_usd")
        return self


class MessageMatch(_Model):
    kind: MessageKinds | None = None
    primary_type: Names | None = None


class VelocityMatch(_Model):
    scope: Literal["initiator", "source", "destination"]
    window: Window
    min: Amount | None = None
    max: Amount | None = None

    @model_validator(mode="after")
    def _ordered(self) -> VelocityMatch:
        _check_range(self.min, self.max, "min", "max")
        return self


class Match(_Model):
    """What a rule applies to: every key present must match (AND); a list means any of (OR)."""

    kind: Kinds | None = None
    initiator: InitiatorMatch | None = None
    source: Addresses | None = None
    destination: DestinationMatch | None = None
    asset: Assets | None = None
    amount: AmountRange | None = None
    value: AmountRange | None = None
    fiat: FiatRange | None = None
    method: Methods | None = None
    chain: Chains | None = None
    message: MessageMatch | None = None
    verdict: SecurityVerdicts | None = None
    velocity: VelocityMatch | None = None


class ApproverEntry(_Model):
    """One quorum group: a named group of the policy, or users listed inline."""

    group: Name | None = None
    users: Names | None = None
    threshold: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _one_source(self) -> ApproverEntry:
        if (self.group is None) == (self.users is None):
            _fail("give exactly one of group or users")
        return self

    @property
    def label(self) -> str:
        return self.group if self.group is not None else "users " + ", ".join(self.users or ())


class GovernanceApprovals(_Model):
    groups: Annotated[list[ApproverEntry], Field(min_length=1)]
    mode: Literal["all", "any"] = "all"
    initiator_may_approve: bool = False


class RuleApprovals(GovernanceApprovals):
    extra_on_warning: Annotated[int, Field(ge=0)] = 0


class Governance(_Model):
    """Who must approve a new version of the policy before it takes effect (four eyes)."""

    approvals: GovernanceApprovals


class Rule(_Model):
    name: Name
    description: str | None = None
    match: Match = Match()
    action: Action
    approvals: RuleApprovals | None = None
    reason: str | None = None


class Price(_Model):
    """A fixed fiat price: `usd` dollars per whole unit of an asset with `decimals` decimals."""

    usd: Usd
    decimals: Annotated[int, Field(ge=0, le=77)]


class PolicyDocument(_Model):
    """A checked policy. Addresses are lower-case, amounts ints in base units."""

    version: Literal[1]
    groups: dict[Name, list[Name]] = {}
    allowlists: dict[Name, list[AddressValue]] = {}
    prices: dict[AssetValue, Price] = {}
    governance: Governance | None = None
    rules: list[Rule]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (decimals as strings); `parse_policy` reads it back unchanged."""
        return self.model_dump(mode="json", exclude_none=True)


def _check_range(low: Any, high: Any, low_name: str, high_name: str) -> None:
    if low is None and high is None:
        _fail(f"give {low_name}, {high_name} or both")
    if low is not None and high is not None and low > high:
        _fail(f"{low_name} ({low}) is greater than {high_name} ({high})")


# --- loading -------------------------------------------------------------------------------


def load_policy(text: str, *, format: Literal["yaml", "toml"]) -> PolicyDocument:
    """Parse and check a policy written in YAML or TOML; raises `PolicyError` listing all errors."""
    if format == "yaml":
        try:
            data = yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise PolicyError([f"YAML {where}{error.problem}"]) from None
        except yaml.YAMLError as error:
            raise PolicyError([f"YAML: {error}"]) from None
    elif format == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise PolicyError([f"TOML: {error}"]) from None
    else:
        raise PolicyError([f"unknown policy format {format!r}: use yaml or toml"])
    return parse_policy(data)


def load_policy_file(path: str | os.PathLike[str]) -> PolicyDocument:
    """Load a `.yaml`, `.yml` or `.toml` policy file."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in {".yaml", ".yml", ".toml"}:
        raise PolicyError([f"{file.name}: a policy file ends in .yaml, .yml or .toml"])
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise PolicyError([f"{file}: cannot read: {reason}"]) from None
    return load_policy(text, format="toml" if suffix == ".toml" else "yaml")


def parse_policy(data: object) -> PolicyDocument:
    """Check plain data (parsed YAML/TOML, or the stored JSON form) and build the document."""
    if not isinstance(data, Mapping):
        raise PolicyError(["policy: must be a mapping with version, groups, … and rules"])
    errors: list[str] = []
    header: PolicyDocument | None = None
    raw_rules = data.get("rules")
    try:
        # Each rule is checked on its own (below), so one broken rule hides no other's errors.
        header = PolicyDocument.model_validate(
            {**data, "rules": []} if isinstance(raw_rules, list) else dict(data)
        )
    except ValidationError as error:
        errors.extend(_translate(error, prefix=""))
    # References are checked on the raw data, so a rule whose shape is broken still gets them.
    groups, allowlists = _names(data)
    rules: list[Rule] = []
    first: dict[object, str] = {}
    for index, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        name = raw.get("name") if isinstance(raw, Mapping) else None
        label = f'rules[{index}] "{name}"' if isinstance(name, str) else f"rules[{index}]"
        try:
            rules.append(Rule.model_validate(raw))
        except ValidationError as error:
            errors.extend(_translate(error, prefix=label))
        if isinstance(name, str) and name in first:
            errors.append(f"{label}: name: duplicates {first[name]}")
        first.setdefault(name, label)
        if isinstance(raw, Mapping):
            errors.extend(f"{label}: {e}" for e in _references(raw, groups, allowlists))
    governance = _at(data, "governance", "approvals")
    if isinstance(governance, Mapping):
        errors.extend(_approval_references(governance, "governance.approvals", groups))
    if errors or header is None:
        raise PolicyError(errors)
    return header.model_copy(update={"rules": rules})


def _at(data: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _items(value: object) -> list[object]:
    return [value] if isinstance(value, str) else value if isinstance(value, list) else []


def _names(data: Mapping[str, Any]) -> tuple[dict[str, int], set[str]]:
    """Each group's number of distinct members, and the allowlist names."""
    raw_groups, raw_lists = data.get("groups"), data.get("allowlists")
    groups = {
        str(k): len({str(m) for m in v}) if isinstance(v, list) else 0
        for k, v in (raw_groups.items() if isinstance(raw_groups, Mapping) else ())
    }
    return groups, {str(k) for k in (raw_lists if isinstance(raw_lists, Mapping) else ())}


def _references(rule: Mapping[str, Any], groups: dict[str, int], allowlists: set[str]) -> list[str]:
    errors: list[str] = []
    for i, group in enumerate(_items(_at(rule, "match", "initiator", "groups"))):
        if isinstance(group, str) and group not in groups:
            errors.append(f"match.initiator.groups[{i}]: {_unknown('group', group, groups)}")
    for i, name in enumerate(_items(_at(rule, "match", "destination", "allowlists"))):
        if isinstance(name, str) and name not in allowlists:
            errors.append(
                f"match.destination.allowlists[{i}]: {_unknown('allowlist', name, allowlists)}"
            )
    action, approvals = rule.get("action"), rule.get("approvals")
    if action == "require_approval" and approvals is None:
        errors.append("approvals: required when action is require_approval")
    if action in ("allow", "block") and approvals is not None:
        errors.append("approvals: only allowed when action is require_approval")
    if isinstance(approvals, Mapping):
        errors.extend(_approval_references(approvals, "approvals", groups))
    return errors


def _approval_references(
    approvals: Mapping[str, Any], where: str, groups: dict[str, int]
) -> list[str]:
    errors: list[str] = []
    entries = approvals.get("groups")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        group, users, threshold = _at(entry, "group"), _at(entry, "users"), _at(entry, "threshold")
        if isinstance(group, str) and group not in groups:
            errors.append(f"{where}.groups[{i}].group: {_unknown('group', group, groups)}")
            continue
        if isinstance(group, str) and users is None:
            voters, label = groups[group], f'group "{group}"'
        elif group is None and isinstance(users, list | str):
            names = {str(user) for user in _items(users)}
            voters, label = len(names), "users " + ", ".join(sorted(names))
        else:
            continue  # the shape check already reports the entry
        if isinstance(threshold, int) and not isinstance(threshold, bool) and threshold > voters:
            errors.append(
                f"{where}.groups[{i}].threshold: {threshold} is more than the {voters} "
                f"possible approver(s) of {label}"
            )
    return errors


def _unknown(kind: str, name: str, known: Mapping[str, Any] | set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'no {kind} named "{name}" in the policy{hint}'


# --- pydantic's errors, translated once into the policy's own messages ---------------------

_KNOWN_KEYS = sorted(
    {
        key
        for model in (
            *(
                PolicyDocument,
                Rule,
                Match,
                InitiatorMatch,
                DestinationMatch,
                AmountRange,
                FiatRange,
            ),
            *(MessageMatch, VelocityMatch, ApproverEntry, RuleApprovals, Governance, Price),
        )
        for key in model.model_fields
    }
)
_PLAIN = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "too_short": "must not be empty (leave the key out to match anything)",
}


def _translate(error: ValidationError, *, prefix: str) -> list[str]:
    return [
        f"{': '.join(part for part in (prefix, _path(detail['loc'])) if part) or 'policy'}: "
        f"{_message(detail)}"
        for detail in error.errors(include_url=False)
    ]


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (key)"
        else:
            text += f".{part}" if text else part
    return text


def _message(detail: Any) -> str:
    kind, ctx = detail["type"], detail.get("ctx") or {}
    if kind == "policy":
        return str(detail["msg"])
    if kind == "extra_forbidden":
        key = str(detail["loc"][-1]) if detail["loc"] else ""
        if key in _KNOWN_KEYS:
            return "not allowed here"
        close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1)
        return f'unknown key; did you mean "{close[0]}"?' if close else "unknown key"
    if kind == "literal_error":
        return f"must be {ctx.get('expected')}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}"
    if kind in _PLAIN:
        return _PLAIN[kind]
    text = str(detail["msg"])
    return text[:1].lower() + text[1:]


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a repeated key is an error: by default the last one
    wins, which would let a pasted duplicate silently replace a rule's field."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping reports it properly
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictYamlLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)
