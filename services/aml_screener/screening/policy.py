"""The action policy: what the exchange does with a screened transfer, as ordered rules the operator owns.

Responsible for: the policy file's format (TOML, validated with pydantic models; every error names the file, the
rule and the field), its version (the file's ``version`` plus a digest of its content), the built-in default rules
that end every policy, and :func:`apply_policy`: the severity and action of one decision, the rule that chose them,
what shadow rules would have done, and the sanctions floor. Semantics and defaults: docs/policy.md.

Pure: no I/O and no clock. The screener reads the file and swaps policies (screener/policy_watch.py); the pipeline
calls :func:`apply_policy` once per decision with the policy of its batch.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from aml_screener.screening.decision import Outcome
from aml_screener.screening.records import Direction, Match
from aml_screener.screening.records import ShadowResult as ShadowRecord
from aml_screener.screening.related import MatchType
from aml_screener.screening.watchlist import Category, Severity, highest_severity, severity_of, severity_rank

__all__ = [
    "DEFAULT_POLICY",
    "FLOOR_RULE",
    "Action",
    "Applied",
    "Direction",
    "Policy",
    "PolicyError",
    "Rule",
    "ShadowResult",
    "actions_for",
    "apply_policy",
    "parse_policy",
    "policy_from_document",
]


class PolicyError(ValueError):
    """A policy that cannot be used. The message names the file, the rule (number and id) and the field."""


class Action(StrEnum):
    """What the exchange does. Each direction has its own three, strongest first (see :func:`actions_for`)."""

    REJECT = "reject"  # withdrawals: do not send (OFAC: a rejected transaction)
    HOLD = "hold"  # withdrawals: hold for an analyst's review
    ALLOW = "allow"  # withdrawals: send
    FREEZE = "freeze"  # deposits: block the funds (OFAC: blocked property)
    REVIEW = "review"  # deposits: credit only after an analyst's review
    ACCEPT = "accept"  # deposits: credit


_ACTIONS: Final[dict[Direction, tuple[Action, Action, Action]]] = {
    Direction.WITHDRAWAL: (Action.REJECT, Action.HOLD, Action.ALLOW),
    Direction.DEPOSIT: (Action.FREEZE, Action.REVIEW, Action.ACCEPT),
}

#: The rule a decision records when the sanctions floor replaced what the chosen rule said.
FLOOR_RULE: Final = "floor:sanctions"
# Ids with a colon are reserved for the built-in rules ("default:...") and the floor.
_BUILTIN_PREFIX: Final = "default:"
# An address that could not be checked: nothing is known about it, so an analyst looks, as at a scam or mixer hit.
_UNSCREENABLE_SEVERITY: Final = Severity.MEDIUM
_SANCTIONS: Final = Category.SANCTIONS.value


def actions_for(direction: Direction) -> tuple[Action, Action, Action]:
    """The actions a rule for ``direction`` may take, strongest first."""
    return _ACTIONS[direction]


# --- the file format ------------------------------------------------------------------------------------------

_OUTCOMES: Final = {"flagged": Outcome.FLAGGED, "unscreenable": Outcome.UNSCREENABLE, "clear": Outcome.CLEAR}
OutcomeName = Literal["flagged", "unscreenable", "clear"]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
RuleId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
# No "+": it separates the declared version from the digest in Policy.version.
VersionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
_LIST_FIELDS: Final = ("outcome", "category", "match_type", "list", "asset")


class Rule(BaseModel):
    """One ``[[rule]]``. Conditions left out match anything; a rule applies when all its conditions hold.

    Field descriptions are the expected forms that error messages quote.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: RuleId = Field(description="a unique id of letters, digits, '.', '_' or '-' (at most 64), e.g. \"theft-large\"")
    description: str | None = Field(None, description="a string for humans")
    shadow: StrictBool = Field(
        False, description="true or false (true: evaluated and recorded, never changes the action)"
    )
    direction: Direction = Field(description='"withdrawal" or "deposit"')
    outcome: tuple[OutcomeName, ...] = Field(
        ("flagged",), description='an array of "flagged", "unscreenable" and "clear" (default ["flagged"])'
    )
    category: tuple[Label, ...] | None = Field(
        None, description='an array of list categories, e.g. ["theft", "ransomware"] (any label a list uses)'
    )
    match_type: tuple[MatchType, ...] | None = Field(None, description='an array of "direct" and "related"')
    list: tuple[Label, ...] | None = Field(None, description='an array of watchlist names, e.g. ["ofac-sdn"]')
    asset: tuple[Label, ...] | None = Field(None, description='an array of asset tickers, e.g. ["USDT", "USDC"]')
    usd_min: Decimal | None = Field(
        None, ge=0, description='a decimal number >= 0 (inclusive lower bound of the USD value), e.g. 10000 or "0.5"'
    )
    usd_max: Decimal | None = Field(
        None, gt=0, description="a decimal number > 0 (exclusive upper bound of the USD value)"
    )
    usd_unknown: Literal["skip", "match"] = Field(
        "skip", description='"skip" (default: a USD bound never matches an event without usd_value) or "match"'
    )
    action: Action = Field(
        description="reject, hold or allow (withdrawal rules); freeze, review or accept (deposit rules)"
    )
    severity: Severity | None = Field(
        None, description="critical, high, medium or low (default: by the matches' categories)"
    )

    @field_validator(*_LIST_FIELDS, mode="before")
    @classmethod
    def _one_value_is_a_list_of_one(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("id")
    @classmethod
    def _colon_is_reserved(cls, value: str, info: ValidationInfo) -> str:
        if ":" in value and not (info.context or {}).get("builtin"):
            raise ValueError(f"':' is reserved for the built-in rules (\"{_BUILTIN_PREFIX}...\"): {value!r}")
        return value

    @field_validator("category", mode="after")
    @classmethod
    def _categories(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        # One spelling per category, as the sync configuration lower-cases it: "Sanctions" is "sanctions".
        lowered = tuple(item.lower() for item in value)
        if Category.ALLOW.value in lowered:
            raise ValueError("'allow' is the allowlist's category: allowlisted addresses are not matches")
        return _canonical(lowered)

    @field_validator("asset", mode="after")
    @classmethod
    def _assets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else _canonical(tuple(item.upper() for item in value))

    @field_validator("outcome", "match_type", "list", mode="after")
    @classmethod
    def _sets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if value is None else _canonical(value)

    @field_serializer("usd_min", "usd_max")
    def _plain_decimal(self, value: Decimal | None) -> str | None:
        # One spelling per amount (10000, 1E+4 and 10000.00 are one bound), so the digest follows the meaning.
        return None if value is None else format(value.normalize(), "f")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        allowed = _ACTIONS[self.direction]
        if self.action not in allowed:
            other = next(direction for direction, actions in _ACTIONS.items() if self.action in actions)
            raise ValueError(
                f"'action': {self.action.value!r} is a {other.value} action (a {self.direction.value} rule takes "
                f"{allowed[0].value}, {allowed[1].value} or {allowed[2].value})"
            )
        for name in _LIST_FIELDS:
            if getattr(self, name) == ():
                raise ValueError(f"'{name}': an empty array matches nothing (leave the field out to match any)")
        if self.matches_on_listings and self.outcome != ("flagged",):
            raise ValueError(
                "'outcome': a rule with category, match_type or list conditions can only match flagged decisions "
                '(outcome = ["flagged"], the default): other outcomes have no matches'
            )
        if self.severity is not None and "clear" in self.outcome:
            raise ValueError("'severity': a clear decision has no severity (leave it out of rules for clear)")
        if self.usd_min is not None and self.usd_max is not None and self.usd_min >= self.usd_max:
            raise ValueError(f"'usd_max' ({self.usd_max}) must be greater than 'usd_min' ({self.usd_min})")
        if self.usd_unknown == "match" and not self.has_usd_bound:
            raise ValueError("'usd_unknown' only matters with usd_min or usd_max")
        return self

    @property
    def matches_on_listings(self) -> bool:
        return self.category is not None or self.match_type is not None or self.list is not None

    @property
    def has_usd_bound(self) -> bool:
        return self.usd_min is not None or self.usd_max is not None

    def applies(self, matches: Sequence[Match], asset: str, usd_value: Decimal | None) -> bool:
        """Whether the conditions other than direction and outcome hold (the policy indexes rules by those)."""
        if self.asset is not None and asset not in self.asset:
            return False
        if self.usd_min is not None or self.usd_max is not None:
            if usd_value is None:
                if self.usd_unknown == "skip":
                    return False
            elif (self.usd_min is not None and usd_value < self.usd_min) or (
                self.usd_max is not None and usd_value >= self.usd_max
            ):
                return False
        if self.category is None and self.match_type is None and self.list is None:
            return True
        return any(self._takes(match) for match in matches)

    def _takes(self, match: Match) -> bool:
        """One match satisfies every listing condition (a related sanctions match is one match, not two)."""
        return (
            (self.category is None or match["category"] in self.category)
            and (self.match_type is None or match.get("match_type", MatchType.DIRECT.value) in self.match_type)
            and (self.list is None or match["list"] in self.list)
        )


def _canonical(values: tuple[str, ...]) -> tuple[str, ...]:
    """Order and repetition of a condition's values do not change its meaning, so they do not change the digest."""
    return tuple(sorted(set(values)))


class _Document(BaseModel):
    """The top level of a policy file."""

    model_config = ConfigDict(extra="forbid")

    version: VersionName = Field(
        description='a version name of letters, digits, ".", "_", "-" or ":" (at most 64), e.g. "2026-12-01.1"'
    )
    description: str | None = Field(None, description="a string for humans")
    rule: builtins.list[dict[str, Any]] = Field(
        [], description="an array of tables ([[rule]]), in the order they are tried"
    )


# --- built-in rules: the end of every policy --------------------------------------------------------------------

_BUILTIN_RULES: Final = tuple(
    Rule.model_validate(raw, context={"builtin": True})
    for raw in (
        {
            "id": "default:sanctions-withdrawal",
            "direction": "withdrawal",
            "category": ["sanctions"],
            "action": "reject",
            "description": "a transfer to a sanctioned party is prohibited (OFAC: reject, report within 10 business "
            "days)",
        },
        {
            "id": "default:flagged-withdrawal",
            "direction": "withdrawal",
            "action": "hold",
            "description": "any other hit (theft, ransomware, scam, mixer, internal lists) waits for an analyst",
        },
        {
            "id": "default:unscreenable-withdrawal",
            "direction": "withdrawal",
            "outcome": ["unscreenable"],
            "action": "hold",
            "severity": _UNSCREENABLE_SEVERITY.value,
            "description": "a destination that could not be checked is never sent unchecked",
        },
        {"id": "default:clear-withdrawal", "direction": "withdrawal", "outcome": ["clear"], "action": "allow"},
        {
            "id": "default:sanctions-deposit",
            "direction": "deposit",
            "category": ["sanctions"],
            "action": "freeze",
            "description": "property of a sanctioned party is blocked (OFAC: report within 10 business days)",
        },
        {
            "id": "default:theft-deposit",
            "direction": "deposit",
            "category": [Category.THEFT.value, Category.RANSOMWARE.value],
            "action": "freeze",
            "description": "proceeds of theft and ransomware are frozen for their owners and law enforcement",
        },
        {
            "id": "default:flagged-deposit",
            "direction": "deposit",
            "action": "review",
            "description": "any other hit (scam, mixer, internal lists) is credited only after an analyst's review",
        },
        {
            "id": "default:unscreenable-deposit",
            "direction": "deposit",
            "outcome": ["unscreenable"],
            "action": "review",
            "severity": _UNSCREENABLE_SEVERITY.value,
            "description": "funds from a source that could not be checked are not credited unchecked",
        },
        {"id": "default:clear-deposit", "direction": "deposit", "outcome": ["clear"], "action": "accept"},
    )
)


# --- the policy ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What a shadow rule decides for a decision (the sanctions floor included); recorded, never acted on."""

    rule: str
    action: Action
    severity: Severity | None

    def as_record(self) -> ShadowRecord:
        """The Avro ShadowResult record."""
        return {"rule": self.rule, "action": self.action.value, "severity": self.severity}


@dataclass(frozen=True, slots=True)
class Applied:
    """What a decision records from the policy."""

    severity: Severity | None  # None only for a clear decision
    action: Action
    rule: str  # id of the rule that chose the action ("default:..." built-in, FLOOR_RULE when the floor replaced it)
    shadow: tuple[ShadowResult, ...]  # every matching shadow rule, in policy order
    policy_version: str  # the version of the policy that decided (Policy.version)
    overridden_rule: str | None = None  # with FLOOR_RULE: the rule whose weaker action or severity was replaced

    @property
    def floor_applied(self) -> bool:
        return self.rule == FLOOR_RULE


@dataclass(frozen=True, slots=True)
class _Candidates:
    rules: tuple[Rule, ...]  # the rules of one (direction, outcome), in order
    last_shadow: int  # index of the last shadow rule among them (-1: none): evaluation stops after it
    # The result for a decision without matches when no rule here looks at the asset or the amount: most decisions
    # are clear, and this spares them the evaluation (measured per clear decision: 1.9 us without, 0.4 us with).
    constant: Applied | None = None


@dataclass(frozen=True)
class Policy:
    """A validated policy: the operator's rules in order (the built-in rules follow them, see :attr:`effective`).

    ``version`` is ``<declared version>+<12 hex digits of the digest>``: the digest covers the declared version, the
    descriptions and every rule (the built-in ones too), in a canonical form, so editing a rule without bumping the
    declared version still yields a new version, and a comment or a reformatting does not.
    """

    name: str  # the file's `version`
    rules: tuple[Rule, ...]
    description: str | None = None
    source: str = field(default="<policy>", compare=False)
    digest: str = field(init=False)  # SHA-256 (hex) of the canonical content
    version: str = field(init=False)
    _index: dict[tuple[Direction, Outcome], _Candidates] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        content = {
            "version": self.name,
            "description": self.description,
            "rules": [rule.model_dump(mode="json") for rule in self.rules],
            "builtin": [rule.model_dump(mode="json") for rule in _BUILTIN_RULES],
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "version", f"{self.name}+{digest[:12]}")
        index = {}
        for direction in Direction:
            for name, outcome in _OUTCOMES.items():
                rules = tuple(rule for rule in self.effective if rule.direction is direction and name in rule.outcome)
                shadows = [position for position, rule in enumerate(rules) if rule.shadow]
                candidates = _Candidates(rules, shadows[-1] if shadows else -1)
                if not any(rule.asset is not None or rule.has_usd_bound for rule in rules):
                    constant = _evaluate(
                        candidates,
                        self.version,
                        direction=direction,
                        outcome=outcome,
                        matches=(),
                        ticker="",
                        usd_value=None,
                    )
                    candidates = replace(candidates, constant=constant)
                index[direction, outcome] = candidates
        object.__setattr__(self, "_index", index)

    def needs_details(self, direction: Direction, outcome: Outcome) -> bool:
        """Whether a decision without matches of this direction and outcome can depend on its asset or USD value
        (False: :func:`apply_policy` answers from a precomputed result, so the caller need not decode the amount)."""
        return self._index[direction, outcome].constant is None

    @property
    def effective(self) -> tuple[Rule, ...]:
        """Every rule in the order they are tried: the operator's, then the built-in ones."""
        return self.rules + _BUILTIN_RULES


def policy_from_document(document: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
    """A policy from a parsed TOML document (a mapping); raises PolicyError naming ``source``, rule and field.
    Every problem is reported at once (the top level's and each rule's)."""
    problems: list[str] = []
    top: _Document | None = None
    try:
        top = _Document.model_validate(document)
    except ValidationError as exc:
        problems.extend(_messages(exc, _Document))
    raw_rules = document.get("rule")
    rules: list[Rule] = []
    for number, raw in enumerate(raw_rules if isinstance(raw_rules, list) else (), start=1):
        if not isinstance(raw, dict):
            continue  # reported above: 'rule[n]' must be a table
        where = f"rule #{number}" + (f" ({raw['id']!r})" if isinstance(raw.get("id"), str) else "")
        try:
            rules.append(Rule.model_validate(raw))
        except ValidationError as exc:
            problems.extend(f"{where}: {message}" for message in _messages(exc, Rule))
    ids = [rule.id for rule in rules]
    repeated = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
    if repeated:
        problems.append(f"rule ids must be unique; repeated: {', '.join(repeated)}")
    if problems or top is None:
        raise PolicyError(f"{source}: " + "; ".join(problems))
    return Policy(top.version, tuple(rules), top.description, source)


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """A policy from the text of a policy file (TOML); raises PolicyError naming ``source``, rule and field."""
    try:
        # Decimal, not float: a USD bound of 0.1 is 0.1.
        document = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not valid TOML: {exc}") from None
    return policy_from_document(document, source=source)


# --- applying it --------------------------------------------------------------------------------------------------


def apply_policy(
    policy: Policy,
    *,
    direction: Direction,
    outcome: Outcome,
    matches: Sequence[Match],
    asset: str,
    usd_value: Decimal | None,
) -> Applied:
    """Severity and action of one decision. ``matches``: the matches that count (a verdict's, after the allowlist);
    ``asset``: the event's ticker; ``usd_value``: its USD value when the event states one.

    The first matching live rule decides; every matching shadow rule is recorded. A sanctions match always gets the
    strongest action of the direction and at least the severity of its match type, whatever the rule said.
    """
    candidates = policy._index[direction, outcome]
    if not matches and candidates.constant is not None:
        return candidates.constant
    return _evaluate(
        candidates,
        policy.version,
        direction=direction,
        outcome=outcome,
        matches=matches,
        ticker=asset.upper(),
        usd_value=usd_value,
    )


def _evaluate(
    candidates: _Candidates,
    version: str,
    *,
    direction: Direction,
    outcome: Outcome,
    matches: Sequence[Match],
    ticker: str,
    usd_value: Decimal | None,
) -> Applied:
    floor = _sanctions_floor(matches)
    chosen: Applied | None = None
    shadow: list[ShadowResult] = []
    for position, rule in enumerate(candidates.rules):
        if chosen is not None:
            if position > candidates.last_shadow:
                break  # decided, and no shadow rule left to record
            if not rule.shadow:
                continue
        if not rule.applies(matches, ticker, usd_value):
            continue
        severity = rule.severity if rule.severity is not None else _default_severity(outcome, matches)
        result = _settle(direction, rule.id, action=rule.action, severity=severity, floor=floor, version=version)
        if rule.shadow:
            shadow.append(ShadowResult(rule.id, result.action, result.severity))
        else:
            chosen = result
    # The built-in rules end with an unconditional rule for every direction and outcome, so one always applies.
    if chosen is None:  # pragma: no cover - an invariant of _BUILTIN_RULES, checked by the unit tests
        raise AssertionError(f"no rule for {direction} {outcome}")
    return replace(chosen, shadow=tuple(shadow)) if shadow else chosen


def _default_severity(outcome: Outcome, matches: Sequence[Match]) -> Severity | None:
    if outcome is Outcome.CLEAR:
        return None
    return highest_severity(matches) or _UNSCREENABLE_SEVERITY


def _sanctions_floor(matches: Sequence[Match]) -> Severity | None:
    """The least severity a decision with these matches may have: that of its strongest sanctions match (critical
    direct, high related); None without a sanctions match."""
    floor: Severity | None = None
    for match in matches:
        if match["category"] == _SANCTIONS:
            severity = severity_of(_SANCTIONS, match.get("match_type", MatchType.DIRECT.value))
            if floor is None or severity_rank(severity) > severity_rank(floor):
                floor = severity
    return floor


def _settle(
    direction: Direction,
    rule: str,
    *,
    action: Action,
    severity: Severity | None,
    floor: Severity | None,
    version: str,
) -> Applied:
    """What ``rule`` decides, with the sanctions floor: never a weaker action or a lower severity than it demands."""
    if floor is None:
        return Applied(severity, action, rule, (), version)
    strongest = _ACTIONS[direction][0]
    if action is strongest and severity is not None and severity_rank(severity) >= severity_rank(floor):
        return Applied(severity, action, rule, (), version)
    raised = floor if severity is None or severity_rank(severity) < severity_rank(floor) else severity
    return Applied(raised, strongest, FLOOR_RULE, (), version, overridden_rule=rule)


#: No rules of the operator's: the built-in rules decide (docs/policy.md, "Defaults").
DEFAULT_POLICY: Final = Policy("default", (), "the built-in rules", "<built-in>")


# --- error messages -------------------------------------------------------------------------------------------------


def _messages(error: ValidationError, model: type[BaseModel]) -> list[str]:
    """One message per problem: the field, what is wrong with it, and the form it expects (its description)."""
    messages = []
    for problem in error.errors(include_url=False):
        kind, loc = problem["type"], problem["loc"]
        field_name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        info = model.model_fields.get(str(loc[0])) if loc else None
        expected = info.description if info is not None else None
        if kind == "extra_forbidden":
            messages.append(f"unknown field '{field_name}' (known: {', '.join(model.model_fields)})")
        elif kind == "missing":
            messages.append(f"'{field_name}' is required: {expected}")
        elif kind == "value_error":  # our validators: the message names the field and says what is wrong
            reason = str(problem.get("ctx", {}).get("error", problem["msg"]))
            messages.append(f"'{field_name}': {reason}" if field_name else reason)
        elif expected:
            messages.append(f"'{field_name}' must be {expected}, not {_shown(problem.get('input'))}")
        else:
            messages.append(f"'{field_name}': {problem['msg']}")
    return messages


def _shown(value: object) -> str:
    return format(value, "f") if isinstance(value, Decimal) else repr(value)
