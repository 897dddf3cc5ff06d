"""The obligations topic: the reporter's durable state, a compacted Kafka topic (key: obligation id, value: the
obligation as JSON with its status).

- `ensure_compacted` checks it at start (and creates it, compacted, when missing): a topic with the default
  `cleanup.policy=delete` would drop obligations after its retention time.
- `ObligationLog` reads it from the beginning to its end (the state at start: the latest value of every key),
  follows it afterwards (`report file` and any other writer change values), and writes new values with the
  idempotent producer, reporting which ones Kafka acknowledged. Readers assign every partition themselves (no
  consumer group): each process wants the whole topic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ConfigResource,
)
from confluent_kafka.cimpl import NewTopic
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.metrics import ReportingMetrics
from aml_screener.reporting.obligations import Obligation

log = logging.getLogger(__name__)

COMPACT = "compact"
# One partition: obligations are few (one per sanctions reject/freeze), and one log keeps every change in order.
PARTITIONS = 1
# Admin requests (metadata, describe, create) against a healthy cluster take milliseconds; 15 s covers a controller
# election at start-up.
ADMIN_TIMEOUT_SECONDS = 15.0
# How long one poll of the topic waits while reading it to its end.
_CATCH_UP_POLL_MS = 200
# Extra time, beyond the producer's own delivery timeout, to wait for the last delivery reports: after that every
# write has a definite outcome (acknowledged, or failed and never to be written later).
_DELIVERY_MARGIN_SECONDS = 5.0


# Answers that no retry changes: the operator must grant the permission (or manage the topic), or fix the cluster's
# topic policy.
_REFUSED = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED})
_UNCREATABLE = frozenset(
    {KafkaError.POLICY_VIOLATION, KafkaError.INVALID_REPLICATION_FACTOR, KafkaError.INVALID_CONFIG}
)


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return int(error.code()) if isinstance(error, KafkaError) else None


class ObligationsTopicError(Exception):
    """The obligations topic cannot hold obligations safely (not compacted, cannot be created, has no partitions).
    The operator must act: the message says what."""


def ensure_compacted(admin: AdminClient, topic: str, *, timeout: float = ADMIN_TIMEOUT_SECONDS) -> str:
    """Create `topic` compacted when it is missing; refuse one whose cleanup.policy is not exactly `compact`.
    Returns "created" or "exists"."""
    metadata = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
    missing = metadata is None or (
        metadata.error is not None and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    )
    if missing:
        new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=-1, config={"cleanup.policy": COMPACT})
        try:
            admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[topic].result(timeout)
        except KafkaException as exc:
            code = _code(exc)
            if code in _REFUSED or code in _UNCREATABLE:
                raise ObligationsTopicError(
                    f"AML_KAFKA_OBLIGATIONS_TOPIC {topic!r} does not exist and could not be created ({exc}): create "
                    f"it with cleanup.policy={COMPACT}, or allow this client to create topics"
                ) from None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:  # created meanwhile: check it like any other
                raise  # a timeout, a broker down: retried by the caller
        else:
            log.info("obligations topic created", extra={"topic": topic, "cleanup_policy": COMPACT})
            return "created"
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    except KafkaException as exc:
        if _code(exc) in _REFUSED:
            raise ObligationsTopicError(
                f"not allowed to read the configuration of AML_KAFKA_OBLIGATIONS_TOPIC {topic!r} ({exc}): grant "
                "DescribeConfigs on it, or create it compacted yourself and set AML_REPORTING_MANAGE_TOPIC=false"
            ) from None
        raise  # anything else (a timeout, a broker down) is retried by the caller
    policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else None
    if policy != COMPACT:
        raise ObligationsTopicError(
            f"AML_KAFKA_OBLIGATIONS_TOPIC {topic!r} has cleanup.policy={policy}: obligations would be deleted when "
            f"they age out. Set cleanup.policy={COMPACT} (kafka-configs --alter --entity-type topics --entity-name "
            f"{topic} --add-config cleanup.policy={COMPACT})"
        )
    return "exists"


class ObligationLog:
    """Reads (all partitions, from the beginning) and writes the obligations topic."""

    def __init__(
        self, topic: str, consumer: KafkaConsumer, producer: Producer, metrics: ReportingMetrics | None = None
    ) -> None:
        self.topic = topic
        self._consumer = consumer
        self._producer = producer
        self._metrics = metrics
        self._partitions: list[TopicPartition] = []

    def assign(self, timeout: float = ADMIN_TIMEOUT_SECONDS) -> None:
        """Assign every partition of the topic and start from the beginning. ObligationsTopicError when the topic
        does not exist (its metadata stays unknown for `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        partitions = self._consumer.partitions_for_topic(self.topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise ObligationsTopicError(
                    f"AML_KAFKA_OBLIGATIONS_TOPIC {self.topic!r} does not exist (or this client may not describe it): "
                    "`aml-screener report serve` creates it compacted at its first start"
                )
            time.sleep(0.2)  # metadata is refreshed in the background; a new topic appears within a second
            self._consumer.topics()  # forces a metadata refresh
            partitions = self._consumer.partitions_for_topic(self.topic)
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        self._consumer.seek_to_beginning(*self._partitions)

    def catch_up(self, book: ObligationBook, timeout: float) -> int:
        """Read every record written before this call into `book`; returns how many. TimeoutError when the end is
        not reached within `timeout` seconds."""
        end = self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout
        count = 0
        while any(self._consumer.position(tp) < end[tp] for tp in self._partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {self.topic} to its end took longer than {timeout:.0f} s")
            count += self.poll(book, _CATCH_UP_POLL_MS)
        return count

    def poll(self, book: ObligationBook, timeout_ms: int = 0) -> int:
        """Apply what arrived since the last poll to `book`; returns how many records."""
        count = 0
        for records in self._consumer.poll(timeout_ms=timeout_ms).values():
            for record in records:
                count += 1
                self._apply(book, record)
        return count

    def _apply(self, book: ObligationBook, record: Any) -> None:
        key = record.key.decode("utf-8", "replace") if record.key is not None else ""
        if record.value is None:
            log.warning("obligation deleted (tombstone)", extra={"obligation_id": key, "offset": record.offset})
            book.apply(key, None)
            return
        try:
            obligation = Obligation.from_json(record.value)
        except ValidationError as exc:
            self._unreadable(record, f"not an obligation: {exc.error_count()} validation error(s): {exc.errors()[0]}")
            return
        if obligation.obligation_id != key:
            self._unreadable(record, f"key {key!r} is not the obligation's id {obligation.obligation_id!r}")
            return
        book.apply(key, obligation)

    def _unreadable(self, record: Any, detail: str) -> None:
        log.error(
            "record of the obligations topic skipped",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset, "detail": detail},
        )
        if self._metrics is not None:
            self._metrics.unreadable.labels(record.topic).inc()

    def write(self, obligations: Sequence[Obligation], delivery_timeout: float) -> dict[str, str | None]:
        """Write each obligation (its id as key); wait until every write has its delivery report. Returns
        obligation id -> None (acknowledged) or the error. After this returns nothing of this call is written
        later, so a failed write can be retried without a stale value landing after a newer one."""
        outcome: dict[str, str | None] = {}

        def delivered(error: KafkaError | None, message: Message) -> None:
            key = message.key()
            if key is not None:
                outcome[key.decode()] = None if error is None else str(error)

        for obligation in obligations:
            self._producer.produce(
                self.topic, obligation.to_json(), obligation.obligation_id.encode(), on_delivery=delivered
            )
        self._producer.flush(delivery_timeout + _DELIVERY_MARGIN_SECONDS)
        return {o.obligation_id: outcome.get(o.obligation_id, "no delivery report in time") for o in obligations}

    def close(self) -> None:
        self._consumer.close(autocommit=False)
        self._producer.flush(_DELIVERY_MARGIN_SECONDS)
