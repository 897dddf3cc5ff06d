"""Report drafts: one JSON document per open obligation with the fields of OFAC's form, and a CSV summary.

The fields follow what 31 CFR 501.603(b)(1)(ii) (initial report of blocked property) and 501.604(b) (rejected
transaction) ask, as the OFAC Reporting System's forms ask them (docs/reporting.md lists them): the reporting
institution and a contact (from the AML_REPORTING_* settings), the date of blocking or rejection, the legal
authority (the programs of the listed parties), the listed parties with their SDN entries, a description of the
property or transaction with amount, value and identifiers, the parties to it, the reason, and the evidence
behind the decision. Whatever a filer still has to provide is listed under `to_complete`. A draft is for a person
to check and file in the OFAC Reporting System; nothing here files anything.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aml_screener.reporting.deadlines import business_days_left, eastern_date
from aml_screener.reporting.obligations import Obligation, ObligationKind, decimal_text
from aml_screener.screening.records import Direction

SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = (
    "obligation_id",
    "report",
    "regulation",
    "due_date",
    "due_at_utc",
    "business_days_left",
    "decided_at_utc",
    "direction",
    "event_id",
    "exchange_id",
    "account_id",
    "asset",
    "network",
    "amount",
    "usd_value",
    "sanctions_targets",
    "programs",
    "draft",
)
_LEGAL_AUTHORITY_NOTE = (
    "Cite the Executive Order(s) and the 31 CFR chapter V part(s) of these programs (OFAC's program pages list them)."
)


@dataclass(frozen=True)
class Institution:
    """The reporting institution and its contact person (AML_REPORTING_INSTITUTION_*, AML_REPORTING_CONTACT_*)."""

    name: str | None = None
    address: str | None = None
    contact_name: str | None = None
    contact_phone: str | None = None
    contact_email: str | None = None

    def as_form(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "address": self.address,
            "contact_name": self.contact_name,
            "contact_phone": self.contact_phone,
            "contact_email": self.contact_email,
        }


def draft(obligation: Obligation, institution: Institution, now: datetime) -> dict[str, Any]:
    """The draft of one report, as a JSON-ready dict."""
    blocked = obligation.kind is ObligationKind.BLOCKED_PROPERTY
    transaction = obligation.transaction
    reporter = institution.as_form()
    form: dict[str, Any] = {
        "reporting_institution": reporter,
        # The date in Washington, the one the deadline counts from.
        ("date_blocked" if blocked else "date_of_rejection"): eastern_date(obligation.decided_at).isoformat(),
        "decided_at_utc": obligation.decided_at.isoformat(),
        "legal_authority": {"programs": list(obligation.programs), "citations": None, "note": _LEGAL_AUTHORITY_NOTE},
        "sanctions_targets": [target.model_dump(mode="json") for target in obligation.sanctions_targets],
        ("blocked_property" if blocked else "rejected_transaction"): {
            "description": obligation.property_description,
            "asset": transaction.asset,
            "network": transaction.network,
            "amount": decimal_text(transaction.amount),
            "value_usd": None if obligation.value_usd is None else f"{obligation.value_usd:.2f}",
            "value_basis": "as priced by the exchange when the transfer was "
            + ("observed" if transaction.direction is Direction.DEPOSIT else "requested"),
            "transaction_date_utc": transaction.occurred_at.isoformat(),
            "account_or_reference_numbers": _references(obligation),
            **({"held_at": _held_at(obligation)} if blocked else {}),
        },
        "parties": [party.model_dump(mode="json") for party in obligation.parties],
        ("reason_for_blocking" if blocked else "reason_for_rejection"): obligation.reason,
        "documentation": {
            **obligation.evidence.model_dump(mode="json"),
            "transaction": transaction.model_dump(mode="json"),
        },
    }
    to_complete = [f"reporting_institution.{name}" for name, value in reporter.items() if not value]
    to_complete.append("legal_authority.citations")
    if obligation.value_usd is None:
        to_complete.append(("blocked_property" if blocked else "rejected_transaction") + ".value_usd (estimate)")
    if blocked:
        to_complete.append("blocked_property.held_at: confirm where the frozen funds are held")
    return {
        "draft": f"OFAC {obligation.report} ({obligation.regulation}): DRAFT, to be checked and filed in the OFAC "
        "Reporting System",
        "obligation_id": obligation.obligation_id,
        "kind": obligation.kind.value,
        "status": obligation.status.value,
        "due_date": obligation.due_date.isoformat(),
        "due_at_utc": obligation.due_at.isoformat(),
        "business_days_left": business_days_left(obligation.due_at, now),
        "form": form,
        "to_complete": to_complete,
    }


def _references(obligation: Obligation) -> dict[str, Any]:
    transaction = obligation.transaction
    references: dict[str, Any] = {
        "exchange_id": transaction.exchange_id,
        "customer_account": transaction.account_id,
        "event_id": transaction.event_id,
        "decision_id": obligation.evidence.decision_id,
    }
    if transaction.direction is Direction.WITHDRAWAL:
        references["destination_address"] = transaction.destination_address
        if transaction.destination_tag:
            references["destination_tag"] = transaction.destination_tag
    else:
        references |= {
            "tx_hash": transaction.tx_hash,
            "output_index": transaction.output_index,
            "receiving_address": transaction.receiving_address,
            "source_addresses": list(transaction.source_addresses),
        }
    return references


def _held_at(obligation: Obligation) -> str:
    transaction = obligation.transaction
    return (
        f"{transaction.exchange_id}, credited to customer account {transaction.account_id} "
        f"(received at the exchange's address {transaction.receiving_address})"
    )


def draft_file_name(obligation: Obligation) -> str:
    return f"{obligation.due_date.isoformat()}_{obligation.kind.value}_{obligation.obligation_id}.json"


def write_drafts(
    obligations: Sequence[Obligation], out_dir: Path, institution: Institution, now: datetime
) -> list[Path]:
    """One JSON draft per obligation (earliest deadline first) and `summary.csv` in `out_dir`; returns the drafts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    rows = []
    for obligation in sorted(obligations, key=lambda item: (item.due_at, item.obligation_id)):
        path = out_dir / draft_file_name(obligation)
        path.write_text(json.dumps(draft(obligation, institution, now), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
        rows.append(_summary_row(obligation, path.name, now))
    with (out_dir / SUMMARY_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return written


def _summary_row(obligation: Obligation, file_name: str, now: datetime) -> dict[str, Any]:
    transaction = obligation.transaction
    return {
        "obligation_id": obligation.obligation_id,
        "report": obligation.report,
        "regulation": obligation.regulation,
        "due_date": obligation.due_date.isoformat(),
        "due_at_utc": obligation.due_at.isoformat(),
        "business_days_left": business_days_left(obligation.due_at, now),
        "decided_at_utc": obligation.decided_at.isoformat(),
        "direction": transaction.direction.value,
        "event_id": transaction.event_id,
        "exchange_id": transaction.exchange_id,
        "account_id": transaction.account_id,
        "asset": transaction.asset,
        "network": transaction.network,
        "amount": decimal_text(transaction.amount),
        "usd_value": "" if transaction.usd_value is None else f"{transaction.usd_value:.2f}",
        "sanctions_targets": "; ".join(
            f"{target.name or target.entry_id} ({target.watchlist} {target.entry_id})"
            for target in obligation.sanctions_targets
        ),
        "programs": " ".join(obligation.programs),
        "draft": file_name,
    }
