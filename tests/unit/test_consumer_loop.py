"""The consumer loop (screener/service.py) driven through fakes of its ports: a consumer that replays a script of
poll results, an emitter that acknowledges (or refuses) outputs, a lookup that answers or is down. No Kafka, no
Redis: what is checked is what the loop does with what it is given — commits, pauses, readiness, re-sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import pytest
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from aml_screener.infra.settings import FailureMode, Settings
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.errors import LookupFailure, LookupUnavailable
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import OutputRecord
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED
from aml_screener.screener.service import Screener
from tests.pipeline_support import CATALOG, Record, batch_screener

TOPIC = "withdrawals.requested"
TP0 = TopicPartition(TOPIC, 0)
CLEAN = "0x52908400098527886e0f7030069857d2e4169ee7"


def withdrawal(offset: int) -> Record:
    entry = CATALOG.current(WITHDRAWAL_REQUESTED)
    value = EventEncoder(entry.schema, entry.schema_id).encode(
        {
            "event_id": f"e-{offset}",
            "exchange_id": "x",
            "account_id": "a",
            "asset": "ETH",
            "network": "ethereum",
            "destination_address": CLEAN,
            "destination_tag": None,
            "amount": Decimal(1),
            "usd_value": None,
            "requested_at": 1,
            "metadata": None,
        }
    )
    return Record(TOPIC, 0, offset, 1, b"k", value)


Step = dict[TopicPartition, list[Record]] | Exception


class FakeConsumer:
    """Plays `script` (one poll result or exception per poll), then empty polls; stops the screener once `until()`
    holds after the script (default: at once), or after 10 s (the test's assertions then say what went wrong)."""

    def __init__(self, script: Iterable[Step]) -> None:
        self.script = iter(script)
        self.until: Callable[[], bool] = lambda: True
        self.deadline = time.monotonic() + 10
        self.screener: Screener | None = None
        self.assigned = {TP0}
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.polls = 0
        self._held_back: Step | None = None
        self.after_poll: Callable[[int], None] = lambda count: None

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.listener = listener

    def topics(self) -> set[str]:
        return {TOPIC}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        self.after_poll(self.polls)
        if time.monotonic() > self.deadline:
            assert self.screener is not None
            self.screener.request_stop()  # the test's assertions say what did not happen in time
        step = self._held_back or next(self.script, None)
        self._held_back = None
        if isinstance(step, dict) and any(tp in self.paused for tp in step):
            self._held_back = step  # a paused partition delivers nothing; its records wait, as on a broker
            time.sleep(timeout_ms / 1000)
            return {}
        if step is None:
            assert self.screener is not None
            if self.until() or time.monotonic() > self.deadline:
                self.screener.request_stop()
            time.sleep(timeout_ms / 1000)
            return {}
        if isinstance(step, Exception):
            raise step
        return {tp: records for tp, records in step.items() if tp not in self.paused}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit_async(self, offsets: dict[TopicPartition, OffsetAndMetadata], callback: Any = None) -> None:
        self.commits.append(dict(offsets))
        if callback is not None:
            callback(offsets, None)

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(dict(offsets))

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return 0

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def close(self, autocommit: bool = False) -> None:
        pass


class FakeEmitter:
    """Acknowledges every output on the next poll/flush, or refuses the first `refuse` outputs once; with
    `slow_flushes`, reports arrive only after that many flushes (acknowledgements slower than the loop waits)."""

    def __init__(self, refuse: int = 0, slow_flushes: int = 0) -> None:
        self.sent: list[OutputRecord] = []
        self.pending: list[tuple[OutputRecord, Callable[[Any, Any], None]]] = []
        self.refuse = refuse
        self.slow_flushes = slow_flushes
        self.flushes = 0

    def send(self, outputs: Iterable[OutputRecord], on_delivery: Callable[[Any, Any], None]) -> int:
        batch = list(outputs)
        self.sent.extend(batch)
        self.pending.extend((output, on_delivery) for output in batch)
        return len(batch)

    def poll(self, timeout_seconds: float = 0.0) -> None:
        if self.flushes < self.slow_flushes:
            return
        pending, self.pending = self.pending, []
        for output, callback in pending:
            error = None
            if self.refuse:
                self.refuse -= 1
                error = "refused: NOT_ENOUGH_REPLICAS"
            callback(error, _Message(output))

    def flush(self, timeout_seconds: float = 0.0) -> bool:
        self.flushes += 1
        self.poll()
        return not self.pending

    def close(self, timeout_seconds: float = 0.0) -> int:
        return 0


class _Message:
    def __init__(self, output: OutputRecord) -> None:
        self._output = output

    def topic(self) -> str:
        return self._output.topic

    def key(self) -> bytes | None:
        return self._output.key

    def value(self) -> bytes:
        return self._output.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._output.headers


class FakeLookup:
    """Answers, except for the calls (1-based) in `down`."""

    def __init__(self, down: Iterable[int] = ()) -> None:
        self.down = set(down)
        self.calls = 0

    def lookup(self, keys: Sequence[str]) -> LookupResult:
        self.calls += 1
        if self.calls in self.down:
            raise LookupUnavailable(LookupFailure.REDIS_UNAVAILABLE, "connection refused")
        return LookupResult("v1", 10, {}, 0.0)

    def check(self) -> LookupResult:
        return self.lookup(())


def make(
    script: Iterable[Step],
    *,
    lookup: FakeLookup | None = None,
    emitter: FakeEmitter | None = None,
    mode: FailureMode = FailureMode.CLOSED,
    max_inflight_batches: int = 4,
) -> tuple[Screener, FakeConsumer, FakeEmitter, ServiceState, Metrics]:
    settings = Settings(
        kafka_input_topic=TOPIC,
        lookup_retry_max_seconds=0.2,
        kafka_poll_timeout_ms=1,
        watchlist_failure_mode=mode,
        shutdown_timeout_seconds=1,
        max_inflight_batches=max_inflight_batches,
    )
    consumer = FakeConsumer(script)
    emitter = emitter or FakeEmitter()
    lookup = lookup or FakeLookup()
    metrics = Metrics(CollectorRegistry())
    state = ServiceState()
    screener = Screener(
        settings=settings,
        consumer=consumer,
        emitter=emitter,  # type: ignore[arg-type]
        batch_screener=batch_screener(lookup.lookup),
        lookup=lookup,
        metrics=metrics,
        state=state,
    )
    consumer.screener = screener
    return screener, consumer, emitter, state, metrics


def ready_gauge(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("aml_screener_ready") or 0.0


def test_a_processed_batch_is_committed_after_its_outputs_are_acknowledged() -> None:
    screener, consumer, emitter, _state, _ = make([{TP0: [withdrawal(0), withdrawal(1)]}])
    assert screener.run() == 0
    assert len(emitter.sent) == 2 and {o.topic for o in emitter.sent} == {"decisions"}
    assert consumer.commits and consumer.commits[-1] == {TP0: OffsetAndMetadata(2, "", -1)}
    assert screener.records_done == 2


def test_poll_errors_on_an_idle_topic_do_not_leave_the_screener_not_ready() -> None:
    """Issue 12: five poll errors spread over time turned readiness off, and on a quiet topic only a processed
    batch (or a watchlist recovery) turned it back on: a broker blip left an idle screener not ready for good."""
    blip = [KafkaError("NodeNotReadyError") for _ in range(5)]
    readiness: list[tuple[int, bool, float]] = []
    screener, consumer, _emitter, state, metrics = make(blip)
    consumer.after_poll = lambda count: readiness.append((count, state.is_ready(), ready_gauge(metrics)))
    consumer.until = state.is_ready  # the topic stays idle: nothing but empty polls from here on
    assert screener.run() == 0
    assert (6, False, 0.0) in readiness, "after five consecutive errors the screener reports not ready"
    assert readiness[-1][1:] == (True, 1.0), "once polls succeed again for a while, it is ready again, gauge too"


def test_a_watchlist_outage_pauses_decides_nothing_and_resumes_by_itself() -> None:
    # Call 1 is the start-up check; the batch's lookups 2 to 4 fail; the fifth answers.
    lookup = FakeLookup(down={2, 3, 4})
    screener, consumer, emitter, state, metrics = make([{TP0: [withdrawal(0)]}], lookup=lookup)
    seen: list[tuple[float, frozenset[TopicPartition], int]] = []
    consumer.after_poll = lambda count: seen.append(
        (ready_gauge(metrics), frozenset(consumer.paused), len(emitter.sent))
    )
    consumer.until = lambda: bool(consumer.commits)
    assert screener.run() == 0
    assert (0.0, frozenset({TP0}), 0) in seen, "while failing closed: not ready, partitions paused, nothing sent"
    assert lookup.calls == 5 and len(emitter.sent) == 1
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(1, "", -1)}, "decided once the watchlist answered"
    assert seen[-1][:2] == (1.0, frozenset()) and state.is_ready(), "ready and resumed"


def test_refused_outputs_are_resent_before_anything_is_committed() -> None:
    screener, consumer, emitter, _state, metrics = make(
        [{TP0: [withdrawal(0)]}, *({} for _ in range(5))], emitter=FakeEmitter(refuse=1)
    )
    assert screener.run() == 0
    assert len(emitter.sent) == 2, "the refused decision was sent again"
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(1, "", -1)}
    assert metrics.registry.get_sample_value(
        "aml_screener_produce_errors_total", {"topic": "decisions"}
    ) == pytest.approx(1.0)


def test_fail_open_mode_holds_events_unscreened_and_probes_until_the_watchlist_answers() -> None:
    # Call 1 is the start-up check; the batch's lookup (2) and the first two probes fail; the third probe answers.
    lookup = FakeLookup(down={2, 3, 4})
    screener, consumer, emitter, state, metrics = make([{TP0: [withdrawal(0)]}], lookup=lookup, mode=FailureMode.OPEN)
    consumer.until = lambda: lookup.calls >= 5
    assert screener.run() == 0
    assert [o.topic for o in emitter.sent] == ["withdrawals.held"], "held unscreened, never decided"
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(1, "", -1)}
    assert state.is_ready() and not state.fail_open, "the bypass ended with no further traffic"
    assert metrics.registry.get_sample_value("aml_screener_fail_open_active") == 0.0


def test_a_full_window_pauses_consumption_only_until_the_acknowledgements_arrive() -> None:
    """Found on real Kafka (issue 11): when acknowledgements took longer than one wait, the loop paused every
    partition to keep the group alive and returned with them still paused; nothing resumed them."""
    emitter = FakeEmitter(slow_flushes=3)
    screener, consumer, emitter, _state, _ = make(
        [{TP0: [withdrawal(0)]}, {TP0: [withdrawal(1)]}], emitter=emitter, max_inflight_batches=1
    )
    consumer.until = lambda: len(consumer.commits) >= 2
    assert screener.run() == 0
    assert consumer.commits[-1] == {TP0: OffsetAndMetadata(2, "", -1)}, "the second batch was consumed and decided"
    assert not consumer.paused


def test_a_long_wait_for_acknowledgements_is_logged_once_per_batch(monkeypatch, caplog) -> None:
    """A slow or stuck producer must not look like an idle topic: the wait is logged (consumption waits paused)."""
    monkeypatch.setattr("aml_screener.screener.service._SLOW_ACK_SECONDS", 0.0)
    screener, consumer, _emitter, _state, _ = make(
        [{TP0: [withdrawal(0)]}], emitter=FakeEmitter(slow_flushes=4), max_inflight_batches=1
    )
    consumer.until = lambda: bool(consumer.commits)
    with caplog.at_level("WARNING", logger="aml_screener.screener.service"):
        assert screener.run() == 0
    slow = [r for r in caplog.records if r.getMessage().startswith("outputs not acknowledged by Kafka yet")]
    assert len(slow) == 1 and slow[0].pending == 1
