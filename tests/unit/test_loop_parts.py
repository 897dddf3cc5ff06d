"""The consumer loop's parts, each alone: the acknowledgement window, the watchlist gate, the loop's error runs and
the readiness they share. Fake clocks, no Kafka, no Redis."""

from __future__ import annotations

from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from aml_screener.infra.settings import FailureMode
from aml_screener.screener.ack_window import AcknowledgementWindow, InFlightBatch, next_offsets
from aml_screener.screener.errors import LookupFailure, LookupUnavailable
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.loop_errors import LoopErrors
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import CompletedBatch, OutputRecord
from aml_screener.screener.watchlist_gate import WatchlistGate
from tests.pipeline_support import Record

A0, A1 = TopicPartition("in", 0), TopicPartition("in", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Message:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None


def batch(*records: Record, outputs: int = 1) -> InFlightBatch:
    return InFlightBatch(next_offsets(records), CompletedBatch([], [], [], "v", None), len(records), 0.0, outputs)


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def probe(state: ServiceState) -> dict:
    """What /readyz says (read through a function: the state changes under the calls the tests make)."""
    return state.snapshot()


# --------------------------------------------------------------------------------------------------------
# Acknowledgement window
# --------------------------------------------------------------------------------------------------------


def test_next_offsets_are_one_past_the_highest_record_per_partition() -> None:
    records = [Record("in", 0, 7, 1, None, b""), Record("in", 0, 5, 1, None, b""), Record("in", 1, 2, 1, None, b"")]
    assert next_offsets(records) == {A0: OffsetAndMetadata(8, "", -1), A1: OffsetAndMetadata(3, "", -1)}


def test_only_the_acknowledged_prefix_is_released_in_send_order() -> None:
    window = AcknowledgementWindow()
    first, second = batch(Record("in", 0, 1, 1, None, b"")), batch(Record("in", 0, 2, 1, None, b""))
    window.add(first)
    window.add(second)
    second.on_delivery(None, Message("d"))
    assert window.pop_acknowledged() == ({}, []), "a later batch acknowledged first waits for the earlier one"
    first.on_delivery(None, Message("d"))
    offsets, done = window.pop_acknowledged()
    assert done == [first, second] and offsets == {A0: OffsetAndMetadata(3, "", -1)}
    assert window.finished == offsets and len(window) == 0


def test_refused_outputs_hold_the_prefix_until_they_are_resent_and_acknowledged() -> None:
    window = AcknowledgementWindow()
    head = batch(Record("in", 0, 1, 1, None, b""), outputs=2)
    window.add(head)
    head.on_delivery(None, Message("d"))
    assert window.refused_head() is None, "a report is still missing"
    head.on_delivery("NOT_ENOUGH_REPLICAS", Message("flagged"))
    assert window.refused_head() is head and window.pop_acknowledged() == ({}, [])
    refused = head.take_refused()
    assert [(output.topic, error) for output, error in refused] == [("flagged", "NOT_ENOUGH_REPLICAS")]
    assert isinstance(refused[0][0], OutputRecord) and head.pending == 1 and window.refused_head() is None
    head.on_delivery(None, Message("flagged"))
    assert window.pop_acknowledged()[1] == [head]


def test_a_revoke_returns_the_finished_offsets_of_its_partitions_and_prunes_the_rest() -> None:
    window = AcknowledgementWindow()
    done = batch(Record("in", 0, 4, 1, None, b""), Record("in", 1, 9, 1, None, b""))
    window.add(done)
    done.on_delivery(None, Message("d"))
    window.pop_acknowledged()
    pending = batch(Record("in", 0, 5, 1, None, b""), Record("in", 1, 10, 1, None, b""))
    window.add(pending)
    assert window.drop_partitions({A0}, lost=False) == {A0: OffsetAndMetadata(5, "", -1)}
    assert A0 not in window.finished and A0 not in pending.offsets and A1 in pending.offsets
    assert window.drop_partitions({A1}, lost=True) == {}, "a lost partition is not committed by this member"
    assert not pending.offsets and not window.finished


# --------------------------------------------------------------------------------------------------------
# Watchlist gate and readiness
# --------------------------------------------------------------------------------------------------------


def gate(mode: FailureMode) -> tuple[WatchlistGate, ServiceState, Metrics, Clock]:
    metrics, state, clock = Metrics(CollectorRegistry()), ServiceState(), Clock()
    state.on_readiness = lambda ready: metrics.ready.set(1 if ready else 0)
    return (
        WatchlistGate(mode=mode, metrics=metrics, state=state, retry_max_seconds=1.0, hold_topic="held", clock=clock),
        state,
        metrics,
        clock,
    )


DOWN = LookupUnavailable(LookupFailure.REDIS_UNAVAILABLE, "refused")
UP = LookupResult("v7", 42, {}, 0.0)


def test_fail_closed_and_back_change_readiness_and_their_metrics_together() -> None:
    g, state, metrics, clock = gate(FailureMode.CLOSED)
    g.unavailable(DOWN)
    assert probe(state) | {"ready": False, "fail_closed": True, "reason": "redis_unavailable"} == probe(state)
    assert gauge(metrics, "aml_screener_fail_closed") == 1 and gauge(metrics, "aml_screener_ready") == 0
    clock.now += 4.0
    g.unavailable(DOWN)  # still down: one pause, counted once
    assert (
        metrics.registry.get_sample_value("aml_screener_fail_closed_pauses_total", {"reason": "redis_unavailable"}) == 1
    )
    g.available(UP)
    assert probe(state) | {"ready": True, "fail_closed": False, "watchlist_version": "v7"} == probe(state)
    assert gauge(metrics, "aml_screener_fail_closed") == 0 and gauge(metrics, "aml_screener_ready") == 1
    assert gauge(metrics, "aml_screener_fail_closed_seconds_total") == 4.0
    assert gauge(metrics, "aml_screener_watchlist_addresses") == 42


def test_fail_open_passes_events_on_until_the_back_off_is_due_then_probes() -> None:
    g, state, metrics, clock = gate(FailureMode.OPEN)
    g.unavailable(DOWN)
    assert probe(state) | {"ready": False, "fail_open": True} == probe(state)
    assert g.pass_unscreened() and g.open_reason == "redis_unavailable"
    probes: list[float] = []

    def check() -> LookupResult:
        probes.append(clock.now)
        raise DOWN

    g.probe_if_due(check)
    assert probes == [], "not before the back-off"
    clock.now += 0.1
    assert not g.pass_unscreened()
    g.probe_if_due(check)  # fails: the back-off doubles
    assert probes == [clock.now] and g.pass_unscreened()
    clock.now += 0.2
    g.probe_if_due(lambda: UP)
    assert probe(state) | {"ready": True, "fail_open": False} == probe(state)
    assert gauge(metrics, "aml_screener_fail_open_active") == 0


def test_a_registry_outage_at_start_up_fails_closed_even_in_fail_open_mode() -> None:
    g, state, metrics, _clock = gate(FailureMode.OPEN)
    g.unavailable(LookupUnavailable(LookupFailure.SCHEMA_REGISTRY_UNAVAILABLE, "503"), fail_closed=True)
    assert probe(state) | {"fail_closed": True, "fail_open": False} == probe(state)
    g.outage_over()
    assert probe(state) | {"ready": False, "fail_closed": False, "reason": "starting"} == probe(state)
    assert gauge(metrics, "aml_screener_fail_closed") == 0


def test_readiness_causes_are_independent() -> None:
    state = ServiceState()
    state.set_ready("v1")
    state.set_loop_failing("poll_failing")
    assert not state.is_ready() and state.not_ready_reason == "poll_failing"
    state.set_ready("v2")  # the watchlist answering does not hide the loop errors
    assert not state.is_ready()
    state.set_loop_failing(None)
    assert state.is_ready()
    assert state.mark_unreadable("in-0", 5, "codec") and not state.mark_unreadable("in-0", 5, "codec")
    assert not state.is_ready() and state.ready, "unreadable input alone"
    state.clear_unreadable("in-0")
    assert state.is_ready()


# --------------------------------------------------------------------------------------------------------
# Loop error runs
# --------------------------------------------------------------------------------------------------------


def errors(threshold: int = 3) -> tuple[LoopErrors, ServiceState, Metrics, Clock]:
    metrics, state, clock = Metrics(CollectorRegistry()), ServiceState(), Clock()
    state.set_ready("v1")
    return (
        LoopErrors(state=state, metrics=metrics, retry_max_seconds=0.4, threshold=threshold, clock=clock),
        state,
        metrics,
        clock,
    )


def test_repeated_errors_back_off_and_turn_readiness_off_and_a_batch_restores_it() -> None:
    tracker, state, metrics, _clock = errors()
    delays = [tracker.failed("poll", RuntimeError("x")) for _ in range(4)]
    assert delays == [0.1, 0.2, 0.4, 0.4]
    assert (
        probe(state) | {"ready": False, "reason": "poll_failing"} == probe(state)
        and probe(state)["failing_seconds"] is not None
    )
    assert metrics.registry.get_sample_value("aml_screener_loop_errors_total", {"where": "poll"}) == 4
    tracker.succeeded()
    assert probe(state)["ready"] and probe(state)["failing_seconds"] is None
    assert tracker.failed("batch", RuntimeError("y")) == 0.1, "a new run starts from the first back-off"


def test_quiet_polls_end_a_run_only_after_the_longest_back_off() -> None:
    tracker, state, _metrics, clock = errors()
    for _ in range(3):
        tracker.failed("poll", RuntimeError("blip"))
    assert not state.is_ready()
    clock.now += 1.0  # not longer than the longest back-off (0.4 s) + 1 s
    tracker.quiet()
    assert not state.is_ready(), "an error that may come back between empty polls still counts"
    clock.now += 0.5
    tracker.quiet()
    assert state.is_ready() and tracker.consecutive == 0
