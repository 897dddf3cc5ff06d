"""Benchmark worker processes. Each prints one JSON line with its measurements and exits.

    python -m bench.workers bare         BOOTSTRAP TOPIC COUNT GROUP
    python -m bench.workers passthrough  BOOTSTRAP COUNT GROUP
    python -m bench.workers screener     BOOTSTRAP REDIS_URL COUNT GROUP [WATCHLIST_KEY_PREFIX]  (both inputs)
    python -m bench.workers produce      BOOTSTRAP TOPIC RATE SECONDS SEED
    python -m bench.workers observe      BOOTSTRAP DECISIONS_TOPIC PARTITIONS SECONDS

Environment: AML_BENCH_BROKER ("mock", the default, or "kafka": whether the mock's client settings apply),
AML_BENCH_TOPIC_SUFFIX (appended to the default topic names, so runs on one shared cluster use topics of their own),
AML_PROCESSING_GUARANTEE (read by the settings as in production), AML_BENCH_PROFILE=1 (the screener worker also
reports where its time went, bench/profile.py).

Timing windows exclude group joins: they start at the first record seen (bare) or the first batch finished
(pass-through, screener) and end when the last expected record was consumed (bare) or its outputs were durable and
its offsets committed (pass-through, screener).
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import base58
import redis
from confluent_kafka import Producer
from fastavro import parse_schema, schemaless_reader
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.generator import EventGenerator
from aml_screener.devstack.stack import KAFKA_PYTHON_API_VERSION, MOCK_SCREENER_ENV
from aml_screener.infra.kafka import consumer_config
from aml_screener.infra.settings import ProcessingGuarantee, Settings
from aml_screener.infra.watchlist_layout import DEFAULT_PREFIX, WatchlistKeys
from aml_screener.screener.ack_window import InFlightBatch, next_offsets
from aml_screener.screener.app import build, sink_for
from aml_screener.screener.codec import HEADER, EventEncoder
from aml_screener.screener.metrics import STAGES, Metrics
from aml_screener.screener.pipeline import CompletedBatch, OutputRecord
from aml_screener.screener.schemas import (
    SCREENING_DECISION,
    WITHDRAWAL_REQUESTED,
    SchemaCatalog,
    strip_logical_types,
)
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import load_config, run_sync
from bench.profile import Profile
from bench.related_cost import disable_relations_if_asked

DEFAULT_TOPICS = ("withdrawals.requested", "screening.decisions", "withdrawals.flagged", "withdrawals.requested.dlq")
DEPOSIT_TOPICS = ("deposits.received", "deposits.flagged", "deposits.received.dlq")


def topic_names(suffix: str | None = None) -> tuple[str, ...]:
    """Input, decisions, flagged and dead-letter topic names, with AML_BENCH_TOPIC_SUFFIX (or `suffix`) appended."""
    tail = os.environ.get("AML_BENCH_TOPIC_SUFFIX", "") if suffix is None else suffix
    return tuple(name + tail for name in DEFAULT_TOPICS)


def deposit_topic_names(suffix: str | None = None) -> tuple[str, ...]:
    """Deposit input, flagged and dead-letter topic names, suffixed like topic_names()."""
    tail = os.environ.get("AML_BENCH_TOPIC_SUFFIX", "") if suffix is None else suffix
    return tuple(name + tail for name in DEPOSIT_TOPICS)


def on_mock() -> bool:
    return os.environ.get("AML_BENCH_BROKER", "mock") == "mock"


def _settings(bootstrap: str, redis_url: str, group: str, prefix: str = DEFAULT_PREFIX) -> Settings:
    """The screener's settings for a worker; AML_PROCESSING_GUARANTEE comes from the environment, as in production."""
    names = list(topic_names())
    deposits = list(deposit_topic_names())
    mock: dict[str, Any] = {}
    if on_mock():
        mock = {key.removeprefix("AML_").lower(): value for key, value in MOCK_SCREENER_ENV.items()}
    return Settings(
        **mock,
        kafka_bootstrap_servers=bootstrap,
        kafka_group_id=group,
        kafka_input_topic=names[0],
        kafka_decisions_topic=names[1],
        kafka_flagged_topic=names[2],
        kafka_dead_letter_topic=names[3],
        kafka_deposit_topic=deposits[0],
        kafka_deposit_flagged_topic=deposits[1],
        kafka_deposit_dead_letter_topic=deposits[2],
        redis_url=redis_url,
        watchlist_key_prefix=prefix,
        http_port=0,
        log_level="WARNING",
    )


def bare(bootstrap: str, topic: str, count: str, group: str) -> dict[str, Any]:
    """A kafka-python consumer with the screener's own consumer configuration that does nothing per record."""
    settings = _settings(bootstrap, "redis://unused:1/0", group)
    consumer = KafkaConsumer(**consumer_config(settings))
    consumer.subscribe([topic])
    consumer.topics()
    wanted = int(count)
    seen = 0
    started = None
    while seen < wanted:
        polled = consumer.poll(timeout_ms=settings.kafka_poll_timeout_ms, max_records=settings.kafka_max_poll_records)
        for records in polled.values():
            if started is None:
                started = time.perf_counter()
            seen += len(records)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close(autocommit=False)
    return {"records": seen, "seconds": elapsed, "per_second": seen / elapsed}


def screener(bootstrap: str, redis_url: str, count: str, group: str, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The real screener (same wiring as `aml-screener run`; withdrawals and deposits), stopped once every input is
    committed.

    The window starts when the first batch completes, so it excludes the group join and one batch (of up to
    max_poll_records); over 100,000 events that under-counts the elapsed time by at most ~2%."""
    settings = _settings(bootstrap, redis_url, group, prefix)
    components = build(settings, Metrics(CollectorRegistry()))
    metrics = components.metrics
    wanted = int(count)
    marks: dict[str, float] = {}
    profile: list[Profile] = []

    registry = metrics.registry
    loop = components.screener

    def watch() -> None:
        # Cheap attribute reads only: this thread shares the GIL with the screener it measures.
        while True:
            if loop.batches and "first" not in marks:
                marks["first"] = time.perf_counter()
                if os.environ.get("AML_BENCH_PROFILE") == "1":
                    profile.append(Profile())
            if loop.records_done >= wanted:
                marks["last"] = time.perf_counter()
                if profile:
                    profile[0].stop()
                loop.request_stop()
                return
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    components.screener.run()
    elapsed = marks["last"] - marks["first"]
    stages = {
        stage: registry.get_sample_value("aml_screener_stage_duration_seconds_sum", {"stage": stage}) or 0.0
        for stage in STAGES
    }
    result = {
        "records": wanted,
        "seconds": elapsed,
        "per_second": wanted / elapsed,
        "batches": components.screener.batches,
        "stage_seconds": stages,
        "guarantee": settings.processing_guarantee.value,
    }
    if profile:
        # The profile starts after the first batch: leave its records out (estimated as the mean batch size).
        result["profile"] = profile[0].report(wanted - wanted // max(components.screener.batches, 1))
    return result


class _BareLoop:
    """What a sink may ask of a loop (sink.LoopControl), for the pass-through: no faults, no shutdown deadline."""

    def wait_paused(self, seconds: float) -> bool:
        time.sleep(seconds)
        return True

    def keep_alive(self) -> bool:
        return True


def passthrough(bootstrap: str, count: str, group: str) -> dict[str, Any]:
    """The limit of any consume-produce service on this machine: consume with the screener's consumer settings,
    produce one output per input (the input record, to the decisions topic) through the screener's own sink (at least
    once: acknowledged, then committed, several batches in flight; exactly once: a transaction per batch with its
    offsets), nothing else."""
    settings = _settings(bootstrap, "redis://unused:1/0", group)
    consumer = KafkaConsumer(**consumer_config(settings))
    consumer.subscribe([settings.kafka_input_topic])
    consumer.topics()
    sink = sink_for(settings, consumer, Metrics(CollectorRegistry()))
    control = _BareLoop()
    assert sink.start(control)
    decisions = settings.kafka_decisions_topic
    wanted, done = int(count), 0
    started: float | None = None
    while done < wanted:
        polled = consumer.poll(timeout_ms=settings.kafka_poll_timeout_ms, max_records=settings.kafka_max_poll_records)
        records = [record for batch in polled.values() for record in batch]
        if records:
            outputs = [OutputRecord(decisions, record.key, record.value, None) for record in records]
            sink.submit(
                InFlightBatch(
                    next_offsets(records),
                    CompletedBatch(outputs, [], [], None, None),
                    len(records),
                    time.perf_counter(),
                    len(outputs),
                    membership=consumer.group_metadata(),
                ),
                control,
            )
        for finished in sink.settle(control, wait=True):
            if started is None:
                started, wanted = time.perf_counter(), wanted - finished.size  # as the screener: from the first batch
                continue
            done += finished.size
    elapsed = time.perf_counter() - (started or time.perf_counter())
    sink.finish()
    consumer.close(autocommit=False)
    sink.close(10)
    return {
        "records": done,
        "seconds": elapsed,
        "per_second": done / elapsed,
        "guarantee": settings.processing_guarantee.value,
    }


def produce(bootstrap: str, topic: str, rate: str, seconds: str, seed: str) -> dict[str, Any]:
    """Steady load: `rate` events/s for `seconds`, sent on a 1 ms schedule."""
    entry = _CATALOG.current(WITHDRAWAL_REQUESTED)
    generator = EventGenerator(
        sample_listings(), EventEncoder(entry.schema, entry.schema_id), seed=int(seed), clean_pool=50_000
    )
    total = int(float(rate) * float(seconds))
    events = [generator.event(0) for _ in range(total)]  # pre-encoded: the schedule is not slowed by encoding
    # linger.ms=5: exchanges' producers batch too, and the mock returns one record batch per partition per
    # fetch, so 1-record batches would measure the mock's fetch cadence rather than the screener.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log.connection.close": False})
    producer.list_topics(topic, timeout=10)  # connect before the clock starts (see demo/run.py)
    started = time.monotonic()
    interval = 1.0 / float(rate)
    for index, event in enumerate(events):
        due = started + index * interval
        delay = due - time.monotonic()
        if delay > 0.001:
            time.sleep(delay)
        producer.produce(topic, event.value, event.key)
        producer.poll(0)
    producer.flush(30)
    elapsed = time.monotonic() - started
    return {"records": total, "seconds": elapsed, "per_second": total / elapsed}


def observe(bootstrap: str, topic: str, partitions: str, seconds: str) -> dict[str, Any]:
    """Downstream view: for every decision, (time it became readable here) - (input record timestamp).

    A kafka-python consumer like the screener's own (librdkafka's consumer prefetches so eagerly that, against
    the mock broker, its fetches starved the screener: measured p99 x20 worse)."""
    exactly_once = os.environ.get("AML_PROCESSING_GUARANTEE") == ProcessingGuarantee.EXACTLY_ONCE.value
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        **({"api_version": KAFKA_PYTHON_API_VERSION} if on_mock() else {}),
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        # What a downstream consumer of an exactly-once screener must read: committed transactions only.
        isolation_level="read_committed" if exactly_once else "read_uncommitted",
    )
    consumer.assign([TopicPartition(topic, p) for p in range(int(partitions))])
    deadline = time.monotonic() + float(seconds)
    visible_ms: list[float] = []
    decided_ms: list[float] = []
    worst_per_second: dict[int, float] = {}  # second since start -> worst visible latency (to locate stalls)
    started = time.time()
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=10).values():  # short: see AML_KAFKA_POLL_TIMEOUT_MS
            now_ms = time.time() * 1000
            second = int(now_ms / 1000 - started)
            for record in records:
                event_ts, decided_us = _timings(record.value)
                visible_ms.append(now_ms - event_ts)
                decided_ms.append(decided_us / 1000 - event_ts)
                worst_per_second[second] = max(worst_per_second.get(second, 0.0), now_ms - event_ts)
    consumer.close()
    return {"visible_ms": visible_ms, "decided_ms": decided_ms, "worst_visible_ms_per_second": worst_per_second}


_CATALOG = SchemaCatalog()
# Logical types off: the observer only needs two integers per decision and must stay cheap, so that it does not
# take CPU from the screener on a 2-core machine.
_DECISION_RAW = parse_schema(strip_logical_types(_CATALOG.current(SCREENING_DECISION).schema), {})


def _timings(value: bytes) -> tuple[float, float]:
    """(input record timestamp in ms, decided_at in us) of a framed ScreeningDecision."""
    decision = cast("dict[str, Any]", schemaless_reader(io.BytesIO(value[HEADER.size :]), _DECISION_RAW, None))
    timings = decision["timings"]
    return float(timings["event_timestamp"]), float(timings["decided_at"])


def sync(redis_url: str, prefix: str, config_path: str) -> dict[str, Any]:
    """`watchlist sync` of a configuration into Redis under `prefix`; wall time and this process's peak RSS."""
    store = WatchlistStore(redis.Redis.from_url(redis_url, decode_responses=True), WatchlistKeys(prefix))
    started = time.perf_counter()
    result = run_sync(store, load_config(Path(config_path)))
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_kib / 1024,
        "keys": sum(s.table.keys for s in result.sources if s.table),
        "entries": sum(s.report.entries for s in result.sources if s.report),
        "rejected": sum(sum(s.report.rejected.values()) for s in result.sources if s.report),
        "statuses": [s.status for s in result.sources],
    }


def synthetic_list(path: str, count: str, seed: str, kind: str = "eth") -> dict[str, Any]:
    """A list of `count` random addresses: "eth" lowercase hex, or "xbt" Bitcoin P2PKH (Base58Check)."""
    rng = random.Random(int(seed))
    started = time.perf_counter()
    with open(path, "w", encoding="ascii") as out:
        for _ in range(int(count)):
            if kind == "xbt":
                out.write(base58.b58encode_check(b"\x00" + rng.randbytes(20)).decode("ascii") + "\n")
            else:
                out.write(f"0x{rng.getrandbits(160):040x}\n")
    return {"seconds": time.perf_counter() - started, "count": int(count)}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "sync": sync,
    "synthetic_list": synthetic_list,
    "bare": bare,
    "passthrough": passthrough,
    "screener": screener,
    "produce": produce,
    "observe": observe,
}

if __name__ == "__main__":
    disable_relations_if_asked()  # AML_BENCH_RELATIONS=off: part D's side-by-side "off" rounds
    print(json.dumps(WORKERS[sys.argv[1]](*sys.argv[2:])), flush=True)
