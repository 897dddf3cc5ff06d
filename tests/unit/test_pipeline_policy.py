"""The action policy in the batch pipeline: every decision and flagged event carries the action, the rule that chose
it, the policy version and the shadow results; a batch is decided under one policy (the one read when it is
completed), so a reload takes effect from the next batch."""

from __future__ import annotations

from decimal import Decimal

from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED
from aml_screener.screening.policy import DEFAULT_POLICY, FLOOR_RULE, Policy, parse_policy
from aml_screener.screening.records import Match
from tests.pipeline_support import CATALOG, DEPOSIT_TOPIC, batch_screener
from tests.unit.test_deposits import (
    CLEAN_EVM,
    HACK_BTC,
    HACK_BTC_KEY,
    LAZARUS,
    LAZARUS_KEY,
    LAZARUS_MATCH,
    LAZARUS_TRON,
    deposit,
    listing,
    on,
    outputs_on,
    run,
    withdrawal,
)

HACK_MATCH = listing(
    HACK_BTC, list_name="hacks", category="theft", asset="BTC", entry_id="bybit-2025", name="Bybit hack 2025"
)
SCAM_EVM = "0xde709f2102306220921060314715629080e2fb77"
SCAM_MATCH = listing(SCAM_EVM, list_name="scams", category="scam", asset="ETH", entry_id="s-1", name="Pig butchering")
WATCHLIST: dict[str, list[Match]] = {
    LAZARUS_KEY: [LAZARUS_MATCH],
    HACK_BTC_KEY: [HACK_MATCH],
    f"evm:{SCAM_EVM}": [SCAM_MATCH],
}

POLICY = parse_policy(
    """
version = "test-1"

[[rule]]
id = "allow-everything-flagged"   # tries to allow even sanctions hits: the floor must win over it
direction = "withdrawal"
category = ["sanctions", "scam"]
action = "allow"
severity = "low"

[[rule]]
id = "scam-deposit-trial"
shadow = true
direction = "deposit"
category = ["scam"]
action = "accept"

[[rule]]
id = "large-clear-withdrawal"
direction = "withdrawal"
outcome = ["clear"]
usd_min = 1000
action = "hold"
""",
    source="test-policy.toml",
)


class Holder:
    """What the screener's PolicyWatcher offers the pipeline: the current policy, swapped by a reload."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy
        self.reads = 0

    def __call__(self) -> Policy:
        self.reads += 1
        return self.current


def make(policy: Policy | Holder = DEFAULT_POLICY):
    holder = policy if isinstance(policy, Holder) else Holder(policy)

    def lookup(keys):
        return LookupResult("v-pol", 3, {k: WATCHLIST[k] for k in keys if k in WATCHLIST}, 0.001, frozenset(), "d")

    return batch_screener(lookup, instance_id="unit", policy=holder), holder


def test_default_policy_rejects_a_sanctioned_withdrawal_and_freezes_a_sanctioned_deposit():
    screener, _ = make()
    batch = on("withdrawals", withdrawal("w1", "ethereum", LAZARUS)) + on(
        DEPOSIT_TOPIC, deposit("d1", "ethereum", [CLEAN_EVM, LAZARUS])
    )
    done = run(screener, batch)
    decisions = {d["event_id"]: d for d in outputs_on(done, "decisions")}
    assert (decisions["w1"]["action"], decisions["w1"]["policy_rule"]) == ("reject", "default:sanctions-withdrawal")
    assert (decisions["d1"]["action"], decisions["d1"]["policy_rule"]) == ("freeze", "default:sanctions-deposit")
    assert {d["policy_version"] for d in decisions.values()} == {DEFAULT_POLICY.version}
    (flagged,) = outputs_on(done, "flagged")
    (deposit_flagged,) = outputs_on(done, "deposits.flagged")
    assert (flagged["action"], flagged["policy_rule"], flagged["policy_version"]) == (
        "reject",
        "default:sanctions-withdrawal",
        DEFAULT_POLICY.version,
    )
    assert (deposit_flagged["action"], deposit_flagged["severity"]) == ("freeze", "critical")
    assert [event.action for event in done.decided] == ["reject", "freeze"]


def test_clear_and_unscreenable_decisions_get_the_actions_of_their_direction():
    screener, _ = make()
    batch = on("withdrawals", withdrawal("w1", "ethereum", CLEAN_EVM), withdrawal("w2", "ethereum", "0x12")) + on(
        DEPOSIT_TOPIC, deposit("d1", "ethereum", [CLEAN_EVM]), deposit("d2", "ethereum", ["0x12"])
    )
    actions = {d["event_id"]: (d["decision"], d["action"]) for d in outputs_on(run(screener, batch), "decisions")}
    assert actions == {
        "w1": ("CLEAR", "allow"),
        "w2": ("UNSCREENABLE", "hold"),
        "d1": ("CLEAR", "accept"),
        "d2": ("UNSCREENABLE", "review"),
    }


def test_a_rule_cannot_downgrade_a_sanctions_hit_and_the_decision_names_the_rule_it_overrode():
    screener, _ = make(POLICY)
    done = run(screener, on("withdrawals", withdrawal("w1", "ethereum", LAZARUS), withdrawal("w2", "bsc", SCAM_EVM)))
    decisions = {d["event_id"]: d for d in outputs_on(done, "decisions")}
    sanctioned, scam = decisions["w1"], decisions["w2"]
    assert (sanctioned["action"], sanctioned["severity"], sanctioned["policy_rule"]) == (
        "reject",
        "critical",
        FLOOR_RULE,
    )
    assert sanctioned["policy_overridden_rule"] == "allow-everything-flagged"
    assert (scam["action"], scam["severity"], scam["policy_rule"]) == ("allow", "low", "allow-everything-flagged")
    assert scam["policy_overridden_rule"] is None
    assert {d["policy_version"] for d in decisions.values()} == {POLICY.version}
    assert POLICY.version.startswith("test-1+")
    flagged = {f["event_id"]: f for f in outputs_on(done, "flagged")}
    assert flagged["w1"]["policy_rule"] == FLOOR_RULE and flagged["w2"]["action"] == "allow"


def test_a_related_sanctions_hit_is_rejected_at_high_severity_at_least():
    screener, _ = make(POLICY)
    done = run(screener, on("withdrawals", withdrawal("w1", "tron", LAZARUS_TRON)))
    (decision,) = outputs_on(done, "decisions")
    assert (decision["action"], decision["severity"]) == ("reject", "high")


def test_shadow_rules_are_recorded_and_never_change_the_action():
    screener, _ = make(POLICY)
    done = run(screener, on(DEPOSIT_TOPIC, deposit("d1", "ethereum", [SCAM_EVM])))
    (decision,) = outputs_on(done, "decisions")
    assert decision["action"] == "review", "the live (built-in) rule decides"
    assert decision["policy_rule"] == "default:flagged-deposit"
    assert decision["shadow"] == [{"rule": "scam-deposit-trial", "action": "accept", "severity": "medium"}]


def test_usd_thresholds_use_the_events_usd_value():
    screener, _ = make(POLICY)
    done = run(
        screener,
        on(
            "withdrawals",
            withdrawal("small", "ethereum", CLEAN_EVM),  # 10.00 USD
            withdrawal_usd("large", Decimal("5000.00")),
            withdrawal_usd("unpriced", None),
        ),
    )
    actions = {d["event_id"]: (d["action"], d["policy_rule"]) for d in outputs_on(done, "decisions")}
    assert actions == {
        "small": ("allow", "default:clear-withdrawal"),
        "large": ("hold", "large-clear-withdrawal"),
        "unpriced": ("allow", "default:clear-withdrawal"),  # a USD bound does not apply without a USD value
    }


def withdrawal_usd(event_id: str, usd: Decimal | None) -> bytes:
    entry = CATALOG.current(WITHDRAWAL_REQUESTED)
    return EventEncoder(entry.schema, entry.schema_id).encode(
        {
            "event_id": event_id,
            "exchange_id": "upbit-kr",
            "account_id": "acct-9",
            "asset": "ETH",
            "network": "ethereum",
            "destination_address": CLEAN_EVM,
            "destination_tag": None,
            "amount": Decimal("2"),
            "usd_value": usd,
            "requested_at": 1_699_999_999_000,
            "metadata": None,
        }
    )


def test_a_batch_is_decided_under_the_policy_read_when_it_is_completed():
    holder = Holder(DEFAULT_POLICY)
    screener, _ = make(holder)
    prepared = screener.prepare(on("withdrawals", withdrawal("w1", "bsc", SCAM_EVM)))
    holder.current = POLICY  # a reload between prepare and complete: the completed batch uses it
    reads_before = holder.reads
    done = screener.complete(prepared)
    assert holder.reads == reads_before + 1, "read once per batch"
    (decision,) = outputs_on(done, "decisions")
    assert (decision["action"], decision["policy_version"]) == ("allow", POLICY.version)
    holder.current = DEFAULT_POLICY
    (again,) = outputs_on(run(screener, on("withdrawals", withdrawal("w2", "bsc", SCAM_EVM))), "decisions")
    assert (again["action"], again["policy_version"]) == ("hold", DEFAULT_POLICY.version)
