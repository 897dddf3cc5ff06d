"""`make bench` part E (in process): what screening deposits costs per event, next to withdrawals, in CPU time.

The batch pipeline alone (decode, normalize every address, decide, apply the action policy, encode the outputs; no
Kafka, no Redis: the lookup finds nothing, as for the 97 % of real traffic that is clear) over two generated
streams of the same size and seed, in alternating rounds: withdrawals only, and a mixed stream with a share of
deposits (each with one to three source addresses). CPU time (`time.process_time`), so other jobs on a shared
machine slow it far less than they slow the end-to-end rounds; medians; per event and per screened address.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.generator import EventGenerator
from aml_screener.screener.codec import DepositDecoder, EventEncoder, RecordEncoder, WithdrawalDecoder
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import BatchScreener, DepositInput, Topics
from aml_screener.screener.schemas import (
    DEPOSIT_FLAGGED,
    DEPOSIT_RECEIVED,
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    WITHDRAWAL_REQUESTED,
    LocalSchemaRepository,
    SchemaCatalog,
)
from aml_screener.screening.records import Direction

_WITHDRAWALS, _DEPOSITS = "withdrawals.requested", "deposits.received"
_BATCH = 500


class _Record:
    __slots__ = ("key", "offset", "topic", "value")
    partition = 0
    timestamp = 1
    headers: list[tuple[str, bytes]] | None = None

    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self.topic = topic
        self.offset = offset
        self.key = b"k"
        self.value = value


def _stream(events: int, seed: int, deposit_share: float, catalog: SchemaCatalog) -> tuple[list[_Record], int]:
    """The records of one generated stream, and how many addresses they carry."""
    withdrawal, deposit = catalog.current(WITHDRAWAL_REQUESTED), catalog.current(DEPOSIT_RECEIVED)
    generator = EventGenerator(
        sample_listings(),
        EventEncoder(withdrawal.schema, withdrawal.schema_id),
        seed=seed,
        clean_pool=events // 2,
        deposit_share=deposit_share,
        deposit_encoder=EventEncoder(deposit.schema, deposit.schema_id),
    )
    records, addresses = [], 0
    for offset, event in enumerate(generator.stream(events)):
        is_deposit = event.direction is Direction.DEPOSIT
        records.append(_Record(_DEPOSITS if is_deposit else _WITHDRAWALS, offset, event.value))
        addresses += len(dict.fromkeys(event.sources)) if is_deposit else 1
    return records, addresses


def _screener(catalog: SchemaCatalog) -> BatchScreener:
    repository = LocalSchemaRepository(catalog)

    def lookup(keys: Sequence[str]) -> LookupResult:
        return LookupResult("bench", 1_000, {}, 0.0)

    def encoder(name: str) -> RecordEncoder:
        entry = catalog.current(name)
        return RecordEncoder(entry.schema, entry.schema_id)

    return BatchScreener(
        decoder=WithdrawalDecoder(repository, catalog, max_message_bytes=65_536),
        decision_encoder=encoder(SCREENING_DECISION),
        flagged_encoder=encoder(WITHDRAWAL_FLAGGED),
        topics=Topics("d", "f", "dlq"),
        instance_id="bench",
        lookup=lookup,
        deposits=DepositInput(
            topic=_DEPOSITS,
            decoder=DepositDecoder(repository, catalog, max_message_bytes=65_536),
            flagged_encoder=encoder(DEPOSIT_FLAGGED),
        ),
    )


def pipeline_cpu(events: int, rounds: int, seed: int, deposit_share: float) -> dict[str, Any]:
    """CPU microseconds per event and per address, withdrawals only vs mixed, warm normalization cache."""
    catalog = SchemaCatalog()
    streams = {
        "withdrawals": _stream(events, seed, 0.0, catalog),
        "mixed": _stream(events, seed, deposit_share, catalog),
    }
    per_event: dict[str, list[float]] = {name: [] for name in streams}
    for _ in range(rounds):
        for name, (records, _) in streams.items():
            screener = _screener(catalog)
            for start in range(0, len(records), _BATCH):  # warm the normalization cache first
                screener.complete(screener.prepare(records[start : start + _BATCH]))
            started = time.process_time()
            for start in range(0, len(records), _BATCH):
                screener.complete(screener.prepare(records[start : start + _BATCH]))
            per_event[name].append((time.process_time() - started) / len(records) * 1e6)
    out: dict[str, Any] = {"events": events, "rounds": rounds, "deposit_share": deposit_share}
    for name, (_, addresses) in streams.items():
        median = statistics.median(per_event[name])
        out[name] = {
            "us_per_event": per_event[name],
            "median_us_per_event": median,
            "addresses": addresses,
            "median_us_per_address": median * events / addresses,
        }
    out["ratio_mixed_vs_withdrawals_per_event"] = (
        out["mixed"]["median_us_per_event"] / (out["withdrawals"]["median_us_per_event"])
    )
    return out
