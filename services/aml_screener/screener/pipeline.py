"""Screening of one batch: decode -> normalize -> look up (one round trip) -> decide -> encode outputs.

Each destination is looked up under its own key and the keys of listed addresses related to it
(screening/related.py: the TRON twin of an EVM account, the other spellings of a key hash, a unified address's
receivers), all in the batch's one round trip; screening/matching.py turns what was found into the matches.

No Kafka here: the consumer loop hands in the polled records and sends the returned outputs. The batch is split
in two steps so that a watchlist outage can be waited out without redoing work and without deciding anything:
`prepare` (decode + normalize: needs no watchlist) and `complete` (lookup + decide + encode). `complete` raises
LookupUnavailable and then has produced nothing; the caller retries it later with the same PreparedBatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aml_screener.screener.codec import RecordEncoder, WithdrawalDecoder, usd_value_of
from aml_screener.screener.errors import DeadLetterReason, DecodeError
from aml_screener.screener.lookup import LookupResult
from aml_screener.screening.addresses import (
    MAX_ADDRESS_LENGTH,
    InvalidAddress,
    UnsupportedNetwork,
    normalize_for_lookup,
)
from aml_screener.screening.decision import Outcome, Verdict, decide, decision_id, summarize, unscreenable
from aml_screener.screening.matching import collect_matches
from aml_screener.screening.records import Decision, Flagged, Match, SourcePosition, WithdrawalEvent
from aml_screener.screening.related import RelatedKey, related_to, screening_keys

# Normalization results are cached per (network, address): real withdrawal traffic repeats destinations
# (exchange deposit addresses, payment processors). Bounded: the cache is dropped when it reaches this size.
_NORMALIZE_CACHE_MAX = 200_000

DLQ_HEADER_REASON = "aml.dlq.reason"
DLQ_HEADER_DETAIL = "aml.dlq.detail"
DLQ_HEADER_TOPIC = "aml.source.topic"
DLQ_HEADER_PARTITION = "aml.source.partition"
DLQ_HEADER_OFFSET = "aml.source.offset"
DLQ_HEADER_TIMESTAMP = "aml.source.timestamp"
DLQ_HEADER_SCREENER = "aml.screener"
# Fail-open mode: an event passed on unscreened carries why (the watchlist failure) in this header.
HOLD_HEADER_REASON = "aml.hold.reason"
# A DLQ detail is for humans; bound it so a hostile record cannot make the DLQ record large.
_DLQ_DETAIL_MAX = 512


class InputRecord(Protocol):
    """What the pipeline needs of a consumed record (kafka-python's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class _Screenable:
    record: InputRecord
    schema_id: int
    event: WithdrawalEvent
    address_key: str | None  # normalized lookup key, e.g. "evm:0x..."; None when it could not be normalized
    failure: str | None  # reason when the address could not be normalized
    related: tuple[tuple[str, str], ...]  # (key, relation) of listed addresses related to the destination


@dataclass(slots=True)
class PreparedBatch:
    records: Sequence[InputRecord]
    screenable: list[_Screenable]
    dead_letters: list[tuple[InputRecord, DecodeError]]
    decode_seconds: float
    normalize_seconds: float


@dataclass(slots=True)
class DecidedEvent:
    """Per-event result, for metrics, the flag log line and the caller's bookkeeping."""

    event_id: str
    decision_id: str
    severity: str | None
    event_timestamp_ms: int
    outcome: Outcome
    reason: str | None
    asset: str
    chain: str | None
    matches: Sequence[Match]
    usd_value: float | None


@dataclass(slots=True)
class CompletedBatch:
    outputs: list[OutputRecord]
    decided: list[DecidedEvent]
    dead_letters: list[tuple[InputRecord, DecodeError]]
    watchlist_version: str | None
    lookup: LookupResult | None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    held: int = 0  # events passed on unscreened to the hold topic (fail-open mode only)
    hold_reason: str | None = None


@dataclass(frozen=True)
class Topics:
    decisions: str
    flagged: str
    dead_letter: str
    hold: str = "withdrawals.held"


class Normalizer:
    """The destination's lookup key (`normalize_for_lookup`: no EIP-55 display form to compute) and the keys of
    listed addresses related to it (`related_to`), with bounded caches.

    Returns (key, None) or (None, reason). The caches map str -> str ("!" + reason for failures; related keys as
    "key relation" pairs joined by tabs) on purpose: a dict holding only strings is not tracked by Python's
    garbage collector, so a cache of 200,000 entries adds nothing to full collections (with tuples it added tens
    of milliseconds to each, measured under load). Inputs longer than the usual address limit (Zcash unified
    addresses) are not cached: a hostile producer must not fill the cache with kilobyte strings.
    """

    def __init__(self, max_entries: int = _NORMALIZE_CACHE_MAX) -> None:
        self._cache: dict[str, str] = {}
        self._related: dict[str, str] = {}
        self._max = max_entries

    def __call__(self, network: str, address: str) -> tuple[str | None, str | None]:
        cache_key = f"{network}\x00{address}"
        hit = self._cache.get(cache_key)
        if hit is None:
            try:
                normalized = normalize_for_lookup(network, address)
            except UnsupportedNetwork:
                hit = "!unsupported_network"
            except InvalidAddress as exc:
                hit = f"!invalid_address:{exc.reason}"
            else:
                hit = normalized.key
                if hit not in self._related:  # computed here, from the parse already done
                    self._remember_related(hit, related_to(normalized))
            if len(address) <= MAX_ADDRESS_LENGTH:
                if len(self._cache) >= self._max:
                    self._cache.clear()
                self._cache[cache_key] = hit
        if hit[0] == "!":
            return None, hit[1:]
        return hit, None

    def related(self, key: str) -> tuple[tuple[str, str], ...]:
        """(key, relation) of the listed addresses that make destination ``key`` a match, other than itself."""
        packed = self._related.get(key)
        if packed is None:
            packed = self._remember_related(key, screening_keys(key))
        if not packed:
            return ()
        return tuple(tuple(pair.split(" ", 1)) for pair in packed.split("\t"))  # type: ignore[misc]

    def _remember_related(self, key: str, related: tuple[RelatedKey, ...]) -> str:
        packed = "\t".join(f"{item.key} {item.relation}" for item in related)  # StrEnum: formats as its value
        if len(key) <= MAX_ADDRESS_LENGTH:
            if len(self._related) >= self._max:
                self._related.clear()
            self._related[key] = packed
        return packed


class BatchScreener:
    """Turns polled records into encoded outputs. Holds no Kafka or Redis handles: `lookup` is injected."""

    def __init__(
        self,
        *,
        decoder: WithdrawalDecoder,
        decision_encoder: RecordEncoder,
        flagged_encoder: RecordEncoder,
        topics: Topics,
        instance_id: str,
        lookup: Callable[[Sequence[str]], LookupResult],
        normalizer: Normalizer | None = None,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.decoder = decoder
        self.decision_encoder = decision_encoder
        self.flagged_encoder = flagged_encoder
        self.topics = topics
        self.instance_id = instance_id
        self.lookup = lookup
        self.normalize = normalizer or Normalizer()
        self.clock_us = clock_us

    def prepare(self, records: Sequence[InputRecord]) -> PreparedBatch:
        started = time.perf_counter()
        decoded: list[tuple[InputRecord, int, WithdrawalEvent]] = []
        dead: list[tuple[InputRecord, DecodeError]] = []
        decode = self.decoder.decode
        for record in records:
            try:
                schema_id, event = decode(record.value)
            except DecodeError as exc:
                dead.append((record, exc))
                continue
            decoded.append((record, schema_id, event))
        normalized_at = time.perf_counter()
        normalize = self.normalize
        related_of = normalize.related
        screenable = []
        for record, schema_id, event in decoded:
            address, failure = normalize(event["network"], event["destination_address"])
            related = related_of(address) if address is not None else ()
            screenable.append(_Screenable(record, schema_id, event, address, failure, related))
        done = time.perf_counter()
        return PreparedBatch(records, screenable, dead, normalized_at - started, done - normalized_at)

    def complete(self, batch: PreparedBatch) -> CompletedBatch:
        """Look up, decide and encode. Raises LookupUnavailable (then nothing was decided)."""
        wanted: dict[str, None] = {}
        for item in batch.screenable:
            if item.address_key is not None:
                wanted[item.address_key] = None
                for key, _relation in item.related:
                    wanted[key] = None
        keys = list(wanted)
        result: LookupResult | None = None
        if batch.screenable:
            # Even a batch of only unscreenable events checks the watchlist: every decision records the version.
            result = self.lookup(keys)
        started = time.perf_counter()
        version = result.version if result else None
        matches_by_key = result.matches if result else {}
        overridable = result.overridable if result else frozenset()
        decided_at = self.clock_us()
        size = len(batch.records)
        decode_us = int(batch.decode_seconds * 1e6)
        normalize_us = int(batch.normalize_seconds * 1e6)
        lookup_us = int(result.seconds * 1e6) if result else 0
        outputs: list[OutputRecord] = []
        decided: list[DecidedEvent] = []
        encode_decision = self.decision_encoder.encode
        for item in batch.screenable:
            event = item.event
            record = item.record
            address_key = item.address_key
            family = address_key.partition(":")[0] if address_key else None
            verdict: Verdict
            if address_key is None:
                verdict = unscreenable(item.failure or "invalid_address")
            elif not matches_by_key:
                verdict = decide(None, overridable)  # nothing of the batch is listed: the common case, no work
            else:
                verdict = decide(collect_matches(address_key, item.related, matches_by_key), overridable)
            event_id = event["event_id"]
            did = decision_id(event_id, version)
            source: SourcePosition = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "schema_id": item.schema_id,
            }
            matches = list(verdict.matches)
            decision: Decision = {
                "decision_id": did,
                "event_id": event_id,
                "exchange_id": event["exchange_id"],
                "asset": event["asset"],
                "network": event["network"],
                "decision": verdict.outcome,  # a StrEnum: its value is the Avro symbol
                "reason": verdict.reason,
                "chain_family": family,
                "address": event["destination_address"],
                "address_key": address_key,
                "checked_keys": [{"key": key, "relation": relation} for key, relation in item.related],
                "severity": verdict.severity,
                "matches": matches,
                "allowlisted": list(verdict.allowlisted),
                "overridden": list(verdict.overridden),
                "watchlist_version": version,
                "source": source,
                "timings": {
                    "requested_at": event["requested_at"],
                    "event_timestamp": record.timestamp,
                    "decided_at": decided_at,
                    "batch_size": size,
                    "decode_us": decode_us,
                    "normalize_us": normalize_us,
                    "lookup_us": lookup_us,
                },
                "screener": self.instance_id,
            }
            event_key = event_id.encode()
            outputs.append(OutputRecord(self.topics.decisions, event_key, encode_decision(decision)))
            usd: float | None = None
            if verdict.outcome is Outcome.FLAGGED and address_key and family and version is not None:
                usd_decimal = usd_value_of(event)
                usd = float(usd_decimal) if usd_decimal is not None else None
                flagged: Flagged = {
                    "decision_id": did,
                    "event_id": event_id,
                    "severity": verdict.severity or "low",
                    "summary": summarize(event["asset"], event["network"], matches),
                    "address_key": address_key,
                    "chain_family": family,
                    "matches": matches,
                    "watchlist_version": version,
                    "withdrawal": event,
                    "source": source,
                    "flagged_at": decided_at,
                    "screener": self.instance_id,
                }
                outputs.append(OutputRecord(self.topics.flagged, event_key, self.flagged_encoder.encode(flagged)))
            decided.append(
                DecidedEvent(
                    event_id=event_id,
                    decision_id=did,
                    severity=verdict.severity,
                    event_timestamp_ms=record.timestamp,
                    outcome=verdict.outcome,
                    reason=verdict.reason,
                    asset=event["asset"],
                    chain=family,
                    matches=matches,
                    usd_value=usd,
                )
            )
        for record, error in batch.dead_letters:
            outputs.append(self.dead_letter(record, error))
        stage = {
            "decode": batch.decode_seconds,
            "normalize": batch.normalize_seconds,
            "lookup": result.seconds if result else 0.0,
            "decide": time.perf_counter() - started,
        }
        return CompletedBatch(outputs, decided, batch.dead_letters, version, result, stage)

    def hold(self, batch: PreparedBatch, reason: str) -> CompletedBatch:
        """Fail-open mode: no decision at all (never `clear`); every decodable event goes to the hold topic as
        its original bytes, with the watchlist failure and the source position in headers. Records that cannot
        be decoded are dead-lettered as always."""
        started = time.perf_counter()
        outputs = [self._held(item.record, reason) for item in batch.screenable]
        for record, error in batch.dead_letters:
            outputs.append(self.dead_letter(record, error))
        stage = {
            "decode": batch.decode_seconds,
            "normalize": batch.normalize_seconds,
            "decide": time.perf_counter() - started,
        }
        return CompletedBatch(
            outputs, [], batch.dead_letters, None, None, stage, held=len(batch.screenable), hold_reason=reason
        )

    def _held(self, record: InputRecord, reason: str) -> OutputRecord:
        headers = [*_own_headers(record), (HOLD_HEADER_REASON, reason.encode()), *self._source_headers(record)]
        return OutputRecord(self.topics.hold, record.key, record.value or b"", headers)

    def _source_headers(self, record: InputRecord) -> list[tuple[str, bytes]]:
        return [
            (DLQ_HEADER_TOPIC, record.topic.encode()),
            (DLQ_HEADER_PARTITION, str(record.partition).encode()),
            (DLQ_HEADER_OFFSET, str(record.offset).encode()),
            (DLQ_HEADER_TIMESTAMP, str(record.timestamp).encode()),
            (DLQ_HEADER_SCREENER, self.instance_id.encode()),
        ]

    def dead_letter(self, record: InputRecord, error: DecodeError) -> OutputRecord:
        """The original bytes, untouched, with the reason and the source position in headers."""
        headers = [
            *_own_headers(record),  # the producer's headers first (operators trace records by them), then ours
            (DLQ_HEADER_REASON, error.reason.value.encode()),
            (DLQ_HEADER_DETAIL, error.detail[:_DLQ_DETAIL_MAX].encode("utf-8", "replace")),
            *self._source_headers(record),
        ]
        return OutputRecord(self.topics.dead_letter, record.key, record.value or b"", headers)


def _own_headers(record: InputRecord) -> list[tuple[str, bytes]]:
    """The input record's own headers, unchanged (a header without a value is kept, with an empty one)."""
    return [(key, value or b"") for key, value in (record.headers or ())]


__all__ = [
    "BatchScreener",
    "CompletedBatch",
    "DeadLetterReason",
    "DecidedEvent",
    "InputRecord",
    "Normalizer",
    "OutputRecord",
    "PreparedBatch",
    "Topics",
]
