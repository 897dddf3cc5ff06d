"""`aml-screener report ...`: OFAC reporting obligations (argument parsing and printing only).

    serve   consume the flagged topics, record obligations in the compacted obligations topic, export metrics
    list    the obligations (open by default), earliest deadline first
    drafts  one draft per open obligation (JSON with the form's fields) and a CSV summary, into a directory
    file    mark an obligation filed (a new value on the obligations topic), with the OFAC reference

Exit codes: 0 ok, 1 not done (unknown obligation, a write Kafka did not acknowledge, the topic missing for `file`),
2 configuration error (AML_* settings, an obligations topic that is not compacted).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from aml_screener.infra.logs import configure_logging
from aml_screener.reporting.app import obligation_log, run
from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.deadlines import EASTERN, business_days_left
from aml_screener.reporting.drafts import Institution, write_drafts
from aml_screener.reporting.obligations import Obligation, ObligationStatus
from aml_screener.reporting.topic import ADMIN_TIMEOUT_SECONDS, ObligationLog, ObligationsTopicError

SettingsFactory = Callable[..., Any]
# Reading the whole obligations topic takes well under a second per ten thousand obligations; a minute is for a
# cluster that is electing leaders.
READ_TIMEOUT_SECONDS = 60.0


def add_report_commands(parser: argparse.ArgumentParser, settings_factory: SettingsFactory) -> None:
    sub = parser.add_subparsers(dest="report_command", required=True)

    serve = sub.add_parser(
        "serve",
        help="record OFAC reporting obligations from the flagged topics; metrics, /healthz, /readyz",
        description=(
            "Consumes AML_KAFKA_FLAGGED_TOPIC and AML_KAFKA_DEPOSIT_FLAGGED_TOPIC (group AML_REPORTING_GROUP_ID); "
            "every sanctions reject or freeze becomes an obligation on AML_KAFKA_OBLIGATIONS_TOPIC (compacted; "
            "created when missing). See docs/reporting.md."
        ),
    )
    serve.set_defaults(func=lambda args: cmd_serve(args, settings_factory))

    listing = sub.add_parser("list", help="list obligations, earliest deadline first")
    listing.add_argument("--status", choices=["open", "filed", "all"], default="open", help="default: open")
    listing.add_argument("--json", action="store_true", help="one JSON object per obligation")
    listing.set_defaults(func=lambda args: cmd_list(args, settings_factory))

    drafts = sub.add_parser(
        "drafts",
        help="write one report draft (JSON) per open obligation and a CSV summary",
        description=(
            "The drafts carry the fields of OFAC's Report on Rejected Transaction and Report of Blocked Property "
            "(the institution and contact from AML_REPORTING_*), for a person to check and file in the OFAC "
            "Reporting System. Existing files of the same obligations are overwritten."
        ),
    )
    drafts.add_argument("--out", type=Path, required=True, help="directory for the drafts (created if missing)")
    drafts.add_argument(
        "--since", type=_since, help="only decisions made from this date (YYYY-MM-DD, Eastern) or ISO time on"
    )
    drafts.set_defaults(func=lambda args: cmd_drafts(args, settings_factory))

    filing = sub.add_parser("file", help="mark an obligation filed")
    filing.add_argument("obligation_id", help="the obligation's id (or a unique prefix of at least 8 characters)")
    filing.add_argument("--reference", help="the report's reference, e.g. its OFAC Reporting System id")
    filing.add_argument("--by", help="who filed it (default: the current user)")
    filing.set_defaults(func=lambda args: cmd_file(args, settings_factory))


def _since(text: str) -> datetime:
    """A date means its start in Washington; a time without a zone is UTC."""
    try:
        if len(text) == len("YYYY-MM-DD"):
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=EASTERN).astimezone(UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD or an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def cmd_serve(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    del args
    # A SIGTERM while still starting must stop it cleanly too (as for `aml-screener run`).
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    settings = settings_factory()
    configure_logging(settings.log_level, settings.log_format.value)
    return run(settings, stop)


def _read(settings: Any) -> tuple[ObligationBook, ObligationLog]:
    book = ObligationBook()
    obligations = obligation_log(settings)
    obligations.assign(timeout=ADMIN_TIMEOUT_SECONDS)
    obligations.catch_up(book, timeout=READ_TIMEOUT_SECONDS)
    return book, obligations


def _now() -> datetime:
    return datetime.now(UTC)


def _snapshot(settings: Any) -> ObligationBook:
    """Every obligation recorded so far (none when the topic does not exist yet: said on stderr)."""
    try:
        book, obligations = _read(settings)
    except ObligationsTopicError as exc:
        print(f"aml-screener report: no obligations recorded: {exc}", file=sys.stderr)
        return ObligationBook()
    obligations.close()
    return book


def cmd_list(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    book = _snapshot(settings_factory())
    now = _now()
    shown = [o for o in book.obligations() if args.status in ("all", o.status.value)]
    if args.json:
        for obligation in shown:
            print(obligation.model_dump_json())
        return 0
    print(f"{'obligation':36}  {'kind':20}  {'status':6}  {'due (Eastern)':13}  {'left':>4}  {'event':36}  targets")
    for obligation in shown:
        left = business_days_left(obligation.due_at, now) if obligation.is_open else ""
        if obligation.is_open and now > obligation.due_at:
            left = "LATE"
        targets = "; ".join(target.name or target.entry_id for target in obligation.sanctions_targets)
        print(
            f"{obligation.obligation_id:36}  {obligation.kind.value:20}  {obligation.status.value:6}  "
            f"{obligation.due_date.isoformat():13}  {left!s:>4}  {obligation.transaction.event_id[:36]:36}  {targets}"
        )
    print(f"{len(shown)} obligation(s)", file=sys.stderr)
    return 0


def cmd_drafts(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    settings = settings_factory()
    book = _snapshot(settings)
    selected = [o for o in book.obligations() if o.is_open and (args.since is None or o.decided_at >= args.since)]
    institution = Institution(
        name=settings.reporting_institution_name,
        address=settings.reporting_institution_address,
        contact_name=settings.reporting_contact_name,
        contact_phone=settings.reporting_contact_phone,
        contact_email=settings.reporting_contact_email,
    )
    written = write_drafts(selected, args.out, institution, _now())
    print(json.dumps({"drafts": len(written), "out": str(args.out), "summary": str(args.out / "summary.csv")}))
    return 0


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container user without a passwd entry
        return f"uid {os.getuid()}"


def _find(book: ObligationBook, wanted: str) -> Obligation | str:
    """The obligation with this id or unique id prefix, or why there is none."""
    exact = book.get(wanted)
    if exact is not None:
        return exact
    if len(wanted) < 8:
        return f"no obligation {wanted!r} (give the id, or a prefix of at least 8 characters)"
    found = [o for o in book.obligations() if o.obligation_id.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    return f"{len(found)} obligations start with {wanted!r}" if found else f"no obligation {wanted!r}"


def cmd_file(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    settings = settings_factory()
    try:
        book, obligations = _read(settings)
    except ObligationsTopicError as exc:
        print(f"aml-screener report: {exc}", file=sys.stderr)
        return 1
    try:
        found = _find(book, args.obligation_id)
        if isinstance(found, str):
            print(f"aml-screener report: {found}", file=sys.stderr)
            return 1
        if found.status is ObligationStatus.FILED and found.filing is not None:
            print(
                f"{found.obligation_id} was filed already, at {found.filing.filed_at.isoformat()} by "
                f"{found.filing.filed_by} (reference {found.filing.reference or 'none'}): nothing changed"
            )
            return 0
        filed = found.filed(at=_now(), by=args.by or _current_user(), reference=args.reference)
        error = obligations.write([filed], settings.kafka_delivery_timeout_ms / 1000)[filed.obligation_id]
        if error is not None:
            print(f"aml-screener report: not recorded, Kafka did not acknowledge the write: {error}", file=sys.stderr)
            return 1
        print(
            f"{filed.obligation_id} filed ({filed.report}, due {filed.due_date.isoformat()}) by "
            f"{filed.filing.filed_by if filed.filing else ''}, reference {args.reference or 'none'}"
        )
        return 0
    finally:
        obligations.close()
