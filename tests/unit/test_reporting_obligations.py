"""Reporting obligations from flagged events, as the reporter reads them (encoded with the catalog's schemas and
decoded by their writer schema): which events oblige a report, which report, when it is due, and that everything
OFAC's forms ask about the transaction is in it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from aml_screener.reporting.obligations import (
    Obligation,
    ObligationKind,
    ObligationStatus,
    obligation_from_flagged,
    obligation_id,
)
from aml_screener.screener.codec import RecordEncoder
from aml_screener.screening.records import Direction
from tests.pipeline_support import CATALOG
from tests.reporting_support import (
    CLEAN_BTC,
    CUSTOMER_DEPOSIT_ADDRESS,
    DECIDED,
    GARANTEX_BTC,
    LAZARUS,
    READER,
    decoded,
    deposit_flagged,
    match,
    theft_match,
    withdrawal_flagged,
)


def test_a_rejected_withdrawal_to_a_sanctioned_address_obliges_a_rejected_transaction_report() -> None:
    record = withdrawal_flagged(action="reject", amount=Decimal("12500.5"), usd_value=Decimal("12498.75"))
    obligation = obligation_from_flagged(decoded(record), flagged_position=("withdrawals.flagged", 1, 77))

    assert obligation is not None
    assert obligation.kind is ObligationKind.REJECTED_TRANSACTION
    assert obligation.regulation == "31 CFR 501.604"
    assert obligation.report == "Report on Rejected Transaction"
    assert obligation.status is ObligationStatus.OPEN and obligation.filing is None
    assert obligation.obligation_id == obligation_id(record["decision_id"], ObligationKind.REJECTED_TRANSACTION)
    # Rejected on Wednesday 2 December 2026 (Eastern): 10 business days later is Wednesday 16 December.
    assert obligation.decided_at == DECIDED
    assert obligation.due_date == date(2026, 12, 16)
    assert obligation.due_at == datetime(2026, 12, 17, 4, 59, 59, 999_999, tzinfo=UTC)
    # The listed party: SDN entry, name, program, the address that matched and how.
    (target,) = obligation.sanctions_targets
    assert (target.address, target.watchlist, target.entry_id, target.name) == (
        LAZARUS,
        "ofac-sdn",
        "27307",
        "Lazarus Group",
    )
    assert target.programs == ("DPRK3",) and obligation.programs == ("DPRK3",)
    assert target.match_type == "direct" and target.published_at is not None
    # The transaction: exact amount and value, the customer, the dates.
    transaction = obligation.transaction
    assert transaction.direction is Direction.WITHDRAWAL
    assert (transaction.amount, transaction.usd_value, obligation.value_usd) == (
        Decimal("12500.5"),
        Decimal("12498.75"),
        Decimal("12498.75"),
    )
    assert (transaction.exchange_id, transaction.account_id, transaction.destination_address) == (
        "bithumb-kr",
        "acct-0042",
        LAZARUS,
    )
    assert transaction.occurred_at < obligation.decided_at
    assert "12500.5 USDT on ethereum (USD 12,498.75)" in obligation.property_description
    originator, beneficiary = obligation.parties
    assert (originator.role, originator.account_id, originator.listed) == ("originator", "acct-0042", False)
    assert (beneficiary.role, beneficiary.addresses, beneficiary.listed) == ("beneficiary", (LAZARUS,), True)
    assert (
        obligation.reason.startswith("rejected: ") and "Lazarus Group (entry 27307, programs DPRK3" in obligation.reason
    )
    assert "default:sanctions" in obligation.reason
    # The evidence that reproduces the decision.
    evidence = obligation.evidence
    assert evidence.decision_id == record["decision_id"]
    assert evidence.watchlist_version == "v20261128-1"
    assert (evidence.policy_version, evidence.policy_rule, evidence.action) == (
        "2026-12-01 (sha256:ab12)",
        "default:sanctions",
        "reject",
    )
    assert (evidence.input_topic, evidence.input_partition, evidence.input_offset) == ("withdrawals.requested", 1, 4211)
    assert (evidence.flagged_topic, evidence.flagged_partition, evidence.flagged_offset) == (
        "withdrawals.flagged",
        1,
        77,
    )


def test_a_frozen_deposit_from_a_sanctioned_source_obliges_a_blocked_property_report() -> None:
    record = deposit_flagged(action="freeze", amount=Decimal("0.75"), usd_value=Decimal("71250.00"))
    obligation = obligation_from_flagged(decoded(record))

    assert obligation is not None
    assert obligation.kind is ObligationKind.BLOCKED_PROPERTY
    assert obligation.regulation == "31 CFR 501.603(b)(1)"
    assert obligation.report == "Initial Report of Blocked Property"
    # Only the listed source is a target; the other source is a party, not a target.
    (target,) = obligation.sanctions_targets
    assert (target.address, target.entry_id, target.name, target.programs) == (
        GARANTEX_BTC,
        "36025",
        "Garantex Europe OU",
        ("RUSSIA-EO14024",),
    )
    transaction = obligation.transaction
    assert transaction.direction is Direction.DEPOSIT
    assert transaction.source_addresses == (GARANTEX_BTC, CLEAN_BTC)
    assert (transaction.tx_hash, transaction.output_index, transaction.receiving_address) == (
        "9f" * 32,
        3,
        CUSTOMER_DEPOSIT_ADDRESS,
    )
    assert transaction.amount == Decimal("0.75") and obligation.value_usd == Decimal("71250.00")
    originator, beneficiary = obligation.parties
    assert originator.addresses == (GARANTEX_BTC, CLEAN_BTC) and originator.listed
    assert (beneficiary.account_id, beneficiary.addresses) == ("acct-7777", (CUSTOMER_DEPOSIT_ADDRESS,))
    assert "frozen by the exchange" in obligation.property_description
    assert obligation.reason.startswith("blocked (frozen): ")


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (withdrawal_flagged(action=None), "no action yet (before the action policy): nothing to report"),
        (withdrawal_flagged(action="hold"), "held for review: not rejected"),
        (withdrawal_flagged(action="allow"), "allowed"),
        (deposit_flagged(action="review"), "under review: not blocked"),
        (deposit_flagged(action="accept"), "accepted"),
        (withdrawal_flagged(action="reject", matches=[theft_match()]), "rejected, but for theft: no OFAC report"),
        (withdrawal_flagged(action="freeze"), "a deposit action on a withdrawal obliges nothing"),
        (deposit_flagged(action="reject"), "a withdrawal action on a deposit obliges nothing"),
        (
            deposit_flagged(action="freeze", sources=[(CLEAN_BTC, [theft_match(CLEAN_BTC)])]),
            "frozen, but no sanctions match",
        ),
    ],
)
def test_only_a_sanctions_reject_or_freeze_obliges_a_report(record: dict[str, object], why: str) -> None:
    assert obligation_from_flagged(decoded(record)) is None, why


def test_an_older_withdrawal_flagged_version_without_an_action_obliges_nothing() -> None:
    v2 = CATALOG.by_id(6)  # WithdrawalFlagged v2: no action, policy or screener version
    assert v2.fullname.endswith("WithdrawalFlagged") and "action" not in {f["name"] for f in v2.schema["fields"]}
    record = withdrawal_flagged()
    for field in ("action", "policy_version", "policy_rule", "screener_version"):
        del record[field]
    value = RecordEncoder(v2.schema, v2.schema_id).encode(record)
    assert obligation_from_flagged(READER.decode(value)[1]) is None


def test_only_sanctions_entries_are_targets_and_each_once() -> None:
    record = withdrawal_flagged(
        matches=[
            match(),
            match(),
            theft_match(LAZARUS),
            match(entry_id="99999", name="Another SDN", programs=("CYBER2",)),
        ]
    )
    obligation = obligation_from_flagged(decoded(record))
    assert obligation is not None
    assert [target.entry_id for target in obligation.sanctions_targets] == ["27307", "99999"]
    assert obligation.programs == ("CYBER2", "DPRK3")


def test_a_related_match_is_reported_with_how_it_relates() -> None:
    tron_twin = "TAzsQ9Gx8eqFNFSKbeXrbi45CuVPHzA8wr"
    record = withdrawal_flagged(
        destination=tron_twin, matches=[match(match_type="related", relation="same_account")], network="tron"
    )
    obligation = obligation_from_flagged(decoded(record))
    assert obligation is not None
    (target,) = obligation.sanctions_targets
    assert (target.address, target.listed_address, target.match_type, target.relation) == (
        tron_twin,
        LAZARUS,
        "related",
        "same_account",
    )
    assert "related match via same_account" in obligation.reason


def test_the_same_flagged_event_always_gives_the_same_obligation() -> None:
    record = withdrawal_flagged()
    first = obligation_from_flagged(decoded(record), flagged_position=("withdrawals.flagged", 0, 5))
    again = obligation_from_flagged(decoded(record), flagged_position=("withdrawals.flagged", 0, 5))
    assert first is not None and again is not None
    assert first.to_json() == again.to_json()
    other_version = obligation_from_flagged(
        decoded(withdrawal_flagged(event_id=record["event_id"], watchlist_version="v2"))
    )
    assert other_version is not None and other_version.obligation_id != first.obligation_id, "a new decision id"
    assert obligation_id("d-1", ObligationKind.REJECTED_TRANSACTION) != obligation_id(
        "d-1", ObligationKind.BLOCKED_PROPERTY
    )


def test_an_obligation_survives_its_json_exactly_and_is_marked_filed_by_a_new_value() -> None:
    record = deposit_flagged(amount=Decimal("0.000000000000000001"), usd_value=None)
    obligation = obligation_from_flagged(decoded(record))
    assert obligation is not None
    assert obligation.transaction.amount == Decimal("0.000000000000000001") and obligation.value_usd is None
    assert Obligation.from_json(obligation.to_json()) == obligation

    filed_at = datetime(2026, 12, 10, 16, 0, tzinfo=UTC)
    filed = obligation.filed(at=filed_at, by="analyst@example.com", reference="ORS-2026-000123")
    assert filed.status is ObligationStatus.FILED and not filed.is_open
    assert filed.filing is not None
    assert (filed.filing.filed_at, filed.filing.filed_by, filed.filing.reference) == (
        filed_at,
        "analyst@example.com",
        "ORS-2026-000123",
    )
    assert filed.model_copy(update={"status": ObligationStatus.OPEN, "filing": None}) == obligation
    assert Obligation.from_json(filed.to_json()) == filed
    assert obligation.is_open, "the original is unchanged"


def test_a_value_that_is_not_an_obligation_is_refused() -> None:
    with pytest.raises(ValueError, match="obligation_id"):
        Obligation.from_json(b'{"kind": "rejected_transaction"}')
