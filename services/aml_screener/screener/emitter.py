"""Sending a batch's outputs to Kafka and knowing, per record, whether Kafka acknowledged it.

`send` queues every output with the idempotent producer; `flush` waits for delivery reports; `take_failed` returns
the outputs Kafka did *not* acknowledge (delivery error, or message.timeout.ms elapsed). The consumer loop commits
input offsets only when every report is in and none failed, and re-sends what failed otherwise: at-least-once,
never at-most-once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from aml_screener.screener.pipeline import OutputRecord

log = logging.getLogger(__name__)

# When librdkafka's local queue is full, serve delivery reports for this long before trying again.
_QUEUE_FULL_BACKOFF_SECONDS = 0.01


class Emitter:
    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(
            {
                **config,
                "error_cb": self._on_error,
                # librdkafka's own log lines go through Python logging (JSON like the rest); idle connection
                # closes by the broker are routine and not logged.
                "logger": logging.getLogger("librdkafka"),
                "log.connection.close": False,
            }
        )
        self._failed: list[tuple[OutputRecord, str]] = []
        self._acked = 0

    def _on_error(self, error: KafkaError) -> None:
        # Client-level errors (broker down, all brokers down...). librdkafka retries by itself; per-message
        # outcomes still arrive through delivery reports, which is what decides commits.
        log.warning("kafka producer error", extra={"kafka_error": str(error), "fatal": error.fatal()})

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self._acked += 1
            return
        headers = cast("list[tuple[str, bytes]] | None", message.headers())
        record = OutputRecord(message.topic() or "", message.key(), message.value() or b"", headers)
        self._failed.append((record, str(error)))

    def send(self, outputs: Iterable[OutputRecord]) -> int:
        produce = self._producer.produce
        on_delivery = self._on_delivery
        count = 0
        for output in outputs:
            while True:
                try:
                    produce(
                        output.topic,
                        output.value,
                        output.key,
                        headers=output.headers,  # type: ignore[arg-type]  # list[tuple[str, bytes]] is accepted
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    self._producer.poll(_QUEUE_FULL_BACKOFF_SECONDS)
            count += 1
        return count

    def flush(self, timeout_seconds: float) -> bool:
        """Wait up to `timeout_seconds` for delivery reports; True when every queued output has its report."""
        return int(self._producer.flush(timeout_seconds)) == 0

    def take_failed(self) -> list[tuple[OutputRecord, str]]:
        """Outputs Kafka reported as not delivered since the last call (to be re-sent), with the error."""
        failed, self._failed = self._failed, []
        return failed

    def in_flight(self) -> int:
        return len(self._producer)

    def close(self, timeout_seconds: float) -> int:
        """Flush what is queued; return how many outputs were not delivered in time."""
        return int(self._producer.flush(timeout_seconds))
