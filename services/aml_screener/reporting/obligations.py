"""OFAC reporting obligations, derived from flagged events (pure: no I/O, no clock).

A flagged event whose action is `reject` (a withdrawal) or `freeze` (a deposit) and that matched at least one
`sanctions` entry obliges the exchange to report to OFAC within 10 business days (docs/reporting.md):

- `reject` -> a Report on Rejected Transaction (31 CFR 501.604);
- `freeze` -> an initial Report of Blocked Property (31 CFR 501.603(b)(1)); the property then also belongs in the
  Annual Report of Blocked Property (as of June 30, due September 30), which this module does not draft.

An `Obligation` holds everything OFAC's forms ask about the transaction, taken from the flagged event (the listed
parties with their SDN entries and programs, the property and transaction, amount and value, dates, the parties to
the transaction, the reason), the evidence that reproduces the decision (decision id, watchlist version, policy
version and rule, where the flagged event and its input were read), the deadline (deadlines.py) and its filing
status. What the forms ask about the reporting institution itself is configuration, added to the drafts
(drafts.py). Its id is deterministic (the decision id and the kind), so reading a flagged event again yields the
same obligation, never a second one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from aml_screener.reporting.deadlines import due_date, end_of_day
from aml_screener.screening.records import Direction

# Fixed namespace of obligation ids (UUIDv5 of decision id and kind). Changing it would make every obligation read
# again look new: never change.
OBLIGATION_NAMESPACE = uuid.UUID("3c9b6a52-8f0e-5d1b-a7c4-61e2d9f0b8a3")
SANCTIONS = "sanctions"
# Version of the JSON an obligation is stored as (the value on the obligations topic).
RECORD_VERSION = 1


class ObligationKind(StrEnum):
    REJECTED_TRANSACTION = "rejected_transaction"
    BLOCKED_PROPERTY = "blocked_property"


class ObligationStatus(StrEnum):
    OPEN = "open"
    FILED = "filed"


# The action (chosen by the action policy) that creates an obligation, per direction, and its kind.
_KIND_BY_ACTION: dict[tuple[Direction, str], ObligationKind] = {
    (Direction.WITHDRAWAL, "reject"): ObligationKind.REJECTED_TRANSACTION,
    (Direction.DEPOSIT, "freeze"): ObligationKind.BLOCKED_PROPERTY,
}
REGULATION = {
    ObligationKind.REJECTED_TRANSACTION: "31 CFR 501.604",
    ObligationKind.BLOCKED_PROPERTY: "31 CFR 501.603(b)(1)",
}
REPORT_NAME = {
    ObligationKind.REJECTED_TRANSACTION: "Report on Rejected Transaction",
    ObligationKind.BLOCKED_PROPERTY: "Initial Report of Blocked Property",
}


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SanctionsTarget(_Record):
    """A listed party the transaction involves: one sanctions entry that matched one of its addresses."""

    address: str  # the transaction's address that matched (a withdrawal's destination, a deposit's source)
    watchlist: str  # the list it came from, e.g. "ofac-sdn"
    entry_id: str  # the SDN entry (OFAC's party id) or the list's own id
    name: str | None
    programs: tuple[str, ...]  # sanctions programs, e.g. ("DPRK3", "CYBER2")
    listed_address: str  # the address exactly as the list published it
    listed_asset: str | None
    match_type: str  # direct | related
    relation: str | None  # how a related address relates to the listed one
    source: str  # the published file it was loaded from
    published_at: datetime | None


class Party(_Record):
    """A party to the transaction, as far as the exchange knows it."""

    role: str  # originator | beneficiary
    description: str
    exchange_id: str | None = None
    account_id: str | None = None  # the exchange's customer account
    addresses: tuple[str, ...] = ()
    listed: bool = False  # a sanctions target (see sanctions_targets)


class Transaction(_Record):
    direction: Direction
    event_id: str
    exchange_id: str
    account_id: str
    asset: str
    network: str
    amount: Decimal
    usd_value: Decimal | None
    occurred_at: datetime  # requested (withdrawal) or observed (deposit)
    destination_address: str | None = None  # withdrawal
    destination_tag: str | None = None  # withdrawal
    tx_hash: str | None = None  # deposit
    output_index: int | None = None  # deposit
    receiving_address: str | None = None  # deposit: the exchange's own address
    source_addresses: tuple[str, ...] = ()  # deposit
    confirmations: int | None = None  # deposit
    metadata: dict[str, str] | None = None


class Evidence(_Record):
    """What reproduces the decision: an auditor can find the input, the list and the policy that decided."""

    decision_id: str
    action: str
    severity: str
    summary: str
    watchlist_version: str
    policy_version: str | None
    policy_rule: str | None
    screener: str
    screener_version: str | None
    flagged_at: datetime
    input_topic: str
    input_partition: int
    input_offset: int
    input_schema_id: int
    flagged_topic: str | None = None
    flagged_partition: int | None = None
    flagged_offset: int | None = None


class Filing(_Record):
    filed_at: datetime
    filed_by: str
    reference: str | None = None  # e.g. the OFAC Reporting System's report id


class Obligation(_Record):
    """One report OFAC is owed. Stored as JSON (`to_json`/`from_json`) under its id on the obligations topic."""

    record_version: int = RECORD_VERSION
    obligation_id: str
    kind: ObligationKind
    report: str
    regulation: str
    status: ObligationStatus = ObligationStatus.OPEN
    decided_at: datetime  # the date of rejection / blocking
    due_date: date  # US Eastern
    due_at: datetime  # the end of due_date in Washington, in UTC
    sanctions_targets: tuple[SanctionsTarget, ...]
    programs: tuple[str, ...]  # every program of the targets: the legal authorities the filer cites
    property_description: str
    value_usd: Decimal | None
    parties: tuple[Party, ...]
    transaction: Transaction
    reason: str
    evidence: Evidence
    filing: Filing | None = None

    @property
    def is_open(self) -> bool:
        return self.status is ObligationStatus.OPEN

    def filed(self, *, at: datetime, by: str, reference: str | None = None) -> Self:
        """The same obligation, marked filed."""
        return self.model_copy(
            update={"status": ObligationStatus.FILED, "filing": Filing(filed_at=at, filed_by=by, reference=reference)}
        )

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Raises pydantic.ValidationError for a value that is not an obligation."""
        return cls.model_validate_json(raw)


def obligation_id(decision_id: str, kind: ObligationKind) -> str:
    return str(uuid.uuid5(OBLIGATION_NAMESPACE, f"{decision_id}\x1f{kind.value}"))


def direction_of(flagged: Mapping[str, Any]) -> Direction:
    """A WithdrawalFlagged carries the withdrawal, a DepositFlagged the deposit."""
    if "deposit" in flagged:
        return Direction.DEPOSIT
    if "withdrawal" in flagged:
        return Direction.WITHDRAWAL
    raise ValueError("neither a WithdrawalFlagged nor a DepositFlagged record (no withdrawal or deposit field)")


def obligation_kind(flagged: Mapping[str, Any]) -> ObligationKind | None:
    """The report a flagged event obliges, or None: only a `reject` (withdrawal) or `freeze` (deposit) with a
    sanctions match does. An action from the wrong direction (a deposit `reject`) obliges nothing here."""
    action = flagged.get("action")
    if action is None:
        return None
    kind = _KIND_BY_ACTION.get((direction_of(flagged), str(action)))
    if kind is None or not _sanctions_matches(flagged):
        return None
    return kind


def _sanctions_matches(flagged: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [match for match in flagged.get("matches") or () if match.get("category") == SANCTIONS]


def obligation_from_flagged(
    flagged: Mapping[str, Any], *, flagged_position: tuple[str, int, int] | None = None
) -> Obligation | None:
    """The obligation a decoded WithdrawalFlagged (v3) or DepositFlagged (v1) creates, or None.

    `flagged` is the record as `FramedReader` decodes it with logical types (Decimal amounts, aware datetimes);
    older record versions without an action never oblige. `flagged_position` (topic, partition, offset) is where the
    flagged event was read, recorded as evidence."""
    kind = obligation_kind(flagged)
    if kind is None:
        return None
    direction = direction_of(flagged)
    decided_at = _utc(flagged["flagged_at"])
    due = due_date(decided_at)
    targets = _targets(flagged, direction)
    transaction = _transaction(flagged, direction)
    programs = tuple(sorted({program for target in targets for program in target.programs}))
    return Obligation(
        obligation_id=obligation_id(flagged["decision_id"], kind),
        kind=kind,
        report=REPORT_NAME[kind],
        regulation=REGULATION[kind],
        decided_at=decided_at,
        due_date=due,
        due_at=end_of_day(due),
        sanctions_targets=targets,
        programs=programs,
        property_description=_property_description(transaction),
        value_usd=transaction.usd_value,
        parties=_parties(transaction, targets),
        transaction=transaction,
        reason=_reason(flagged, kind, targets),
        evidence=_evidence(flagged, flagged_position),
    )


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (decode with logical types)")
    return moment.astimezone(UTC)


def _targets(flagged: Mapping[str, Any], direction: Direction) -> tuple[SanctionsTarget, ...]:
    """Every (address, sanctions entry) pair, once: a withdrawal's destination, each matching deposit source."""
    if direction is Direction.WITHDRAWAL:
        address = str(flagged["withdrawal"]["destination_address"])
        pairs = [(address, match) for match in _sanctions_matches(flagged)]
    else:
        pairs = [
            (str(source["address"]), match)
            for source in flagged.get("sources") or ()
            for match in source.get("matches") or ()
            if match.get("category") == SANCTIONS
        ]
        if not pairs:  # a record without per-source detail: the matches still name the listed parties
            pairs = [(str(match.get("listed_address")), match) for match in _sanctions_matches(flagged)]
    seen: set[tuple[str, str, str, str]] = set()
    targets = []
    for address, match in pairs:
        key = (address, str(match["list"]), str(match["entry_id"]), str(match["listed_address"]))
        if key in seen:
            continue
        seen.add(key)
        published = match.get("published_at")
        targets.append(
            SanctionsTarget(
                address=address,
                watchlist=match["list"],
                entry_id=match["entry_id"],
                name=match.get("entry_name"),
                programs=tuple(match.get("programs") or ()),
                listed_address=match["listed_address"],
                listed_asset=match.get("listed_asset"),
                match_type=match.get("match_type") or "direct",
                relation=match.get("relation"),
                source=match["source"],
                published_at=_utc(published) if published is not None else None,
            )
        )
    return tuple(targets)


def _transaction(flagged: Mapping[str, Any], direction: Direction) -> Transaction:
    event = flagged["withdrawal" if direction is Direction.WITHDRAWAL else "deposit"]
    common: dict[str, Any] = {
        "direction": direction,
        "event_id": event["event_id"],
        "exchange_id": event["exchange_id"],
        "account_id": event["account_id"],
        "asset": event["asset"],
        "network": event["network"],
        "amount": event["amount"],
        "usd_value": event.get("usd_value"),
        "metadata": event.get("metadata"),
    }
    if direction is Direction.WITHDRAWAL:
        return Transaction(
            **common,
            occurred_at=_utc(event["requested_at"]),
            destination_address=event["destination_address"],
            destination_tag=event.get("destination_tag"),
        )
    return Transaction(
        **common,
        occurred_at=_utc(event["observed_at"]),
        tx_hash=event["tx_hash"],
        output_index=event.get("output_index"),
        receiving_address=event["receiving_address"],
        source_addresses=tuple(event["source_addresses"]),
        confirmations=event.get("confirmations"),
    )


def decimal_text(amount: Decimal) -> str:
    """An amount without the trailing zeros of its Avro scale, never in scientific notation: 12500.5, 100."""
    return f"{amount.normalize():f}"


def _quantity(transaction: Transaction) -> str:
    value = f" (USD {transaction.usd_value:,.2f})" if transaction.usd_value is not None else ""
    return f"{decimal_text(transaction.amount)} {transaction.asset} on {transaction.network}{value}"


def _property_description(transaction: Transaction) -> str:
    if transaction.direction is Direction.WITHDRAWAL:
        tag = f" (destination tag {transaction.destination_tag})" if transaction.destination_tag else ""
        return (
            f"Withdrawal of {_quantity(transaction)} requested by customer account {transaction.account_id} of "
            f"{transaction.exchange_id} to address {transaction.destination_address}{tag}; not sent."
        )
    output = f" output {transaction.output_index}" if transaction.output_index is not None else ""
    return (
        f"Deposit of {_quantity(transaction)} in transaction {transaction.tx_hash}{output}, received at the "
        f"exchange's address {transaction.receiving_address} for customer account {transaction.account_id} of "
        f"{transaction.exchange_id}, from {', '.join(transaction.source_addresses)}; frozen by the exchange."
    )


def _parties(transaction: Transaction, targets: Sequence[SanctionsTarget]) -> tuple[Party, ...]:
    listed = {target.address for target in targets}
    names = ", ".join(sorted({target.name or target.entry_id for target in targets}))
    customer = f"customer account {transaction.account_id} of {transaction.exchange_id}"
    if transaction.direction is Direction.WITHDRAWAL:
        destination = transaction.destination_address or ""
        return (
            Party(
                role="originator",
                description=customer,
                exchange_id=transaction.exchange_id,
                account_id=transaction.account_id,
            ),
            Party(
                role="beneficiary",
                description=f"holder of address {destination} (listed: {names})",
                addresses=(destination,),
                listed=destination in listed,
            ),
        )
    sources = transaction.source_addresses
    return (
        Party(
            role="originator",
            description=f"holder(s) of address(es) {', '.join(sources)} (listed: {names})",
            addresses=sources,
            listed=any(address in listed for address in sources),
        ),
        Party(
            role="beneficiary",
            description=f"{customer}, credited at the exchange's address {transaction.receiving_address}",
            exchange_id=transaction.exchange_id,
            account_id=transaction.account_id,
            addresses=(transaction.receiving_address or "",),
        ),
    )


def _reason(flagged: Mapping[str, Any], kind: ObligationKind, targets: Sequence[SanctionsTarget]) -> str:
    listed = "; ".join(
        f"{target.address} is listed by {target.watchlist} as {target.name or target.entry_id} (entry {target.entry_id}"
        + (f", programs {', '.join(target.programs)}" if target.programs else "")
        + f", {target.match_type} match"
        + (f" via {target.relation}" if target.relation else "")
        + ")"
        for target in targets
    )
    verb = "rejected" if kind is ObligationKind.REJECTED_TRANSACTION else "blocked (frozen)"
    rule = flagged.get("policy_rule") or "unknown rule"
    version = flagged.get("policy_version") or "unknown version"
    return f"{verb}: {listed}. Action {flagged['action']} chosen by policy rule {rule} (policy {version})."


def _evidence(flagged: Mapping[str, Any], flagged_position: tuple[str, int, int] | None) -> Evidence:
    source = flagged["source"]
    topic, partition, offset = flagged_position if flagged_position is not None else (None, None, None)
    return Evidence(
        decision_id=flagged["decision_id"],
        action=flagged["action"],
        severity=flagged["severity"],
        summary=flagged["summary"],
        watchlist_version=flagged["watchlist_version"],
        policy_version=flagged.get("policy_version"),
        policy_rule=flagged.get("policy_rule"),
        screener=flagged["screener"],
        screener_version=flagged.get("screener_version"),
        flagged_at=_utc(flagged["flagged_at"]),
        input_topic=source["topic"],
        input_partition=source["partition"],
        input_offset=source["offset"],
        input_schema_id=source["schema_id"],
        flagged_topic=topic,
        flagged_partition=partition,
        flagged_offset=offset,
    )
