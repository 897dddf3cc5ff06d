"""What the history stores, computed from records: pure functions, no I/O.

- :func:`address_rows`: a ScreeningDecision (any version, read into the current schema without logical types)
  becomes one row per screened address: a withdrawal's destination, or each source of a deposit (the decision's
  ``sources``, in their order: ``address_index``).
- :func:`event_row`: a WithdrawalRequested or DepositReceived becomes the event's row (account, amount, USD value).

Rows are tuples in the column order of :data:`ADDRESS_COLUMNS` / :data:`EVENT_COLUMNS` (what COPY sends). Text that
PostgreSQL cannot store (a NUL character, which a hostile producer can put in any string) is stored with U+FFFD in
its place: a record must never be refused by the database, or it would block its partition forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aml_screener.screener.codec import decimal_from_bytes
from aml_screener.screening.records import Direction
from aml_screener.screening.watchlist import highest_severity

ADDRESS_COLUMNS = (
    "event_time",
    "decision_id",
    "address_index",
    "direction",
    "event_id",
    "exchange_id",
    "asset",
    "network",
    "address",
    "address_key",
    "checked_keys",
    "checked_relations",
    "outcome",
    "decision",
    "reason",
    "severity",
    "action",
    "matched_keys",
    "matched_entries",
    "watchlist_version",
    "decided_at",
    "record_time",
    "source_topic",
    "source_partition",
    "source_offset",
    "source_schema_id",
)
EVENT_COLUMNS = (
    "event_time",
    "direction",
    "event_id",
    "exchange_id",
    "account_id",
    "asset",
    "network",
    "amount",
    "usd_value",
    "tx_hash",
    "record_time",
    "source_topic",
    "source_partition",
    "source_offset",
)
AddressRow = tuple[Any, ...]
EventRow = tuple[Any, ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Python's datetime (and so psycopg's) covers years 1 to 9999; PostgreSQL more. A timestamp outside is a producer's
# error: it is clamped (and lands in the default partition), never refused.
_MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
_MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC)
_AMOUNT_SCALE = 18
_USD_SCALE = 2


def from_millis(ms: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return _MIN_TIME if ms < 0 else _MAX_TIME


def from_micros(us: int) -> datetime:
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return _MIN_TIME if us < 0 else _MAX_TIME


def to_millis(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def to_micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def clean(text: str) -> str:
    """``text`` as PostgreSQL can store it (no NUL)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _clean_opt(text: str | None) -> str | None:
    return None if text is None else clean(text)


def _clean_all(texts: Iterable[str]) -> list[str]:
    return [clean(text) for text in texts]


def _matched(matches: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    keys = [clean(str(match.get("matched_key") or match.get("listed_key") or "")) for match in matches]
    entries = [clean(f"{match['list']}/{match['entry_id']}") for match in matches]
    return [key for key in dict.fromkeys(keys) if key], list(dict.fromkeys(entries))


def address_rows(decision: Mapping[str, Any]) -> list[AddressRow]:
    """One row per screened address of a decision (at least one: an UNSCREENABLE withdrawal still names what was
    typed; a deposit decision of an old writer without ``sources`` has none)."""
    timings = decision["timings"]
    source = decision["source"]
    common_head = (
        from_millis(timings["requested_at"]),
        decision["decision_id"],
    )
    direction = decision.get("direction") or Direction.WITHDRAWAL.value
    event = (
        direction,
        clean(decision["event_id"]),
        clean(decision["exchange_id"]),
        clean(decision["asset"]),
        clean(decision["network"]),
    )
    verdict = str(decision["decision"])
    reason = _clean_opt(decision.get("reason"))
    severity = decision.get("severity")  # a deposit's is the highest of its sources'; each source row gets its own
    action = decision.get("action")
    version = decision.get("watchlist_version")
    tail = (
        version,
        from_micros(timings["decided_at"]),
        from_millis(timings["event_timestamp"]),
        source["topic"],
        source["partition"],
        source["offset"],
        source["schema_id"],
    )
    rows: list[AddressRow] = []
    if direction == Direction.DEPOSIT.value:
        for index, screened in enumerate(decision.get("sources") or ()):
            checked = screened.get("checked_keys") or ()
            matched_keys, matched_entries = _matched(screened.get("matches") or ())
            outcome = str(screened["outcome"])
            rows.append(
                (
                    *common_head,
                    index,
                    *event,
                    clean(screened["address"]),
                    _clean_opt(screened.get("address_key")),
                    _clean_all(item["key"] for item in checked),
                    [item["relation"] for item in checked],
                    outcome,
                    verdict,
                    _clean_opt(screened.get("reason")),
                    highest_severity(screened.get("matches") or ()) if outcome == "FLAGGED" else None,
                    action,
                    matched_keys,
                    matched_entries,
                    *tail,
                )
            )
        return rows
    checked = decision.get("checked_keys") or ()
    matched_keys, matched_entries = _matched(decision.get("matches") or ())
    rows.append(
        (
            *common_head,
            0,
            *event,
            clean(decision.get("address") or ""),  # decisions before v3 did not name the typed address
            _clean_opt(decision.get("address_key")),
            _clean_all(item["key"] for item in checked),
            [item["relation"] for item in checked],
            verdict,
            verdict,
            reason,
            severity,
            action,
            matched_keys,
            matched_entries,
            *tail,
        )
    )
    return rows


def event_row(
    direction: Direction, event: Mapping[str, Any], *, topic: str, partition: int, offset: int, timestamp_ms: int
) -> EventRow:
    """The row of one input event (decoded without logical types: decimals are bytes, times integers)."""
    deposit = direction is Direction.DEPOSIT
    usd = event.get("usd_value")
    return (
        from_millis(event["observed_at"] if deposit else event["requested_at"]),
        direction.value,
        clean(event["event_id"]),
        clean(event["exchange_id"]),
        clean(event["account_id"]),
        clean(event["asset"]),
        clean(event["network"]),
        decimal_from_bytes(event["amount"], _AMOUNT_SCALE),
        None if usd is None else decimal_from_bytes(usd, _USD_SCALE),
        _clean_opt(event.get("tx_hash")) if deposit else None,
        from_millis(timestamp_ms),
        topic,
        partition,
        offset,
    )
