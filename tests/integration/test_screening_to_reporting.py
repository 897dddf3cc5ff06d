"""From a transfer to the report OFAC is owed, with nothing hand-made in between: a real `aml-screener run` screens a
mixed stream of withdrawals and deposits against the bundled OFAC sample, its action policy rejects the withdrawals
and freezes the deposits that match a sanctions list, and a real `aml-screener report serve` turns exactly those
flagged events into reporting obligations whose evidence leads back to the screener's decision and its input."""

from __future__ import annotations

import uuid

import pytest

from aml_screener.devstack.generator import Expected
from aml_screener.reporting.obligations import ObligationKind
from aml_screener.screening.records import Direction
from tests.integration.harness import IsolatedStack, all_decided, generate, load_bundled_watchlist, produce
from tests.integration.reporting_process import (
    ReporterProcess,
    read_topic,
    reporting_env,
    unique_obligations_topic,
)

pytestmark = pytest.mark.integration


def test_sanctions_rejects_and_freezes_become_obligations_that_name_their_decision(
    stack: IsolatedStack, screeners, reader
) -> None:
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 600, seed=41, hit_share=0.05, invalid_share=0, malformed_share=0, deposit_share=0.35)
    hits = [event for event in events if event.expected is Expected.FLAGGED]
    hit_deposits = [event for event in hits if event.direction is Direction.DEPOSIT]
    assert len(hit_deposits) >= 5 and len(hits) - len(hit_deposits) >= 5, "both directions have sanctions hits"

    obligations_topic = unique_obligations_topic()
    group = f"aml-reporting-e2e-{uuid.uuid4().hex[:8]}"
    reporter = ReporterProcess(stack, group=group, instance="r1", env=reporting_env(obligations_topic, group))
    try:
        reporter.start()
        reporter.wait_ready()
        screener = screeners()
        screener.wait_assigned()
        produce(stack, events)
        outputs = reader.read_until(all_decided(events), 90, "every withdrawal and deposit decided")

        # The policy's actions: the sample is OFAC's SDN list, so every hit is rejected or frozen.
        decisions = {decision["decision_id"]: decision for decision in outputs.decisions}
        flagged = [decision for decision in decisions.values() if decision["decision"] == "FLAGGED"]
        assert sorted(d["event_id"] for d in flagged) == sorted(event.event_id for event in hits)
        assert {(d["direction"], d["action"]) for d in flagged} == {("withdrawal", "reject"), ("deposit", "freeze")}

        def recorded() -> bool:
            rejected = reporter.metric("aml_screener_reporting_open_obligations", kind="rejected_transaction")
            blocked = reporter.metric("aml_screener_reporting_open_obligations", kind="blocked_property")
            return rejected + blocked >= len(flagged)

        reporter.wait_until(recorded, 60, f"{len(flagged)} obligations recorded")
        obligations = [value for _, value in read_topic(stack, obligations_topic) if value is not None]
        by_decision = {obligation.evidence.decision_id: obligation for obligation in obligations}
        assert len(obligations) == len(by_decision) == len(flagged), "one obligation per sanctions decision"
        assert set(by_decision) == {d["decision_id"] for d in flagged}

        for decision_id, obligation in by_decision.items():
            decision = decisions[decision_id]
            expected_kind = (
                ObligationKind.BLOCKED_PROPERTY
                if decision["direction"] == "deposit"
                else ObligationKind.REJECTED_TRANSACTION
            )
            assert obligation.kind is expected_kind
            evidence = obligation.evidence
            # Which input, which list version, which policy rule decided: the decision's own words.
            assert (evidence.input_topic, evidence.input_partition, evidence.input_offset) == (
                decision["source"]["topic"],
                decision["source"]["partition"],
                decision["source"]["offset"],
            )
            assert evidence.watchlist_version == decision["watchlist_version"]
            assert (evidence.policy_version, evidence.policy_rule, evidence.action) == (
                decision["policy_version"],
                decision["policy_rule"],
                decision["action"],
            )
            # The listed party is the one the decision matched.
            matched = {(match["entry_id"], match["listed_address"]) for match in decision["matches"]}
            assert {(target.entry_id, target.listed_address) for target in obligation.sanctions_targets} <= matched
            assert obligation.sanctions_targets, decision_id
        assert reporter.terminate() == 0
        assert screener.terminate() == 0
    finally:
        reporter.close()
