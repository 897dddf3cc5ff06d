"""`aml-screener replay`: re-screen a range of the input topics against a chosen watchlist version and action policy
into a separate topic, deterministically, for audits ("what did we decide, and would we decide the same today?")
and for trying a candidate list or policy before it goes live.

The same pipeline as `aml-screener run` (screener/pipeline.py, built by screener/app.batch_screener) with what
varies from run to run pinned:
- the watchlist: one version (WatchlistLookup pinned to it), not whatever is active;
- the time: every decision's ``decided_at`` is that version's activation time, and the measured stage timings
  (decode, normalize, lookup) are recorded as 0;
- the batches: each partition's records in offset order, ``batch_size`` at a time, partitions in ascending order;
- the instance: ``screener`` is "replay".
Decision ids are already deterministic (event id + watchlist version). So the same input range, watchlist version,
policy and software version give byte-identical decisions (values and keys, in the same order). Only decisions are
written (the flagged events, dead letters and holds of the live pipeline are not: a decision carries its matches
and action); records the screener cannot decode are counted and skipped.

The range: ``--from``/``--to`` as times (the records' Kafka timestamps, via offsets_for_times) or offsets (the
same for every partition); the end is exclusive and is fixed when the replay starts (records appended later are
not read). Nothing is committed: the replay reads with assign(), no consumer group.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import KafkaException, Producer
from kafka import KafkaConsumer, TopicPartition

from aml_screener.infra.kafka import consumer_config, producer_config
from aml_screener.infra.redis_client import redis_client
from aml_screener.infra.settings import Settings
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.app import batch_screener, output_schema_ids, schema_repository
from aml_screener.screener.lookup import LookupResult, WatchlistLookup
from aml_screener.screener.pipeline import InputRecord
from aml_screener.screener.schemas import SchemaCatalog
from aml_screener.screening.policy import Policy
from aml_screener.watchlist.store import WatchlistStore

log = logging.getLogger(__name__)

REPLAY_INSTANCE = "replay"
# How long one fetch waits for records before the range counts as read to its end (the end offsets were fixed at
# the start, so an empty poll before reaching them means the broker is slow, not that the range is done).
_POLL_MS = 500
# A replay gives up when no record of the range arrived for this long (a partition offline, a lost broker).
_STALL_SECONDS = 60.0
# Every produced decision is waited for (acknowledged) before the replay reports success.
_FLUSH_SECONDS = 60.0


class ReplayError(Exception):
    """The replay cannot run as asked (unknown version, output topic clash, unreachable Kafka): the message says."""


@dataclass(frozen=True)
class Position:
    """Where to start or stop: a time (epoch ms of the records' timestamps) or an offset; None = the edge."""

    time_ms: int | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> Position:
        if text is None:
            return cls()
        if text.isdigit():
            return cls(offset=int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ReplayError(f"{text!r} is neither an offset nor an ISO 8601 time") from None
        if moment.tzinfo is None:
            raise ReplayError(f"{text!r} has no time zone (add Z or +00:00)")
        return cls(time_ms=int(moment.timestamp() * 1000))


@dataclass
class ReplayResult:
    version: str
    policy_version: str
    records: int = 0
    decisions: int = 0
    undecodable: int = 0
    ranges: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # "topic:partition" -> [start, end)


def _offsets(
    consumer: KafkaConsumer, partitions: Sequence[TopicPartition], position: Position, *, start: bool
) -> dict[TopicPartition, int]:
    beginning = consumer.beginning_offsets(list(partitions))
    end = consumer.end_offsets(list(partitions))
    if position.offset is not None:
        return {tp: min(max(position.offset, beginning[tp]), end[tp]) for tp in partitions}
    if position.time_ms is not None:
        found = consumer.offsets_for_times(dict.fromkeys(partitions, position.time_ms))
        return {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in partitions}
    return dict(beginning if start else end)


def read_range(
    consumer: KafkaConsumer, topics: Sequence[str], start: Position, stop: Position, result: ReplayResult
) -> Iterator[list[InputRecord]]:
    """Each partition's records in [start, stop), in offset order, partition by partition (ascending topic and
    partition), as lists in the order read."""
    import time  # noqa: PLC0415 - only the stall clock uses it

    partitions: list[TopicPartition] = []
    for topic in topics:
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise ReplayError(f"input topic {topic!r} does not exist or has no partitions")
        partitions.extend(TopicPartition(topic, partition) for partition in sorted(known))
    first = _offsets(consumer, partitions, start, start=True)
    last = _offsets(consumer, partitions, stop, start=False)
    for tp in partitions:
        begin, end = first[tp], last[tp]
        result.ranges[f"{tp.topic}:{tp.partition}"] = (begin, max(begin, end))
        if end <= begin:
            continue
        consumer.assign([tp])
        consumer.seek(tp, begin)
        position = begin
        waited_since = time.monotonic()
        while position < end:
            polled = consumer.poll(timeout_ms=_POLL_MS).get(tp, [])
            records = [record for record in polled if record.offset < end]
            if not polled:
                if time.monotonic() - waited_since > _STALL_SECONDS:
                    raise ReplayError(f"{tp.topic}:{tp.partition}: no record for {_STALL_SECONDS:.0f} s at {position}")
                continue
            waited_since = time.monotonic()
            position = polled[-1].offset + 1
            if records:
                yield records


def replay(
    settings: Settings,
    *,
    output_topic: str,
    version: str | None,
    policy: Policy,
    start: Position,
    stop: Position,
    batch_size: int = 500,
    progress: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    """Run one replay to its end; every decision is acknowledged by Kafka when this returns."""
    live = {
        settings.kafka_decisions_topic,
        settings.kafka_flagged_topic,
        settings.kafka_deposit_flagged_topic,
        *settings.input_topics,
    }
    if output_topic in live:
        raise ReplayError(f"output topic {output_topic!r} is a live topic of the screener: replay into another one")
    client = redis_client(settings)
    keys = WatchlistKeys(settings.watchlist_key_prefix)
    store = WatchlistStore(client, keys)
    pinned = version or store.active_version()
    if pinned is None:
        raise ReplayError("no watchlist version is active; name one with --watchlist-version")
    meta = store.meta(pinned)
    if meta is None:
        raise ReplayError(
            f"watchlist version {pinned} is not in Redis (older versions are garbage-collected; sync a candidate "
            "list under its own AML_WATCHLIST_KEY_PREFIX to replay against it)"
        )
    decided_at_us = round(meta.created_at * 1_000_000)
    lookup = WatchlistLookup(client, keys, pinned=pinned)

    def pinned_lookup(address_keys: Sequence[str]) -> LookupResult:
        return dataclasses.replace(lookup.lookup(address_keys), seconds=0.0)  # measured time: not part of a replay

    catalog = SchemaCatalog()
    repository = schema_repository(settings, catalog)
    ids = output_schema_ids(settings, repository, catalog)
    screener = batch_screener(
        settings,
        repository,
        catalog,
        ids,
        lookup=pinned_lookup,
        policy=lambda: policy,
        instance_id=REPLAY_INSTANCE,
        clock_us=lambda: decided_at_us,
    )
    config = {**consumer_config(settings), "group_id": None, "enable_auto_commit": False}
    consumer = KafkaConsumer(**config)
    producer = Producer(producer_config(settings))
    result = ReplayResult(pinned, policy.version)
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    try:
        for records in read_range(consumer, list(settings.input_topics), start, stop, result):
            for offset in range(0, len(records), batch_size):
                batch = records[offset : offset + batch_size]
                prepared = screener.prepare(batch)
                prepared.decode_seconds = prepared.normalize_seconds = 0.0  # measured times: not part of a replay
                completed = screener.complete(prepared)
                for output in completed.outputs:
                    if output.topic != settings.kafka_decisions_topic:
                        continue  # flagged events and dead letters belong to the live pipeline
                    _produce(producer, output_topic, output.key, output.value, delivered)
                    result.decisions += 1
                result.records += len(batch)
                result.undecodable += len(completed.dead_letters)
            if progress is not None:
                progress(result)
        remaining = producer.flush(_FLUSH_SECONDS)
    except KafkaException as exc:
        raise ReplayError(f"Kafka: {exc}") from None
    finally:
        consumer.close()
    if remaining or failures:
        raise ReplayError(f"{remaining} decision(s) not acknowledged; delivery errors: {failures[:3]}")
    return result


def _produce(
    producer: Producer, topic: str, key: bytes | None, value: bytes, delivered: Callable[[object, object], None]
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=delivered)
        except BufferError:  # the local queue is full: wait for acknowledgements to make room
            producer.poll(1.0)
            continue
        producer.poll(0)
        return
