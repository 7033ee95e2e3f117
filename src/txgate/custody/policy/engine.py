"""The policy engine: a checked policy compiled into ordered rules, evaluated per request.

Evaluation is the Fireblocks TAP model: rules are tried in the order written, the first whose
every condition matches decides (allow, block, or require approvals), and a request no rule
matches is blocked (default deny). `CompiledPolicy.compile` does all the work that does not
depend on the request once, in two forms:

- conditions that say "this field is one of these values" (kind, chain, initiator, source,
  asset, destination address and type, verdict, message kind and type) or "this number is in
  [min, max]" (amount, value) go into an index: per field, the bitmask of the rules that
  accept the request's value (a dict lookup, or a bisection over the rules' bounds) ORed with
  the mask of rules that do not constrain the field. ANDing one mask per field gives, in a few
  big-integer operations, exactly the rules whose indexed conditions all hold, in rule order
  (bit i is rule i);
- the rest (method, fiat value) become small closures over ints and frozensets, checked in a
  fixed order for those candidates only; the velocity condition, the one that needs the
  ledger, is awaited last and only when everything else in the rule matched.

So a thousand rules cost a handful of dict lookups plus the closures of the few rules the index
leaves. The engine is pure: its input is `RequestFacts`, its output a `PolicyDecision`, and its
only outside call is `VelocityLookup.total` (see `ledger.SqlVelocity`). Sets and dicts are used
only for lookups, never iterated into a result, so a decision never depends on hash order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from itertools import accumulate
from operator import attrgetter
from typing import Any, Literal, Protocol

from txgate.core.errors import InternalError
from txgate.custody.policy.document import (
    GovernanceApprovals,
    Match,
    PolicyDocument,
    Rule,
    window_seconds,
)
from txgate.custody.policy.facts import RequestFacts
from txgate.custody.policy.hook import Decision, Verdict

Matcher = Callable[[RequestFacts], bool]
ApprovalMode = Literal["all", "any"]
DEFAULT_DENY = "default-deny"


class VelocityLookup(Protocol):
    """The ledger, as the engine sees it: how much of `asset` moved for `key` since `since`.

    Answers from history only (requests already recorded); the engine adds the request's own
    amount itself."""

    async def total(self, *, scope: str, key: str, asset: str, since: datetime) -> int: ...


@dataclass(frozen=True, slots=True)
class ApproverGroup:
    """Users who may vote (by user name), and how many of them must approve."""

    name: str
    members: frozenset[str]
    threshold: int


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """The quorum a request needs: every group (`all`) or one group (`any`) reaching its
    threshold. Stored with the request as JSON (`as_dict`), so a later policy change does not
    change what an already pending request needs."""

    groups: tuple[ApproverGroup, ...]
    mode: ApprovalMode
    initiator_may_approve: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": [
                {"name": g.name, "members": sorted(g.members), "threshold": g.threshold}
                for g in self.groups
            ],
            "mode": self.mode,
            "initiator_may_approve": self.initiator_may_approve,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApprovalRequirement:
        mode = data["mode"]
        if mode not in ("all", "any"):
            raise ValueError(f"unknown approval mode {mode!r}")
        return cls(
            groups=tuple(
                ApproverGroup(
                    str(g["name"]), frozenset(map(str, g["members"])), int(g["threshold"])
                )
                for g in data["groups"]
            ),
            mode=mode,
            initiator_may_approve=bool(data["initiator_may_approve"]),
        )

    def reached(self, approvers: Iterable[str], *, initiator: str) -> bool:
        """Whether these approving user names meet the quorum (the initiator's own vote counts
        only when the rule allows it)."""
        voters = set(approvers)
        if not self.initiator_may_approve:
            voters.discard(initiator)
        met = (len(voters & group.members) >= group.threshold for group in self.groups)
        return all(met) if self.mode == "all" else any(met)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The engine's answer: the verdict, the rule that gave it, a human reason, and the quorum
    when the verdict is require_approval."""

    verdict: Verdict
    rule: str
    reason: str
    approval: ApprovalRequirement | None = None

    def to_decision(self) -> Decision:
        """The hook's `Decision` (the pipeline's interface)."""
        return Decision(self.verdict, rule=self.rule, reason=self.reason)


DEFAULT_DENY_DECISION = PolicyDecision(
    Verdict.BLOCK, DEFAULT_DENY, f"Blocked by rule {DEFAULT_DENY!r}: no rule matched"
)


@dataclass(frozen=True, slots=True)
class _VelocityCheck:
    scope: str
    window: timedelta
    low: int
    high: int | None


# Fields whose conditions are "one of these values" / "within [min, max]", for the index.
_LISTED = (
    "kind",
    "chain_id",
    "verdict",
    "initiator",
    "source",
    "asset",
    "destination",
    "destination_is_contract",
    "message_kind",
    "primary_type",
)
_RANGED = ("amount", "value")
# An index dimension: the mask of the rules whose condition on one field the request meets.
_Dimension = Callable[[RequestFacts], int]


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    name: str
    # Indexed conditions: field → the values it may take, or its [low, high] (None: no limit).
    listed: dict[str, frozenset[object]]
    ranges: dict[str, tuple[int, int | None]]
    # The other static conditions, cheapest first.
    matchers: tuple[Matcher, ...]
    velocity: _VelocityCheck | None
    decision: PolicyDecision
    # The same decision with `extra_on_warning` added to the thresholds; None when there is none.
    on_warning: PolicyDecision | None


class CompiledPolicy:
    """A policy ready to evaluate; build it with `compile` (once per policy version)."""

    def __init__(self, document: PolicyDocument, rules: tuple[_CompiledRule, ...]) -> None:
        self.document = document
        self._rules = rules
        self._all = (1 << len(rules)) - 1
        self._index = _build_index(rules)
        self.rule_names = tuple(rule.name for rule in rules)
        self.uses_velocity = any(rule.velocity is not None for rule in rules)

    @classmethod
    def compile(cls, document: PolicyDocument) -> CompiledPolicy:
        return cls(document, tuple(_compile_rule(rule, document) for rule in document.rules))

    async def evaluate(
        self, facts: RequestFacts, *, velocity: VelocityLookup | None = None
    ) -> PolicyDecision:
        """The decision of the first rule that matches `facts`, or the default deny."""
        candidates = self._all
        for dimension in self._index:
            candidates &= dimension(facts)
            if not candidates:
                return DEFAULT_DENY_DECISION
        rules = self._rules
        while candidates:
            lowest = candidates & -candidates  # the first remaining rule in written order
            candidates ^= lowest
            rule = rules[lowest.bit_length() - 1]
            for matches in rule.matchers:
                if not matches(facts):
                    break
            else:
                if rule.velocity is not None and not await _within_velocity(rule, facts, velocity):
                    continue
                if rule.on_warning is not None and facts.verdict == "Warning":
                    return rule.on_warning
                return rule.decision
        return DEFAULT_DENY_DECISION


def _build_index(rules: tuple[_CompiledRule, ...]) -> tuple[_Dimension, ...]:
    """One dimension per field that some rule constrains (a field no rule names costs nothing)."""
    everyone = (1 << len(rules)) - 1
    index: list[_Dimension] = []
    for field in _LISTED:
        unconstrained, by_value = everyone, dict[object, int]()
        for position, rule in enumerate(rules):
            for value in rule.listed.get(field, ()):
                by_value[value] = by_value.get(value, 0) | 1 << position
            if field in rule.listed:
                unconstrained &= ~(1 << position)
        if unconstrained != everyone:
            index.append(_listed_dimension(attrgetter(field), unconstrained, by_value))
    for field in _RANGED:
        bounds = {pos: rule.ranges[field] for pos, rule in enumerate(rules) if field in rule.ranges}
        if bounds:
            index.append(_range_dimension(attrgetter(field), everyone, bounds))
    return tuple(index)


def _listed_dimension(
    read: Callable[[RequestFacts], object], unconstrained: int, by_value: dict[object, int]
) -> _Dimension:
    get = by_value.get
    return lambda f: unconstrained | get(read(f), 0)


def _range_dimension(
    read: Callable[[RequestFacts], int], everyone: int, bounds: dict[int, tuple[int, int | None]]
) -> _Dimension:
    """Rules accepting x are those with low <= x (a prefix of the sorted lows) and high >= x
    (a suffix of the sorted highs, plus the rules without a high): two bisections, two masks."""
    unconstrained, unbounded = everyone, 0
    by_low: dict[int, int] = {}
    by_high: dict[int, int] = {}
    for position, (low, high) in bounds.items():
        bit = 1 << position
        unconstrained &= ~bit
        by_low[low] = by_low.get(low, 0) | bit
        if high is None:
            unbounded |= bit
        else:
            by_high[high] = by_high.get(high, 0) | bit
    lows, highs = sorted(by_low), sorted(by_high)
    at_or_below = list(accumulate(by_low[low] for low in lows))  # [k]: low <= lows[k]
    at_or_above = list(accumulate(by_high[high] for high in reversed(highs)))[::-1]

    def dimension(f: RequestFacts) -> int:
        x = read(f)
        k = bisect_right(lows, x) - 1
        if k < 0:
            return unconstrained
        j = bisect_left(highs, x)
        above = (at_or_above[j] if j < len(highs) else 0) | unbounded
        return unconstrained | (at_or_below[k] & above)

    return dimension


async def _within_velocity(
    rule: _CompiledRule, facts: RequestFacts, lookup: VelocityLookup | None
) -> bool:
    check = rule.velocity
    assert check is not None
    if lookup is None:
        # Not matching would be unsafe for a block rule ("block above 100 ETH a day"): refuse.
        raise InternalError(f"rule {rule.name!r} has a velocity limit but no ledger was given")
    if check.scope == "initiator":
        key: str | None = facts.initiator_id
    elif check.scope == "source":
        key = facts.source
    else:
        key = facts.destination
    if key is None or facts.asset is None:
        return False  # nothing to sum over (a contract creation has no destination)
    history = await lookup.total(
        scope=check.scope, key=key, asset=facts.asset, since=facts.now - check.window
    )
    total = history + facts.amount
    return check.low <= total and (check.high is None or total <= check.high)


# --- compiling one rule ----------------------------------------------------------------------


def _compile_rule(rule: Rule, document: PolicyDocument) -> _CompiledRule:
    velocity = None
    if rule.match.velocity is not None:
        v = rule.match.velocity
        velocity = _VelocityCheck(
            v.scope, timedelta(seconds=window_seconds(v.window)), v.min or 0, v.max
        )
    decision = _decision(rule, document, extra=0)
    extra = rule.approvals.extra_on_warning if rule.approvals is not None else 0
    listed, ranges, matchers = _conditions(rule.match, document)
    return _CompiledRule(
        name=rule.name,
        listed=listed,
        ranges=ranges,
        matchers=tuple(matchers),
        velocity=velocity,
        decision=decision,
        on_warning=_decision(rule, document, extra=extra) if extra else None,
    )


def _decision(rule: Rule, document: PolicyDocument, *, extra: int) -> PolicyDecision:
    verdict = Verdict(rule.action)
    lead = {
        Verdict.ALLOW: "Allowed by rule",
        Verdict.BLOCK: "Blocked by rule",
        Verdict.REQUIRE_APPROVAL: "Approval required by rule",
    }[verdict]
    reason = f"{lead} {rule.name!r}" + (f": {rule.reason}" if rule.reason else "")
    approval = None
    if rule.approvals is not None:
        approval = approval_requirement(rule.approvals, document, extra=extra)
    return PolicyDecision(verdict, rule.name, reason, approval)


def approval_requirement(
    approvals: GovernanceApprovals, document: PolicyDocument, *, extra: int = 0
) -> ApprovalRequirement:
    """A rule's (or the governance's) approval block with group names resolved to members."""
    groups = []
    for entry in approvals.groups:
        members = frozenset(
            document.groups[entry.group] if entry.group is not None else entry.users or ()
        )
        # A warning asks for more approvers, at most all of the group: beyond that the
        # request could never be approved, which is a block that keeps people waiting.
        threshold = min(entry.threshold + extra, len(members))
        groups.append(ApproverGroup(entry.label, members, threshold))
    return ApprovalRequirement(tuple(groups), approvals.mode, approvals.initiator_may_approve)


def _conditions(
    match: Match, document: PolicyDocument
) -> tuple[dict[str, frozenset[object]], dict[str, tuple[int, int | None]], list[Matcher]]:
    """The rule's static conditions: listed values and ranges for the index, and closures for
    the rest in a fixed order, cheapest first (the loop stops at the first that fails)."""
    listed: dict[str, frozenset[object]] = {}
    if match.kind is not None:
        listed["kind"] = frozenset(match.kind)
    if match.chain is not None:
        listed["chain_id"] = frozenset(match.chain)
    if match.verdict is not None:
        listed["verdict"] = frozenset(match.verdict)
    if match.initiator is not None:
        names = set(match.initiator.users or ())
        for group in match.initiator.groups or ():
            names.update(document.groups[group])
        listed["initiator"] = frozenset(names)
    if match.source is not None:
        listed["source"] = frozenset(match.source)
    if match.asset is not None:
        listed["asset"] = frozenset(match.asset)
    if match.destination is not None:
        spec = match.destination
        if spec.addresses is not None or spec.allowlists is not None:
            addresses = set(spec.addresses or ())
            for name in spec.allowlists or ():
                addresses.update(document.allowlists[name])
            listed["destination"] = frozenset(addresses)
        if spec.type is not None:
            # The destination's kind must be known: None (not looked up) never matches.
            listed["destination_is_contract"] = frozenset({spec.type == "contract"})
    if match.message is not None:
        # Only a message matches a message condition, whatever `kind` says.
        listed["kind"] = listed.get("kind", frozenset({"message"})) & {"message"}
        if match.message.kind is not None:
            listed["message_kind"] = frozenset(match.message.kind)
        if match.message.primary_type is not None:
            listed["primary_type"] = frozenset(match.message.primary_type)
    ranges: dict[str, tuple[int, int | None]] = {}
    if match.amount is not None:
        ranges["amount"] = (match.amount.min or 0, match.amount.max)
    if match.value is not None:
        ranges["value"] = (match.value.min or 0, match.value.max)
    found: list[Matcher] = []
    if match.method is not None:
        found.append(_method_matcher(match.method))
    if match.fiat is not None:
        found.append(_fiat_matcher(match, document))
    return listed, ranges, found


def _method_matcher(methods: list[str]) -> Matcher:
    selectors = frozenset(m for m in methods if m.startswith("0x"))
    names = frozenset(m for m in methods if not m.startswith("0x") and m != "none")
    if "none" not in methods:
        return lambda f: f.method in names or f.selector in selectors
    # "none" is a transaction without calldata (a plain transfer): no method, no selector.
    return lambda f: (
        f.method in names
        or f.selector in selectors
        or (f.kind == "transaction" and f.method is None and f.selector is None)
    )


def _fiat_matcher(match: Match, document: PolicyDocument) -> Matcher:
    """USD value = amount * usd / 10**decimals, compared exactly: with usd = p/q and a bound
    a/b, `amount*p*b <= a*q*10**decimals`; all of it but `amount` is computed here, once."""
    fiat = match.fiat
    assert fiat is not None
    low = Fraction(fiat.min_usd) if fiat.min_usd is not None else None
    high = Fraction(fiat.max_usd) if fiat.max_usd is not None else None
    # asset → (low factor, low bound, high factor, high bound); None for an absent side.
    table: dict[str, tuple[int, int, int, int | None]] = {}
    for asset, price in document.prices.items():
        usd = Fraction(price.usd)
        scale = usd.denominator * 10**price.decimals
        low_factor, low_bound = (
            (usd.numerator * low.denominator, low.numerator * scale) if low else (0, 0)
        )
        high_factor, high_bound = (
            (usd.numerator * high.denominator, high.numerator * scale)
            if high is not None
            else (0, None)
        )
        table[asset] = (low_factor, low_bound, high_factor, high_bound)

    def matches(f: RequestFacts) -> bool:
        entry = table.get(f.asset) if f.asset is not None else None
        if entry is None:
            return False  # no price for the asset: its fiat value is unknown
        low_factor, low_bound, high_factor, high_bound = entry
        if f.amount * low_factor < low_bound:
            return False
        return high_bound is None or f.amount * high_factor <= high_bound

    return matches
