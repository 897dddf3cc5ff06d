"""The action policy, rule by rule: every condition, the order, shadow rules, the sanctions floor, actions per
direction, USD bounds without a USD value, errors that name the file, rule and field, the version and its digest,
the defaults for every category and match type, the shipped example file, and the file watcher that reloads it."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from aml_screener.infra.settings import ConfigError, load_settings
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.policy_watch import PolicyWatcher, ReloadResult, load_policy
from aml_screener.screening.decision import Outcome
from aml_screener.screening.policy import (
    DEFAULT_POLICY,
    FLOOR_RULE,
    Action,
    Applied,
    Direction,
    Policy,
    PolicyError,
    ShadowResult,
    actions_for,
    apply_policy,
    parse_policy,
    policy_from_document,
)
from aml_screener.screening.records import Match
from aml_screener.screening.watchlist import Severity, severity_rank

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "helm" / "aml-screener" / "files" / "policy.toml"
W, D = Direction.WITHDRAWAL, Direction.DEPOSIT
FLAGGED, CLEAR, UNSCREENABLE = Outcome.FLAGGED, Outcome.CLEAR, Outcome.UNSCREENABLE


def match(category: str, match_type: str = "direct", listname: str = "some-list") -> Match:
    return {
        "list": listname,
        "category": category,
        "source": "test",
        "entry_id": f"{listname}:{category}",
        "entry_name": None,
        "programs": [],
        "listed_asset": None,
        "listed_address": "0xabc",
        "published_at": None,
        "match_type": match_type,
    }


def apply(
    policy: Policy,
    matches: list[Match] | None = None,
    *,
    direction: Direction = W,
    outcome: Outcome | None = None,
    asset: str = "ETH",
    usd: str | None = "50",
) -> Applied:
    matches = matches or []
    if outcome is None:
        outcome = FLAGGED if matches else CLEAR
    usd_value = Decimal(usd) if usd is not None else None
    return apply_policy(policy, direction=direction, outcome=outcome, matches=matches, asset=asset, usd_value=usd_value)


def policy(rules: str, version: str = "test") -> Policy:
    return parse_policy(f'version = "{version}"\n{rules}', source="policy.toml")


def error(text: str, source: str = "/etc/aml/policy.toml") -> str:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, source=source)
    return str(raised.value)


# --- defaults --------------------------------------------------------------------------------------------------

DEFAULTS = [
    # direction, category, match type, action, severity, rule
    (W, "sanctions", "direct", Action.REJECT, Severity.CRITICAL, "default:sanctions-withdrawal"),
    (W, "sanctions", "related", Action.REJECT, Severity.HIGH, "default:sanctions-withdrawal"),
    (W, "theft", "direct", Action.HOLD, Severity.HIGH, "default:flagged-withdrawal"),
    (W, "theft", "related", Action.HOLD, Severity.MEDIUM, "default:flagged-withdrawal"),
    (W, "ransomware", "direct", Action.HOLD, Severity.HIGH, "default:flagged-withdrawal"),
    (W, "ransomware", "related", Action.HOLD, Severity.MEDIUM, "default:flagged-withdrawal"),
    (W, "scam", "direct", Action.HOLD, Severity.MEDIUM, "default:flagged-withdrawal"),
    (W, "scam", "related", Action.HOLD, Severity.LOW, "default:flagged-withdrawal"),
    (W, "mixer", "direct", Action.HOLD, Severity.MEDIUM, "default:flagged-withdrawal"),
    (W, "mixer", "related", Action.HOLD, Severity.LOW, "default:flagged-withdrawal"),
    (W, "internal", "direct", Action.HOLD, Severity.LOW, "default:flagged-withdrawal"),
    (W, "internal", "related", Action.HOLD, Severity.LOW, "default:flagged-withdrawal"),
    (W, "gambling", "direct", Action.HOLD, Severity.LOW, "default:flagged-withdrawal"),
    (D, "sanctions", "direct", Action.FREEZE, Severity.CRITICAL, "default:sanctions-deposit"),
    (D, "sanctions", "related", Action.FREEZE, Severity.HIGH, "default:sanctions-deposit"),
    (D, "theft", "direct", Action.FREEZE, Severity.HIGH, "default:theft-deposit"),
    (D, "theft", "related", Action.FREEZE, Severity.MEDIUM, "default:theft-deposit"),
    (D, "ransomware", "direct", Action.FREEZE, Severity.HIGH, "default:theft-deposit"),
    (D, "ransomware", "related", Action.FREEZE, Severity.MEDIUM, "default:theft-deposit"),
    (D, "scam", "direct", Action.REVIEW, Severity.MEDIUM, "default:flagged-deposit"),
    (D, "scam", "related", Action.REVIEW, Severity.LOW, "default:flagged-deposit"),
    (D, "mixer", "direct", Action.REVIEW, Severity.MEDIUM, "default:flagged-deposit"),
    (D, "mixer", "related", Action.REVIEW, Severity.LOW, "default:flagged-deposit"),
    (D, "internal", "direct", Action.REVIEW, Severity.LOW, "default:flagged-deposit"),
    (D, "gambling", "related", Action.REVIEW, Severity.LOW, "default:flagged-deposit"),
]


@pytest.mark.parametrize("case", DEFAULTS, ids=lambda case: "-".join(str(part) for part in case[:3]))
def test_default_policy_for_each_category_and_match_type(case):
    direction, category, match_type, *expected = case
    applied = apply(DEFAULT_POLICY, [match(category, match_type)], direction=direction)
    assert [applied.action, applied.severity, applied.rule] == expected
    assert applied.policy_version == DEFAULT_POLICY.version
    assert applied.shadow == ()
    assert not applied.floor_applied


@pytest.mark.parametrize(
    ("direction", "outcome", "action", "severity", "rule"),
    [
        (W, CLEAR, Action.ALLOW, None, "default:clear-withdrawal"),
        (W, UNSCREENABLE, Action.HOLD, Severity.MEDIUM, "default:unscreenable-withdrawal"),
        (D, CLEAR, Action.ACCEPT, None, "default:clear-deposit"),
        (D, UNSCREENABLE, Action.REVIEW, Severity.MEDIUM, "default:unscreenable-deposit"),
    ],
)
def test_default_policy_for_clear_and_unscreenable(direction, outcome, action, severity, rule):
    for usd in ("0.01", "5000000", None):
        applied = apply(DEFAULT_POLICY, direction=direction, outcome=outcome, usd=usd, asset="XMR")
        assert (applied.action, applied.severity, applied.rule) == (action, severity, rule)


def test_the_highest_severity_of_several_matches_counts_and_sanctions_decide_the_action():
    applied = apply(DEFAULT_POLICY, [match("scam"), match("theft"), match("mixer", "related")])
    assert (applied.action, applied.severity) == (Action.HOLD, Severity.HIGH)
    applied = apply(DEFAULT_POLICY, [match("scam"), match("sanctions", "related")], direction=D)
    assert (applied.action, applied.severity, applied.rule) == (
        Action.FREEZE,
        Severity.HIGH,
        "default:sanctions-deposit",
    )


def test_every_policy_has_an_action_for_every_direction_and_outcome():
    """The built-in rules end every policy, so a policy of the operator's that covers nothing still decides."""
    partial = policy(
        '[[rule]]\nid = "xmr"\ndirection = "withdrawal"\noutcome = ["clear"]\nasset = "XMR"\naction = "hold"'
    )
    for candidate in (DEFAULT_POLICY, partial):
        for direction in Direction:
            for outcome in Outcome:
                matches = [match("theft")] if outcome is FLAGGED else []
                applied = apply(candidate, matches, direction=direction, outcome=outcome, asset="BTC")
                assert applied.action in actions_for(direction)
                assert applied.rule.startswith("default:")
                assert (applied.severity is None) == (outcome is CLEAR)


# --- conditions ------------------------------------------------------------------------------------------------


def test_category_condition():
    rules = policy('[[rule]]\nid = "r"\ndirection = "withdrawal"\ncategory = ["Theft", "mixer"]\naction = "reject"')
    assert rules.rules[0].category == ("mixer", "theft")  # one spelling per category, as the sync lower-cases them
    assert apply(rules, [match("theft")]).rule == "r"
    assert apply(rules, [match("mixer", "related")]).rule == "r"
    assert apply(rules, [match("scam")]).rule == "default:flagged-withdrawal"
    assert apply(rules, [match("scam"), match("theft")]).rule == "r"  # any of the matches


def test_match_type_condition():
    rules = policy('[[rule]]\nid = "r"\ndirection = "deposit"\nmatch_type = "related"\naction = "accept"')
    assert apply(rules, [match("scam", "related")], direction=D).action is Action.ACCEPT
    assert apply(rules, [match("scam", "direct")], direction=D).action is Action.REVIEW
    without_type = match("scam")
    del without_type["match_type"]  # a stored listing without the field is a direct match
    assert apply(rules, [without_type], direction=D).action is Action.REVIEW


def test_listing_conditions_hold_for_one_match_not_for_the_matches_together():
    rules = policy(
        '[[rule]]\nid = "r"\ndirection = "withdrawal"\ncategory = ["theft"]\nmatch_type = ["related"]\n'
        'list = ["hacks"]\naction = "reject"'
    )
    assert apply(rules, [match("theft", "related", "hacks")]).rule == "r"
    assert apply(rules, [match("theft", "direct", "hacks"), match("scam", "related", "hacks")]).rule != "r"
    assert apply(rules, [match("theft", "related", "other")]).rule != "r"
    assert apply(rules, [match("theft", "direct", "hacks"), match("theft", "related", "hacks")]).rule == "r"


def test_list_condition():
    rules = policy('[[rule]]\nid = "own"\ndirection = "withdrawal"\nlist = ["exchange-blocklist"]\naction = "reject"')
    assert apply(rules, [match("internal", listname="exchange-blocklist")]).action is Action.REJECT
    assert apply(rules, [match("internal", listname="partner-list")]).action is Action.HOLD


def test_asset_condition_is_case_insensitive():
    rules = policy(
        '[[rule]]\nid = "r"\ndirection = "withdrawal"\noutcome = ["clear"]\nasset = ["xmr", "ZEC"]\naction = "hold"'
    )
    assert rules.rules[0].asset == ("XMR", "ZEC")
    assert apply(rules, asset="XMR").action is Action.HOLD
    assert apply(rules, asset="xmr").action is Action.HOLD
    assert apply(rules, asset="zec").rule == "r"
    assert apply(rules, asset="ETH").action is Action.ALLOW


def test_direction_condition():
    rules = policy('[[rule]]\nid = "r"\ndirection = "deposit"\ncategory = "scam"\naction = "accept"')
    assert apply(rules, [match("scam")], direction=D).rule == "r"
    assert apply(rules, [match("scam")], direction=W).rule == "default:flagged-withdrawal"


def test_outcome_condition_defaults_to_flagged():
    rules = policy('[[rule]]\nid = "all-usdt"\ndirection = "withdrawal"\nasset = "USDT"\naction = "reject"')
    assert apply(rules, [match("scam")], asset="USDT").rule == "all-usdt"
    assert apply(rules, asset="USDT", outcome=CLEAR).rule == "default:clear-withdrawal"
    assert apply(rules, asset="USDT", outcome=UNSCREENABLE).rule == "default:unscreenable-withdrawal"
    every = policy(
        '[[rule]]\nid = "r"\ndirection = "withdrawal"\noutcome = ["unscreenable", "clear"]\nasset = "USDT"\n'
        'action = "reject"'
    )
    assert apply(every, asset="USDT", outcome=CLEAR).rule == "r"
    assert apply(every, asset="USDT", outcome=CLEAR).severity is None
    assert apply(every, asset="USDT", outcome=UNSCREENABLE).severity is Severity.MEDIUM
    assert apply(every, [match("scam")], asset="USDT").rule == "default:flagged-withdrawal"


def test_usd_bounds_min_inclusive_max_exclusive():
    rules = policy(
        '[[rule]]\nid = "band"\ndirection = "withdrawal"\ncategory = "theft"\nusd_min = 1000\nusd_max = "10000.50"\n'
        'action = "reject"'
    )
    assert apply(rules, [match("theft")], usd="999.99").rule == "default:flagged-withdrawal"
    assert apply(rules, [match("theft")], usd="1000").rule == "band"
    assert apply(rules, [match("theft")], usd="10000.49").rule == "band"
    assert apply(rules, [match("theft")], usd="10000.50").rule == "default:flagged-withdrawal"


def test_a_usd_bound_skips_an_event_without_usd_value_unless_told_to_match():
    lenient = policy(
        '[[rule]]\nid = "small"\ndirection = "withdrawal"\ncategory = "scam"\nusd_max = 100\naction = "allow"'
    )
    assert apply(lenient, [match("scam")], usd="99").action is Action.ALLOW
    assert apply(lenient, [match("scam")], usd=None).action is Action.HOLD  # an unpriced transfer is not "small"
    strict = policy(
        '[[rule]]\nid = "large"\ndirection = "withdrawal"\ncategory = "theft"\nusd_min = 10000\n'
        'usd_unknown = "match"\naction = "reject"'
    )
    assert apply(strict, [match("theft")], usd=None).action is Action.REJECT  # unpriced: treated as large
    assert apply(strict, [match("theft")], usd="9999").action is Action.HOLD
    assert apply(strict, [match("theft")], usd="10000").action is Action.REJECT


def test_a_rule_severity_replaces_the_category_severity():
    rules = policy(
        '[[rule]]\nid = "r"\ndirection = "withdrawal"\ncategory = "internal"\naction = "hold"\nseverity = "high"'
    )
    assert apply(rules, [match("internal")]).severity is Severity.HIGH
    lower = policy('[[rule]]\nid = "r"\ndirection = "deposit"\ncategory = "theft"\naction = "freeze"\nseverity = "low"')
    assert apply(lower, [match("theft")], direction=D).severity is Severity.LOW


# --- order and shadow rules ------------------------------------------------------------------------------------

ORDERED = """
[[rule]]
id = "first"
direction = "withdrawal"
category = "theft"
usd_min = 1000
action = "reject"

[[rule]]
id = "second"
direction = "withdrawal"
category = "theft"
action = "allow"
severity = "low"

[[rule]]
id = "third"
direction = "withdrawal"
category = "theft"
action = "hold"
"""


def test_the_first_matching_rule_wins_and_operator_rules_come_before_the_built_in_ones():
    rules = policy(ORDERED)
    assert apply(rules, [match("theft")], usd="5000").rule == "first"
    allowed = apply(rules, [match("theft")], usd="10")
    assert (allowed.rule, allowed.action, allowed.severity) == ("second", Action.ALLOW, Severity.LOW)
    assert [rule.id for rule in rules.effective][:3] == ["first", "second", "third"]
    assert all(rule.id.startswith("default:") for rule in rules.effective[3:])


SHADOWED = """
[[rule]]
id = "try-allow-small-scams"
shadow = true
direction = "withdrawal"
category = "scam"
usd_max = 100
action = "allow"
severity = "low"

[[rule]]
id = "scams-held"
direction = "withdrawal"
category = "scam"
action = "hold"

[[rule]]
id = "try-reject-scams"
shadow = true
direction = "withdrawal"
category = "scam"
action = "reject"

[[rule]]
id = "try-sanctions-allow"
shadow = true
direction = "withdrawal"
category = "sanctions"
action = "allow"
"""


def test_shadow_rules_are_recorded_and_never_change_the_action():
    rules = policy(SHADOWED)
    applied = apply(rules, [match("scam")], usd="20")
    assert (applied.action, applied.rule, applied.severity) == (Action.HOLD, "scams-held", Severity.MEDIUM)
    assert applied.shadow == (
        ShadowResult("try-allow-small-scams", Action.ALLOW, Severity.LOW),
        ShadowResult("try-reject-scams", Action.REJECT, Severity.MEDIUM),  # after the winner: still recorded
    )
    assert applied.shadow[0].as_record() == {
        "rule": "try-allow-small-scams",
        "action": "allow",
        "severity": "low",
    }
    larger = apply(rules, [match("scam")], usd="500")
    assert larger.shadow == (ShadowResult("try-reject-scams", Action.REJECT, Severity.MEDIUM),)
    assert apply(rules, [match("theft")]).shadow == ()  # no shadow rule matches
    # The same policy without the shadow rules decides exactly the same.
    live_only = policy(ORDERED.replace("theft", "unused"))
    for matches in ([match("scam")], [match("theft")], [match("sanctions")]):
        assert apply(rules, matches).action == apply(live_only, matches).action


def test_a_shadow_rule_reports_what_would_happen_including_the_sanctions_floor():
    applied = apply(policy(SHADOWED), [match("sanctions")])
    assert (applied.action, applied.rule) == (Action.REJECT, "default:sanctions-withdrawal")
    assert applied.shadow == (ShadowResult("try-sanctions-allow", Action.REJECT, Severity.CRITICAL),)


def test_a_policy_of_shadow_rules_only_decides_like_the_default():
    rules = policy(SHADOWED.replace('id = "scams-held"\n', 'id = "scams-held"\nshadow = true\n'))
    for category in ("scam", "theft", "sanctions", "mixer"):
        for direction in Direction:
            got, want = (
                apply(rules, [match(category)], direction=direction),
                apply(DEFAULT_POLICY, [match(category)], direction=direction),
            )
            assert (got.action, got.severity, got.rule) == (want.action, want.severity, want.rule)


# --- the sanctions floor ---------------------------------------------------------------------------------------

DOWNGRADES = """
[[rule]]
id = "allow-everything-withdrawn"
direction = "withdrawal"
action = "allow"
severity = "low"

[[rule]]
id = "accept-small-deposits"
direction = "deposit"
usd_max = 1000
action = "accept"

[[rule]]
id = "freeze-but-low"
direction = "deposit"
list = ["low-list"]
action = "freeze"
severity = "low"

[[rule]]
id = "sanctions-review"
direction = "deposit"
category = "sanctions"
action = "review"
"""


@pytest.mark.parametrize("match_type", ["direct", "related"])
def test_the_sanctions_floor_overrides_rules_that_downgrade(match_type):
    rules = policy(DOWNGRADES)
    floor = Severity.CRITICAL if match_type == "direct" else Severity.HIGH
    withdrawal = apply(rules, [match("scam"), match("sanctions", match_type)])
    assert (withdrawal.action, withdrawal.severity) == (Action.REJECT, floor)
    assert (withdrawal.rule, withdrawal.overridden_rule) == (FLOOR_RULE, "allow-everything-withdrawn")
    assert withdrawal.floor_applied
    small = apply(rules, [match("sanctions", match_type)], direction=D, usd="10")
    assert (small.action, small.severity, small.overridden_rule) == (Action.FREEZE, floor, "accept-small-deposits")
    low = apply(rules, [match("sanctions", match_type, "low-list")], direction=D, usd="5000")
    assert (low.action, low.severity, low.rule, low.overridden_rule) == (
        Action.FREEZE,
        floor,
        FLOOR_RULE,
        "freeze-but-low",
    )
    review = apply(rules, [match("sanctions", match_type)], direction=D, usd="5000")
    assert (review.action, review.rule, review.overridden_rule) == (Action.FREEZE, FLOOR_RULE, "sanctions-review")


def test_the_floor_does_not_lower_a_higher_severity_and_is_silent_when_the_rule_complies():
    rules = policy(
        '[[rule]]\nid = "r"\ndirection = "withdrawal"\ncategory = "sanctions"\naction = "reject"\nseverity = "critical"'
    )
    applied = apply(rules, [match("sanctions", "related")])
    assert (applied.action, applied.severity, applied.rule, applied.overridden_rule) == (
        Action.REJECT,
        Severity.CRITICAL,
        "r",
        None,
    )
    assert not applied.floor_applied
    # Without a sanctions match the same downgrading rules apply as written.
    assert apply(policy(DOWNGRADES), [match("theft")]).action is Action.ALLOW


def test_the_floor_holds_even_for_an_inconsistent_outcome():
    """Matches passed with another outcome (a caller's mistake) still cannot let a sanctions match through."""
    for outcome in (CLEAR, UNSCREENABLE):
        applied = apply(DEFAULT_POLICY, [match("sanctions")], outcome=outcome)
        assert (applied.action, applied.severity, applied.rule) == (Action.REJECT, Severity.CRITICAL, FLOOR_RULE)


_ACTIONS_BY_DIRECTION = {direction: actions_for(direction) for direction in Direction}


@st.composite
def rule_documents(draw: st.DrawFn, number: int) -> dict[str, Any]:
    direction = draw(st.sampled_from(list(Direction)))
    outcome = draw(st.sets(st.sampled_from(["flagged", "unscreenable", "clear"]), min_size=1))
    rule: dict[str, Any] = {
        "id": f"rule-{number}",
        "direction": direction.value,
        "outcome": sorted(outcome),
        "action": draw(st.sampled_from(_ACTIONS_BY_DIRECTION[direction])).value,
        "shadow": draw(st.booleans()),
    }
    if outcome == {"flagged"}:
        for name, values in (
            ("category", ["sanctions", "theft", "scam", "internal", "other"]),
            ("match_type", ["direct", "related"]),
            ("list", ["ofac", "own"]),
        ):
            if draw(st.booleans()):
                rule[name] = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
    if "clear" not in outcome and draw(st.booleans()):
        rule["severity"] = draw(st.sampled_from(list(Severity))).value
    if draw(st.booleans()):
        rule["asset"] = draw(st.lists(st.sampled_from(["ETH", "BTC", "USDT"]), min_size=1))
    bound = draw(st.sampled_from(["none", "min", "max"]))
    if bound != "none":
        rule[f"usd_{bound}"] = draw(st.integers(min_value=1, max_value=10**6))
        rule["usd_unknown"] = draw(st.sampled_from(["skip", "match"]))
    return rule


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    count = draw(st.integers(min_value=0, max_value=6))
    rules = [draw(rule_documents(number)) for number in range(count)]
    return policy_from_document({"version": "generated", "rule": rules}, source="<hypothesis>")


sanctions_matches = st.sampled_from(["direct", "related"]).map(lambda kind: match("sanctions", kind, "ofac"))
other_matches = st.builds(
    match,
    st.sampled_from(["theft", "scam", "internal", "other"]),
    st.sampled_from(["direct", "related"]),
    st.sampled_from(["ofac", "own"]),
)


@st.composite
def decisions(draw: st.DrawFn) -> dict[str, Any]:
    """Everything apply_policy takes but the policy, with at least one sanctions match among the matches."""
    sanctions = draw(st.lists(sanctions_matches, min_size=1, max_size=2))
    others = draw(st.lists(other_matches, max_size=3))
    return {
        "direction": draw(st.sampled_from(list(Direction))),
        "outcome": draw(st.sampled_from(list(Outcome))),
        "matches": draw(st.permutations(sanctions + others)),
        "asset": draw(st.sampled_from(["ETH", "btc", "USDT", "XMR"])),
        "usd_value": draw(st.one_of(st.none(), st.decimals(min_value=0, max_value=10**7, places=2))),
    }


@settings(max_examples=400, deadline=None)
@given(candidate=policies(), decision=decisions())
def test_no_policy_lets_a_sanctions_match_be_anything_but_reject_or_freeze(candidate, decision):
    applied = apply_policy(candidate, **decision)
    strongest = Action.REJECT if decision["direction"] is W else Action.FREEZE
    sanctions = [m for m in decision["matches"] if m["category"] == "sanctions"]
    floor = Severity.CRITICAL if any(m["match_type"] == "direct" for m in sanctions) else Severity.HIGH
    assert applied.action is strongest
    assert applied.severity is not None and severity_rank(applied.severity) >= severity_rank(floor)
    for shadow in applied.shadow:
        assert shadow.action is strongest
        assert shadow.severity is not None and severity_rank(shadow.severity) >= severity_rank(floor)


# --- validation and errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("action", list(Action))
def test_actions_are_valid_per_direction(direction, action):
    text = f'version = "v"\n[[rule]]\nid = "r"\ndirection = "{direction}"\naction = "{action}"'
    if action in actions_for(direction):
        assert parse_policy(text).rules[0].action is action
    else:
        message = error(text)
        assert "rule #1 ('r'): 'action'" in message
        assert f"'{action.value}' is a" in message
        assert ", ".join(a.value for a in actions_for(direction)[:2]) in message


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            'direction = "withdrawl"\naction = "hold"',
            "'direction' must be \"withdrawal\" or \"deposit\", not 'withdrawl'",
        ),
        ('action = "hold"', "'direction' is required"),
        ('direction = "deposit"', "'action' is required"),
        ('direction = "deposit"\naction = "review"\ncatgory = ["theft"]', "unknown field 'catgory' (known: id,"),
        ('direction = "deposit"\naction = "review"\nshadow = "yes"', "'shadow' must be true or false"),
        ('direction = "deposit"\naction = "review"\nmatch_type = ["indirect"]', "'match_type[0]' must be an array of"),
        ('direction = "deposit"\naction = "review"\nusd_min = "lots"', "'usd_min' must be a decimal number >= 0"),
        (
            'direction = "deposit"\naction = "review"\nusd_min = -1',
            "'usd_min' must be a decimal number >= 0 (inclusive",
        ),
        ('direction = "deposit"\naction = "review"\nusd_max = 0', "'usd_max' must be a decimal number > 0"),
        (
            'direction = "deposit"\naction = "review"\nusd_min = 10.5\nusd_max = 10',
            "'usd_max' (10) must be greater than",
        ),
        ('direction = "deposit"\naction = "review"\nusd_unknown = "match"', "'usd_unknown' only matters with usd_min"),
        ('direction = "deposit"\naction = "review"\nusd_unknown = "maybe"', "'usd_unknown' must be \"skip\""),
        (
            'direction = "deposit"\naction = "review"\nseverity = "severe"',
            "'severity' must be critical, high, medium or low",
        ),
        (
            'direction = "deposit"\naction = "accept"\noutcome = ["clear"]\nseverity = "low"',
            "'severity': a clear decision",
        ),
        ('direction = "deposit"\naction = "review"\noutcome = ["clear"]\ncategory = "theft"', "'outcome': a rule with"),
        ('direction = "deposit"\naction = "review"\noutcome = ["settled"]', "'outcome[0]' must be an array of"),
        ('direction = "deposit"\naction = "review"\nasset = []', "'asset': an empty array matches nothing"),
        ('direction = "deposit"\naction = "review"\ncategory = "allow"', "'category': 'allow' is the allowlist's"),
    ],
)
def test_errors_name_the_file_the_rule_and_the_field(rule, expected):
    ok = 'id = "ok"\ndirection = "deposit"\naction = "review"'
    text = f'version = "v"\n\n[[rule]]\n{ok}\n\n[[rule]]\nid = "bad"\n{rule}\n'
    message = error(text)
    assert message.startswith("/etc/aml/policy.toml: rule #2 ('bad'): "), message
    assert expected in message, message


def test_every_problem_is_reported_at_once():
    message = error(
        'version = "1+2"\nextra = 1\n[[rule]]\nid = "a"\ndirection = "deposit"\naction = "reject"\n'
        '[[rule]]\nid = "b"\ndirection = "withdrawal"\naction = "freeze"\n'
        '[[rule]]\ndirection = "withdrawal"\naction = "hold"\n'
    )
    assert message.startswith("/etc/aml/policy.toml: ")
    assert "'version' must be a version name" in message
    assert "unknown field 'extra' (known: version, description, rule)" in message
    assert "rule #1 ('a'): 'action': 'reject' is a withdrawal action" in message
    assert "rule #2 ('b'): 'action': 'freeze' is a deposit action" in message
    assert "rule #3: 'id' is required" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = ", "/etc/aml/policy.toml: not valid TOML: "),
        ("", "/etc/aml/policy.toml: 'version' is required"),
        ('version = "v"\nrule = [1]', "/etc/aml/policy.toml: 'rule[0]' must be an array of tables"),
        ('version = "v"\n[rule]\nid = "x"', "/etc/aml/policy.toml: 'rule' must be an array of tables"),
        (
            'version = "v"\n[[rule]]\nid = "x"\ndirection = "deposit"\naction = "review"\n'
            '[[rule]]\nid = "x"\ndirection = "deposit"\naction = "freeze"',
            "/etc/aml/policy.toml: rule ids must be unique; repeated: x",
        ),
        (
            'version = "v"\n[[rule]]\nid = "default:mine"\ndirection = "deposit"\naction = "review"',
            "rule #1 ('default:mine'): 'id': ':' is reserved for the built-in rules",
        ),
    ],
)
def test_document_level_errors(text, expected):
    assert expected in error(text)


# --- version ---------------------------------------------------------------------------------------------------


def test_version_is_the_declared_name_and_a_digest_of_the_content():
    text = (
        'version = "2026-12-01.1"\n[[rule]]\nid = "r"\ndirection = "withdrawal"\ncategory = ["theft", "scam"]\n'
        'usd_min = 10000\naction = "reject"\n'
    )
    first = parse_policy(text)
    name, _, digest = first.version.partition("+")
    assert name == "2026-12-01.1" == first.name
    assert len(digest) == 12 and first.digest.startswith(digest) and len(first.digest) == 64
    # Comments, layout, the order and spelling of values do not change what the policy does, nor its version.
    same = parse_policy(
        '# a comment\nversion = "2026-12-01.1"\n\n[[rule]]\naction = "reject"   # why\nusd_min = "10000.00"\n'
        'category = ["scam", "Theft", "scam"]\ndirection = "withdrawal"\nid = "r"\n'
    )
    assert same.version == first.version and same == first
    assert parse_policy(text.replace("usd_min = 10000", "usd_min = 1E4")).version == first.version
    # A rule changed without a new declared version still gets a new version, and so does a new declared version.
    changed = parse_policy(text.replace("10000", "10001"))
    assert changed.name == first.name and changed.version != first.version
    assert parse_policy(text.replace("2026-12-01.1", "2026-12-01.2")).digest != first.digest
    assert parse_policy(text.replace('id = "r"', 'id = "r"\nshadow = true')).version != first.version


def test_every_decision_records_the_version_of_the_policy_that_decided():
    first = policy(ORDERED, version="a")
    second = policy(ORDERED.replace("1000", "2000"), version="a")
    assert apply(first, [match("theft")]).policy_version == first.version
    assert apply(second, [match("theft")]).policy_version == second.version != first.version
    assert apply(second, []).policy_version == second.version  # the precomputed clear path too


def test_the_default_policy_has_a_version():
    assert DEFAULT_POLICY.version.startswith("default+")
    assert DEFAULT_POLICY.rules == ()
    assert parse_policy('version = "default"\ndescription = "the built-in rules"').version == DEFAULT_POLICY.version


# --- the shipped example ---------------------------------------------------------------------------------------


def _uncommented_examples(text: str) -> str:
    """The example rules of the shipped file with their leading "# " removed (the way the file says to use them)."""
    lines = []
    for line in text.splitlines():
        body = line.removeprefix("# ")
        if line.startswith("# ") and (body == "[[rule]]" or (" = " in body and body.split(" = ")[0].isidentifier())):
            lines.append(body)
        else:
            lines.append(line)
    return "\n".join(lines)


def test_the_shipped_policy_file_is_the_default_policy():
    shipped = load_policy(EXAMPLE)
    assert shipped.version == DEFAULT_POLICY.version
    assert shipped == DEFAULT_POLICY


def test_the_shipped_examples_are_valid_and_do_what_their_comments_say():
    examples = parse_policy(_uncommented_examples(EXAMPLE.read_text(encoding="utf-8")), source=str(EXAMPLE))
    assert [rule.id for rule in examples.rules] == [
        "theft-large-withdrawal",
        "scam-small-withdrawal-trial",
        "own-blocklist-withdrawal",
        "privacy-coin-withdrawal",
    ]
    large = apply(examples, [match("theft")], usd="25000")
    assert (large.action, large.rule) == (Action.REJECT, "theft-large-withdrawal")
    assert apply(examples, [match("theft")], usd=None).action is Action.REJECT
    assert apply(examples, [match("theft")], usd="9999.99").action is Action.HOLD
    small_scam = apply(examples, [match("scam")], usd="20")
    assert small_scam.action is Action.HOLD
    assert small_scam.shadow == (ShadowResult("scam-small-withdrawal-trial", Action.ALLOW, Severity.LOW),)
    assert apply(examples, [match("internal", listname="exchange-blocklist")]).action is Action.REJECT
    assert apply(examples, asset="XMR").action is Action.HOLD
    assert apply(examples, asset="ETH").action is Action.ALLOW


# --- the file watcher ------------------------------------------------------------------------------------------

VALID = 'version = "v1"\n[[rule]]\nid = "r"\ndirection = "withdrawal"\ncategory = "theft"\naction = "reject"\n'


def _metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _reloads(metrics: Metrics, result: str) -> float | None:
    return metrics.registry.get_sample_value("aml_screener_policy_reloads_total", {"result": result})


def _in_use(metrics: Metrics) -> list[str]:
    return [
        sample.labels["version"]
        for family in metrics.registry.collect()
        if family.name == "aml_screener_policy"
        for sample in family.samples
    ]


def _refused(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("aml_screener_policy_file_refused")


def test_the_watcher_starts_with_the_file_or_the_default(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(VALID, encoding="utf-8")
    metrics = _metrics()
    watcher = PolicyWatcher(path, interval_seconds=5, metrics=metrics)
    assert watcher.current == parse_policy(VALID) and watcher.current.source == str(path)
    assert _in_use(metrics) == [watcher.current.version]
    assert all(_reloads(metrics, result) == 0 for result in ReloadResult)
    assert _refused(metrics) == 0
    defaults = PolicyWatcher(None, interval_seconds=5, metrics=_metrics())
    assert defaults.current is DEFAULT_POLICY
    assert defaults.check() is None
    defaults.start().stop()  # no file: nothing to poll, no thread


def test_an_invalid_or_missing_file_at_start_up_stops_the_screener_with_the_reason(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(VALID.replace('"reject"', '"freeze"'), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"policy\.toml: rule #1 \('r'\): 'action': 'freeze' is a deposit action"):
        PolicyWatcher(path, interval_seconds=5, metrics=_metrics())
    with pytest.raises(PolicyError, match=r"missing\.toml: cannot read the policy file: No such file"):
        PolicyWatcher(tmp_path / "missing.toml", interval_seconds=5, metrics=_metrics())
    path.write_bytes(b'version = "\xff"')
    with pytest.raises(PolicyError, match=r"policy\.toml: not UTF-8 text"):
        load_policy(path)


def test_reload_valid_swap_invalid_refused_deleted_restored(tmp_path, caplog):
    path = tmp_path / "policy.toml"
    path.write_text(VALID, encoding="utf-8")
    metrics = _metrics()
    watcher = PolicyWatcher(path, interval_seconds=5, metrics=metrics)
    first = watcher.current
    assert watcher.check() is None  # nothing changed

    path.write_text(VALID.replace('"reject"', '"hold"'), encoding="utf-8")
    assert watcher.check() is ReloadResult.APPLIED
    second = watcher.current
    assert second.version != first.version and second.rules[0].action is Action.HOLD
    assert _in_use(metrics) == [second.version] and _reloads(metrics, "applied") == 1

    caplog.set_level(logging.INFO, logger="aml_screener.screener.policy_watch")
    path.write_text(VALID.replace('"reject"', '"accept"'), encoding="utf-8")
    assert watcher.check() is ReloadResult.INVALID
    assert watcher.current is second  # the previous policy stays
    assert _reloads(metrics, "invalid") == 1 and _refused(metrics) == 1 and _in_use(metrics) == [second.version]
    refused = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(refused) == 1 and refused[0].getMessage() == "policy file refused: the previous policy stays"
    assert "rule #1 ('r'): 'action': 'accept' is a deposit action" in refused[0].__dict__["problem"]
    assert refused[0].__dict__["policy_version"] == second.version
    assert watcher.check() is None and _reloads(metrics, "invalid") == 1  # reported once, not every poll

    path.unlink()
    assert watcher.check() is ReloadResult.UNREADABLE
    assert watcher.check() is None and watcher.check() is None  # a file that stays missing is reported once
    assert watcher.current is second and _reloads(metrics, "unreadable") == 1 and _refused(metrics) == 1

    path.write_text("# the same rules as in use\n" + VALID.replace('"reject"', '"hold"'), encoding="utf-8")
    assert watcher.check() is ReloadResult.UNCHANGED
    assert watcher.current is second and _refused(metrics) == 0 and _reloads(metrics, "unchanged") == 1

    path.write_text(VALID, encoding="utf-8")
    assert watcher.check() is ReloadResult.APPLIED
    assert watcher.current == first and _reloads(metrics, "applied") == 2


def test_the_watcher_thread_swaps_a_changed_file_in(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(VALID, encoding="utf-8")
    settings = load_settings(policy_file=str(path), policy_reload_seconds=0.01)
    metrics = _metrics()
    watcher = PolicyWatcher.from_settings(settings, metrics)
    assert watcher.interval_seconds == 0.01
    first = watcher.current
    swapped = threading.Event()
    original = watcher.check

    def check() -> ReloadResult | None:
        result = original()
        if result is ReloadResult.APPLIED:
            swapped.set()
        return result

    watcher.check = check  # type: ignore[method-assign]
    watcher.start()
    try:
        path.write_text(VALID.replace('version = "v1"', 'version = "v2"'), encoding="utf-8")
        assert swapped.wait(30), "the watcher did not pick the new file up"  # bound for a loaded machine only
        assert watcher.current.name == "v2" and watcher.current is not first
    finally:
        watcher.stop()
    assert watcher._thread is not None and not watcher._thread.is_alive()


def test_policy_settings_are_validated():
    assert load_settings().policy_file is None
    assert load_settings().policy_reload_seconds == 5.0
    for bad in ({"policy_reload_seconds": 0}, {"policy_reload_seconds": "soon"}, {"policy_file": ""}):
        with pytest.raises(ConfigError) as raised:
            load_settings(**bad)
        assert f"AML_{next(iter(bad)).upper()}" in str(raised.value)
