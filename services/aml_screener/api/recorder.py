"""Recording the API's withdrawal decisions on the decisions (and flagged) topics, as the stream would.

The outputs the stream's pipeline encoded go out through the stream's Emitter (the idempotent producer, acks=all);
the request waits, without blocking the event loop, until Kafka acknowledged every one of them, or answers 503 after
AML_API_RECORD_TIMEOUT_SECONDS (then the record may still arrive later: the stream's own decision carries the same
decision id, so a reader counts it once). A thread serves the producer's delivery reports.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message

from aml_screener.screener.emitter import Emitter
from aml_screener.screener.pipeline import OutputRecord

# How long one poll of the producer waits for delivery reports: bounds how late stop() is noticed, not latency
# (a report is served as soon as it arrives).
_POLL_SECONDS = 0.1


class NotRecorded(Exception):
    """Kafka did not acknowledge a recorded decision (refused, or not in time)."""


class DecisionRecorder:
    def __init__(self, emitter: Emitter, *, timeout_seconds: float) -> None:
        self.emitter = emitter
        self.timeout_seconds = timeout_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="api-recorder", daemon=True)

    def start(self) -> DecisionRecorder:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.emitter.poll(_POLL_SECONDS)

    async def record(self, outputs: Sequence[OutputRecord]) -> None:
        """Send and wait for every acknowledgement; NotRecorded when one fails or the time is up."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        remaining = len(outputs)
        lock = threading.Lock()

        def settle(problem: str | None) -> None:
            if not done.done():
                done.set_result(problem)

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            nonlocal remaining
            del message
            with lock:
                remaining -= 1
                left = remaining
            if error is not None:
                loop.call_soon_threadsafe(settle, str(error))
            elif left == 0:
                loop.call_soon_threadsafe(settle, None)

        self.emitter.send(outputs, on_delivery)
        try:
            problem = await asyncio.wait_for(done, self.timeout_seconds)
        except TimeoutError:
            raise NotRecorded(f"not acknowledged by Kafka within {self.timeout_seconds} s") from None
        if problem is not None:
            raise NotRecorded(f"Kafka refused it: {problem}")

    def close(self, timeout_seconds: float) -> int:
        """Stop serving reports and flush what is queued; how many outputs were not delivered in time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)
        return self.emitter.close(timeout_seconds)
