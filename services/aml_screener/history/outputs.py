"""The history's Kafka outputs: RetroactiveMatch and Delisted records (and the indexer's dead letters), encoded in
the Confluent wire format with their schema ids, sent with the idempotent producer and waited for.

`HistoryOutputs.deliver` returns only when Kafka acknowledged every record of the call, and raises
`DeliveryFailed` otherwise: callers record progress (commit offsets, mark a version done) only after it returned,
so a record is never lost, at worst produced twice with the same id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message

from aml_screener.infra.kafka import producer_config
from aml_screener.infra.settings import Settings
from aml_screener.screener.codec import RecordEncoder
from aml_screener.screener.emitter import Emitter
from aml_screener.screener.pipeline import OutputRecord
from aml_screener.screener.schemas import SchemaCatalog, SchemaRepository

RETROACTIVE_MATCH = "aml_screener.history.RetroactiveMatch"
DELISTED = "aml_screener.history.Delisted"
# Flush slice while waiting for acknowledgements (the caller's heartbeat runs between slices).
_FLUSH_SLICE_SECONDS = 0.5


class DeliveryFailed(Exception):
    """Kafka did not acknowledge every record (refused, or not within the delivery timeout); nothing of the call may
    be recorded as done."""


@dataclass
class _Tracker:
    pending: int = 0
    failed: int = 0
    first_error: str | None = None

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        self.pending -= 1
        if error is not None:
            self.failed += 1
            self.first_error = self.first_error or str(error)


class HistoryOutputs:
    def __init__(
        self,
        settings: Settings,
        repository: SchemaRepository,
        catalog: SchemaCatalog,
        *,
        emitter: Emitter | None = None,
    ) -> None:
        self.settings = settings
        self.retroactive_topic = settings.history_retroactive_topic
        self.delisted_topic = settings.history_delisted_topic
        self.dead_letter_topic = settings.history_dead_letter_topic
        retro = catalog.current(RETROACTIVE_MATCH).schema
        delisted = catalog.current(DELISTED).schema
        self._retro = RecordEncoder(retro, repository.output_schema_id(f"{self.retroactive_topic}-value", retro))
        self._delisted = RecordEncoder(delisted, repository.output_schema_id(f"{self.delisted_topic}-value", delisted))
        self.emitter = emitter or Emitter(producer_config(settings))

    def retroactive(self, record: Mapping[str, Any]) -> OutputRecord:
        return OutputRecord(self.retroactive_topic, record["decision"]["event_id"].encode(), self._retro.encode(record))

    def delisted(self, record: Mapping[str, Any]) -> OutputRecord:
        return OutputRecord(self.delisted_topic, record["key"].encode(), self._delisted.encode(record))

    def deliver(self, outputs: Iterable[OutputRecord], heartbeat: Callable[[], None] = lambda: None) -> int:
        """Send and wait for every acknowledgement (bounded by the producer's delivery timeout); the count sent."""
        tracker = _Tracker()
        outputs = list(outputs)
        if not outputs:
            return 0
        tracker.pending = len(outputs)
        self.emitter.send(outputs, tracker.on_delivery)
        # librdkafka reports every message by message.timeout.ms (AML_KAFKA_DELIVERY_TIMEOUT_MS) at the latest; a
        # little more here covers the report's own way back.
        deadline = time.monotonic() + self.settings.kafka_delivery_timeout_ms / 1000 + 5
        while tracker.pending > 0 and time.monotonic() < deadline:
            heartbeat()
            self.emitter.flush(_FLUSH_SLICE_SECONDS)
        if tracker.pending > 0:
            raise DeliveryFailed(f"{tracker.pending} of {len(outputs)} records not acknowledged in time")
        if tracker.failed:
            raise DeliveryFailed(f"{tracker.failed} of {len(outputs)} records refused: {tracker.first_error}")
        return len(outputs)

    def close(self, timeout_seconds: float = 5.0) -> None:
        self.emitter.close(timeout_seconds)


def schema_catalog(settings: Settings) -> SchemaCatalog:
    return SchemaCatalog(Path(settings.schema_dir) if settings.schema_dir else None)
