"""Sending a batch's outputs to Kafka and knowing, per record, whether Kafka acknowledged it.

`send` queues every output of a batch with the idempotent producer and a per-batch delivery callback; `poll` and
`flush` serve delivery reports. A report with an error (broker refusal, or message.timeout.ms elapsed) means Kafka
did *not* acknowledge the output: the consumer loop re-sends it and never commits input offsets past it, so
delivery is at-least-once, never at-most-once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

from confluent_kafka import KafkaError, Message, Producer

from aml_screener.screener.pipeline import OutputRecord

log = logging.getLogger(__name__)

# When librdkafka's local queue is full, serve delivery reports for this long before trying again.
_QUEUE_FULL_BACKOFF_SECONDS = 0.01


DeliveryCallback = Callable[[KafkaError | None, Message], None]


def output_of(message: Message) -> OutputRecord:
    """The OutputRecord a delivery report is about (to re-send it)."""
    headers = cast("list[tuple[str, bytes]] | None", message.headers())
    return OutputRecord(message.topic() or "", message.key(), message.value() or b"", headers)


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

    def _on_error(self, error: KafkaError) -> None:
        # Client-level errors (broker down, all brokers down...). librdkafka retries by itself; per-message
        # outcomes still arrive through delivery reports, which is what decides commits.
        log.warning("kafka producer error", extra={"kafka_error": str(error), "fatal": error.fatal()})

    def send(self, outputs: Iterable[OutputRecord], on_delivery: DeliveryCallback) -> int:
        """Queue every output; `on_delivery(error, message)` is called once per output from `poll`/`flush`."""
        produce = self._producer.produce
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

    def poll(self, timeout_seconds: float = 0.0) -> None:
        """Serve the delivery reports that have arrived (calls the callbacks in this thread)."""
        self._producer.poll(timeout_seconds)

    def flush(self, timeout_seconds: float) -> bool:
        """Wait up to `timeout_seconds` for delivery reports; True when every queued output has its report."""
        return int(self._producer.flush(timeout_seconds)) == 0

    def in_flight(self) -> int:
        return len(self._producer)

    def close(self, timeout_seconds: float) -> int:
        """Flush what is queued; return how many outputs were not delivered in time."""
        return int(self._producer.flush(timeout_seconds))
