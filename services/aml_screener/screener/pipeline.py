"""Screening of one batch: decode -> normalize -> look up (one round trip) -> decide -> encode outputs.

A batch may mix withdrawals (one destination address each) and deposits (every source address of the transfer):
each event's addresses are screened alike and the event's verdict is the worst of them (decision.combine). Each
address is looked up under its own key and the keys of listed addresses related to it
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

from aml_screener.screener.codec import DepositDecoder, RecordEncoder, WithdrawalDecoder, usd_value_of
from aml_screener.screener.errors import DeadLetterReason, DecodeError
from aml_screener.screener.lookup import LookupResult
from aml_screener.screening.addresses import (
    MAX_ADDRESS_LENGTH,
    InvalidAddress,
    UnsupportedNetwork,
    normalize_for_lookup,
)
from aml_screener.screening.decision import (
    Outcome,
    Verdict,
    combine,
    decide,
    decision_id,
    deposit_decision_id,
    summarize,
    unscreenable,
)
from aml_screener.screening.matching import collect_matches
from aml_screener.screening.policy import DEFAULT_POLICY, Applied, Policy, apply_policy
from aml_screener.screening.records import (
    AddressScreening,
    CheckedKey,
    Decision,
    DepositEvent,
    DepositFlagged,
    Direction,
    Flagged,
    Match,
    SourcePosition,
    WithdrawalEvent,
)
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
class _Address:
    typed: str  # as the event carried it
    key: str | None  # normalized lookup key, e.g. "evm:0x..."; None when it could not be normalized
    failure: str | None  # reason when the address could not be normalized
    related: tuple[tuple[str, str], ...]  # (key, relation) of listed addresses related to it


@dataclass(slots=True)
class _Screenable:
    record: InputRecord
    schema_id: int
    direction: Direction
    event: WithdrawalEvent | DepositEvent
    addresses: tuple[_Address, ...]  # a withdrawal's destination, or every source address of a deposit


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
    direction: Direction
    severity: str | None
    event_timestamp_ms: int
    outcome: Outcome
    reason: str | None
    asset: str
    chain: str | None
    matches: Sequence[Match]
    usd_value: float | None
    action: str  # the policy's action (reject/hold/allow, freeze/review/accept)


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


@dataclass(frozen=True)
class DepositInput:
    """Deposits: the input topic they are read from, how they are decoded, and where their outputs go (decisions
    go to the one decisions topic, with direction "deposit")."""

    topic: str
    decoder: DepositDecoder
    flagged_encoder: RecordEncoder
    flagged: str = "deposits.flagged"
    dead_letter: str = "deposits.received.dlq"
    hold: str = "deposits.held"


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
        deposits: DepositInput | None = None,
        normalizer: Normalizer | None = None,
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
        screener_version: str | None = None,
        policy: Callable[[], Policy] = lambda: DEFAULT_POLICY,
    ) -> None:
        self.decoder = decoder
        self.decision_encoder = decision_encoder
        self.flagged_encoder = flagged_encoder
        self.topics = topics
        self.deposits = deposits
        self.instance_id = instance_id
        self.lookup = lookup
        self.normalize = normalizer or Normalizer()
        self.clock_us = clock_us
        self.screener_version = screener_version
        self.policy = policy  # read once per batch: a batch is decided under one policy

    def _is_deposit(self, record: InputRecord) -> bool:
        return self.deposits is not None and record.topic == self.deposits.topic

    def direction_of(self, record: InputRecord) -> Direction:
        """Which input a record came from (its topic)."""
        return Direction.DEPOSIT if self._is_deposit(record) else Direction.WITHDRAWAL

    def prepare(self, records: Sequence[InputRecord]) -> PreparedBatch:
        started = time.perf_counter()
        decoded: list[tuple[InputRecord, int, Direction, WithdrawalEvent | DepositEvent]] = []
        dead: list[tuple[InputRecord, DecodeError]] = []
        decode = self.decoder.decode
        deposits = self.deposits
        for record in records:
            try:
                if deposits is not None and record.topic == deposits.topic:
                    schema_id, deposit = deposits.decoder.decode(record.value)
                    decoded.append((record, schema_id, Direction.DEPOSIT, deposit))
                else:
                    schema_id, withdrawal = decode(record.value)
                    decoded.append((record, schema_id, Direction.WITHDRAWAL, withdrawal))
            except DecodeError as exc:
                dead.append((record, exc))
        normalized_at = time.perf_counter()
        screenable = [
            _Screenable(record, schema_id, direction, event, self._addresses(direction, event))
            for record, schema_id, direction, event in decoded
        ]
        done = time.perf_counter()
        return PreparedBatch(records, screenable, dead, normalized_at - started, done - normalized_at)

    def _addresses(self, direction: Direction, event: WithdrawalEvent | DepositEvent) -> tuple[_Address, ...]:
        normalize = self.normalize
        network = event["network"]
        if direction is Direction.WITHDRAWAL:
            typed_addresses: Sequence[str] = (event["destination_address"],)  # type: ignore[typeddict-item]
        else:
            # A UTXO transaction often spends several outputs of one address: each address is screened (and
            # reported) once, in the order the event lists them.
            typed_addresses = list(dict.fromkeys(event["source_addresses"]))  # type: ignore[typeddict-item]
        addresses = []
        for typed in typed_addresses:
            key, failure = normalize(network, typed)
            addresses.append(_Address(typed, key, failure, normalize.related(key) if key is not None else ()))
        return tuple(addresses)

    def complete(self, batch: PreparedBatch) -> CompletedBatch:
        """Look up, decide and encode. Raises LookupUnavailable (then nothing was decided)."""
        wanted: dict[str, None] = {}
        for item in batch.screenable:
            for address in item.addresses:
                if address.key is not None:
                    wanted[address.key] = None
                    for key, _relation in address.related:
                        wanted[key] = None
        keys = list(wanted)
        result: LookupResult | None = None
        if batch.screenable:
            # Even a batch of only unscreenable events checks the watchlist: every decision records the version.
            result = self.lookup(keys)
        started = time.perf_counter()
        context = _Context(
            version=result.version if result else None,
            digest=result.digest if result else None,
            matches_by_key=result.matches if result else {},
            overridable=result.overridable if result else frozenset(),
            decided_at=self.clock_us(),
            batch_size=len(batch.records),
            decode_us=int(batch.decode_seconds * 1e6),
            normalize_us=int(batch.normalize_seconds * 1e6),
            lookup_us=int(result.seconds * 1e6) if result else 0,
            policy=self.policy(),
        )
        outputs: list[OutputRecord] = []
        decided: list[DecidedEvent] = []
        for item in batch.screenable:
            verdicts = [self._verdict(address, context) for address in item.addresses]
            if item.direction is Direction.WITHDRAWAL:
                decided.append(self._withdrawal(item, verdicts[0], context, outputs))
            else:
                decided.append(self._deposit(item, verdicts, context, outputs))
        for record, error in batch.dead_letters:
            outputs.append(self.dead_letter(record, error))
        stage = {
            "decode": batch.decode_seconds,
            "normalize": batch.normalize_seconds,
            "lookup": result.seconds if result else 0.0,
            "decide": time.perf_counter() - started,
        }
        return CompletedBatch(outputs, decided, batch.dead_letters, context.version, result, stage)

    @staticmethod
    def _verdict(address: _Address, context: _Context) -> Verdict:
        if address.key is None:
            return unscreenable(address.failure or "invalid_address")
        if not context.matches_by_key:
            return decide(None, context.overridable)  # nothing of the batch is listed: the common case, no work
        return decide(collect_matches(address.key, address.related, context.matches_by_key), context.overridable)

    def _decision(
        self,
        item: _Screenable,
        *,
        did: str,
        verdict: Verdict,
        context: _Context,
        requested_at: int,
        source: SourcePosition,
    ) -> Decision:
        """The fields every decision has, the policy's choice included; the caller fills the address fields of its
        direction."""
        event = item.event
        record = item.record
        applied = _apply(context.policy, item, verdict)
        return {
            "decision_id": did,
            "direction": item.direction.value,
            "event_id": event["event_id"],
            "exchange_id": event["exchange_id"],
            "asset": event["asset"],
            "network": event["network"],
            "decision": verdict.outcome,  # a StrEnum: its value is the Avro symbol
            "reason": verdict.reason,
            "chain_family": None,
            "address": None,
            "address_key": None,
            "checked_keys": [],
            "sources": [],
            "severity": applied.severity,
            "action": applied.action.value,
            "policy_version": applied.policy_version,
            "policy_rule": applied.rule,
            "policy_overridden_rule": applied.overridden_rule,
            "shadow": [shadow.as_record() for shadow in applied.shadow],
            "matches": list(verdict.matches),
            "allowlisted": list(verdict.allowlisted),
            "overridden": list(verdict.overridden),
            "watchlist_version": context.version,
            "watchlist_digest": context.digest,
            "source": source,
            "timings": {
                "requested_at": requested_at,
                "event_timestamp": record.timestamp,
                "decided_at": context.decided_at,
                "batch_size": context.batch_size,
                "decode_us": context.decode_us,
                "normalize_us": context.normalize_us,
                "lookup_us": context.lookup_us,
            },
            "screener": self.instance_id,
            "screener_version": self.screener_version,
        }

    @staticmethod
    def _source(item: _Screenable) -> SourcePosition:
        record = item.record
        return {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "schema_id": item.schema_id,
        }

    def _withdrawal(
        self, item: _Screenable, verdict: Verdict, context: _Context, outputs: list[OutputRecord]
    ) -> DecidedEvent:
        event: WithdrawalEvent = item.event  # type: ignore[assignment]
        (address,) = item.addresses
        family = address.key.partition(":")[0] if address.key else None
        event_id = event["event_id"]
        did = decision_id(event_id, context.version)
        source = self._source(item)
        decision = self._decision(
            item, did=did, verdict=verdict, context=context, requested_at=event["requested_at"], source=source
        )
        decision["chain_family"] = family
        decision["address"] = address.typed
        decision["address_key"] = address.key
        decision["checked_keys"] = _checked(address)
        event_key = event_id.encode()
        outputs.append(OutputRecord(self.topics.decisions, event_key, self.decision_encoder.encode(decision)))
        usd: float | None = None
        if verdict.outcome is Outcome.FLAGGED and address.key and family and context.version is not None:
            usd_decimal = usd_value_of(event)
            usd = float(usd_decimal) if usd_decimal is not None else None
            flagged: Flagged = {
                "decision_id": did,
                "event_id": event_id,
                "severity": decision["severity"] or "low",
                "action": decision["action"],
                "policy_version": decision["policy_version"],
                "policy_rule": decision["policy_rule"],
                "summary": summarize(event["asset"], event["network"], decision["matches"]),
                "address_key": address.key,
                "chain_family": family,
                "matches": decision["matches"],
                "watchlist_version": context.version,
                "withdrawal": event,
                "source": source,
                "flagged_at": context.decided_at,
                "screener": self.instance_id,
                "screener_version": self.screener_version,
            }
            outputs.append(OutputRecord(self.topics.flagged, event_key, self.flagged_encoder.encode(flagged)))
        return _decided(
            decision,
            direction=Direction.WITHDRAWAL,
            verdict=verdict,
            item=item,
            family=family,
            usd=usd,
        )

    def _deposit(
        self, item: _Screenable, verdicts: list[Verdict], context: _Context, outputs: list[OutputRecord]
    ) -> DecidedEvent:
        deposits = self.deposits
        assert deposits is not None  # only deposit records are decoded as deposits
        event: DepositEvent = item.event  # type: ignore[assignment]
        verdict = combine(verdicts)
        event_id = event["event_id"]
        did = deposit_decision_id(event_id, context.version)
        source = self._source(item)
        decision = self._decision(
            item, did=did, verdict=verdict, context=context, requested_at=event["observed_at"], source=source
        )
        sources: list[AddressScreening] = [
            {
                "address": address.typed,
                "outcome": own.outcome.value,
                "reason": own.reason,
                "address_key": address.key,
                "checked_keys": _checked(address),
                "matches": list(own.matches),
            }
            for address, own in zip(item.addresses, verdicts, strict=True)
        ]
        families = sorted({address.key.partition(":")[0] for address in item.addresses if address.key})
        family = families[0] if len(families) == 1 else None
        decision["chain_family"] = family
        decision["sources"] = sources
        event_key = event_id.encode()
        outputs.append(OutputRecord(self.topics.decisions, event_key, self.decision_encoder.encode(decision)))
        usd: float | None = None
        if verdict.outcome is Outcome.FLAGGED and context.version is not None:
            usd_decimal = usd_value_of(event)
            usd = float(usd_decimal) if usd_decimal is not None else None
            flagged: DepositFlagged = {
                "decision_id": did,
                "event_id": event_id,
                "severity": decision["severity"] or "low",
                "action": decision["action"],
                "policy_version": decision["policy_version"],
                "policy_rule": decision["policy_rule"],
                "summary": summarize(event["asset"], event["network"], decision["matches"], deposit=True),
                "matches": decision["matches"],
                "sources": sources,
                "watchlist_version": context.version,
                "deposit": event,
                "source": source,
                "flagged_at": context.decided_at,
                "screener": self.instance_id,
                "screener_version": self.screener_version,
            }
            outputs.append(OutputRecord(deposits.flagged, event_key, deposits.flagged_encoder.encode(flagged)))
        return _decided(
            decision,
            direction=Direction.DEPOSIT,
            verdict=verdict,
            item=item,
            family=family,
            usd=usd,
        )

    def hold(self, batch: PreparedBatch, reason: str) -> CompletedBatch:
        """Fail-open mode: no decision at all (never `clear`); every decodable event goes to its hold topic as
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
        topic = self.deposits.hold if self.deposits and self._is_deposit(record) else self.topics.hold
        return OutputRecord(topic, record.key, record.value or b"", headers)

    def _source_headers(self, record: InputRecord) -> list[tuple[str, bytes]]:
        return [
            (DLQ_HEADER_TOPIC, record.topic.encode()),
            (DLQ_HEADER_PARTITION, str(record.partition).encode()),
            (DLQ_HEADER_OFFSET, str(record.offset).encode()),
            (DLQ_HEADER_TIMESTAMP, str(record.timestamp).encode()),
            (DLQ_HEADER_SCREENER, self.instance_id.encode()),
        ]

    def dead_letter(self, record: InputRecord, error: DecodeError) -> OutputRecord:
        """The original bytes, untouched, with the reason and the source position in headers; to the dead-letter
        topic of the record's input (withdrawals or deposits)."""
        headers = [
            *_own_headers(record),  # the producer's headers first (operators trace records by them), then ours
            (DLQ_HEADER_REASON, error.reason.value.encode()),
            (DLQ_HEADER_DETAIL, error.detail[:_DLQ_DETAIL_MAX].encode("utf-8", "replace")),
            *self._source_headers(record),
        ]
        topic = self.deposits.dead_letter if self.deposits and self._is_deposit(record) else self.topics.dead_letter
        return OutputRecord(topic, record.key, record.value or b"", headers)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every decision of one completed batch shares."""

    version: str | None
    digest: str | None
    matches_by_key: dict[str, list[Match]]
    overridable: frozenset[str]
    decided_at: int
    batch_size: int
    decode_us: int
    normalize_us: int
    lookup_us: int
    policy: Policy


def _checked(address: _Address) -> list[CheckedKey]:
    return [{"key": key, "relation": relation} for key, relation in address.related]


def _apply(policy: Policy, item: _Screenable, verdict: Verdict) -> Applied:
    """The policy's severity and action for one decision. The USD value is decoded only when a rule can use it."""
    direction = item.direction
    needs_usd = bool(verdict.matches) or policy.needs_details(direction, verdict.outcome)
    return apply_policy(
        policy,
        direction=direction,
        outcome=verdict.outcome,
        matches=verdict.matches,
        asset=item.event["asset"],
        usd_value=usd_value_of(item.event) if needs_usd else None,
    )


def _decided(
    decision: Decision,
    *,
    direction: Direction,
    verdict: Verdict,
    item: _Screenable,
    family: str | None,
    usd: float | None,
) -> DecidedEvent:
    return DecidedEvent(
        event_id=item.event["event_id"],
        decision_id=decision["decision_id"],
        direction=direction,
        severity=decision["severity"],
        event_timestamp_ms=item.record.timestamp,
        outcome=verdict.outcome,
        reason=verdict.reason,
        asset=item.event["asset"],
        chain=family,
        matches=decision["matches"],
        usd_value=usd,
        action=decision["action"] or "",
    )


def _own_headers(record: InputRecord) -> list[tuple[str, bytes]]:
    """The input record's own headers, unchanged (a header without a value is kept, with an empty one)."""
    return [(key, value or b"") for key, value in (record.headers or ())]


__all__ = [
    "BatchScreener",
    "CompletedBatch",
    "DeadLetterReason",
    "DecidedEvent",
    "DepositInput",
    "InputRecord",
    "Normalizer",
    "OutputRecord",
    "PreparedBatch",
    "Topics",
]
