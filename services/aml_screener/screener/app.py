"""Wiring: builds the screener's parts from Settings and runs it with signal handling and the HTTP endpoints."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer

from aml_screener.infra.kafka import (
    consumer_config,
    producer_config,
    redacted,
    transactional_id,
    transactional_producer_config,
)
from aml_screener.infra.redis_client import redis_client
from aml_screener.infra.settings import ProcessingGuarantee, Settings
from aml_screener.infra.version import software_version
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.at_least_once import AtLeastOnceSink
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.codec import DepositDecoder, RecordEncoder, WithdrawalDecoder
from aml_screener.screener.emitter import Emitter
from aml_screener.screener.errors import LookupFailure, LookupUnavailable, SchemaSourceUnavailable
from aml_screener.screener.exactly_once import ExactlyOnceSink
from aml_screener.screener.health import HealthServer, ServiceState
from aml_screener.screener.lookup import LookupResult, WatchlistLookup
from aml_screener.screener.metrics import Metrics
from aml_screener.screener.pipeline import BatchScreener, DepositInput, Topics
from aml_screener.screener.policy_watch import PolicyWatcher
from aml_screener.screener.schemas import (
    DEPOSIT_FLAGGED,
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    HttpSchemaRegistry,
    LocalSchemaRepository,
    OutputSchemaUnavailable,
    SchemaCatalog,
    SchemaRepository,
)
from aml_screener.screener.service import Screener
from aml_screener.screener.sink import Sink
from aml_screener.screener.watchlist_gate import WatchlistGate
from aml_screener.screener.watchlist_watch import WatchlistWatcher
from aml_screener.screening.policy import DEFAULT_POLICY, Policy, PolicyError

log = logging.getLogger(__name__)

# Exit code when the configuration cannot work (as for invalid AML_* settings: cli.EXIT_CONFIG).
EXIT_CONFIG = 2


def schema_repository(settings: Settings, catalog: SchemaCatalog) -> SchemaRepository:
    if settings.schema_registry_url:
        auth = settings.schema_registry_basic_auth
        return HttpSchemaRegistry(
            settings.schema_registry_url,
            auth.get_secret_value() if auth else None,
            auto_register=settings.schema_registry_auto_register,
        )
    return LocalSchemaRepository(catalog)


@dataclass(frozen=True)
class OutputSchemaIds:
    decisions: int
    flagged: int  # WithdrawalFlagged
    deposit_flagged: int | None  # DepositFlagged; None when deposits are not screened


def output_schema_ids(settings: Settings, repository: SchemaRepository, catalog: SchemaCatalog) -> OutputSchemaIds:
    """The schema ids of the outputs: configured, or looked up (registered when missing).
    Raises SchemaSourceUnavailable (retry) or OutputSchemaUnavailable (the operator must act)."""

    def resolve(configured: int | None, topic: str, name: str) -> int:
        if configured is not None:
            return configured
        return repository.output_schema_id(f"{topic}-value", catalog.current(name).schema)

    decisions = resolve(
        settings.schema_registry_decisions_schema_id, settings.kafka_decisions_topic, SCREENING_DECISION
    )
    flagged = resolve(settings.schema_registry_flagged_schema_id, settings.kafka_flagged_topic, WITHDRAWAL_FLAGGED)
    deposit_flagged = None
    if settings.kafka_deposit_topic:
        deposit_flagged = resolve(
            settings.schema_registry_deposit_flagged_schema_id, settings.kafka_deposit_flagged_topic, DEPOSIT_FLAGGED
        )
    return OutputSchemaIds(decisions, flagged, deposit_flagged)


def wait_for_output_schemas(
    settings: Settings,
    *,
    repository: SchemaRepository,
    catalog: SchemaCatalog,
    gate: WatchlistGate,
    state: ServiceState,
    stop: threading.Event,
) -> OutputSchemaIds | None:
    """Like a watchlist outage (the gate fails closed): while the registry cannot be reached (unreachable, 5xx,
    401) the screener is not ready, joins no group, decides nothing and retries with back-off; None when stopped
    meanwhile."""
    backoff = Backoff(settings.lookup_retry_max_seconds)
    since: float | None = None
    while not stop.is_set():
        state.heartbeat()
        try:
            ids = output_schema_ids(settings, repository, catalog)
        except SchemaSourceUnavailable as exc:
            if since is None:
                since = time.monotonic()
                log.error(  # noqa: TRY400 - an expected outage: the detail says it all, no traceback
                    "schema registry unavailable at start-up: failing closed (not ready, no group joined), retrying",
                    extra={"detail": str(exc)},
                )
            gate.unavailable(LookupUnavailable(LookupFailure.SCHEMA_REGISTRY_UNAVAILABLE, str(exc)), fail_closed=True)
            stop.wait(backoff.next())
            continue
        if since is not None:
            gate.outage_over()
            log.info(
                "schema registry available: output schema ids resolved",
                extra={"waited_seconds": round(time.monotonic() - since, 3)},
            )
        return ids
    return None


@dataclass
class Components:
    screener: Screener
    metrics: Metrics
    state: ServiceState
    redis: redis.Redis


def build(
    settings: Settings,
    metrics: Metrics | None = None,
    state: ServiceState | None = None,
    *,
    catalog: SchemaCatalog | None = None,
    repository: SchemaRepository | None = None,
    output_ids: OutputSchemaIds | None = None,
    gate: WatchlistGate | None = None,
    policy: Callable[[], Policy] = lambda: DEFAULT_POLICY,
) -> Components:
    metrics = metrics or Metrics()
    state = state or ServiceState(stall_seconds=settings.health_stall_seconds)
    gate = gate or watchlist_gate(settings, metrics, state)
    catalog = catalog or SchemaCatalog(Path(settings.schema_dir) if settings.schema_dir else None)
    repository = repository or schema_repository(settings, catalog)
    ids = output_ids or output_schema_ids(settings, repository, catalog)
    client = redis_client(settings)
    lookup = WatchlistLookup(client, WatchlistKeys(settings.watchlist_key_prefix))
    batch = batch_screener(settings, repository, catalog, ids, lookup=lookup.lookup, policy=policy)
    consumer_conf = consumer_config(settings)
    producer_conf = producer_config_for(settings)
    log.info(
        "starting screener",
        extra={
            "settings": settings.redacted(),
            "consumer": redacted(consumer_conf),
            "producer": redacted(producer_conf),
        },
    )
    consumer = KafkaConsumer(**consumer_conf)
    screener = Screener(
        settings=settings,
        consumer=consumer,
        sink=sink_for(settings, consumer, metrics, producer_conf),
        batch_screener=batch,
        lookup=lookup,
        metrics=metrics,
        state=state,
        gate=gate,
    )
    return Components(screener, metrics, state, client)


def producer_config_for(settings: Settings) -> dict[str, Any]:
    """The output producer's configuration for the chosen guarantee (kafka-python's or librdkafka's dialect)."""
    if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
        return transactional_producer_config(settings)
    return producer_config(settings)


def sink_for(
    settings: Settings, consumer: KafkaConsumer, metrics: Metrics, producer_conf: dict[str, Any] | None = None
) -> Sink:
    """The sink of AML_PROCESSING_GUARANTEE over this consumer (also used by the benchmark's pass-through)."""
    conf = producer_conf if producer_conf is not None else producer_config_for(settings)
    if settings.processing_guarantee is ProcessingGuarantee.EXACTLY_ONCE:
        return ExactlyOnceSink(
            producer_factory=lambda: KafkaProducer(**conf),
            metrics=metrics,
            transactional_id=transactional_id(settings),
            stall_seconds=settings.kafka_transaction_timeout_ms / 1000,
        )
    return AtLeastOnceSink(
        producer=Emitter(conf),
        committer=consumer,
        metrics=metrics,
        max_inflight_batches=settings.max_inflight_batches,
        retry_max_seconds=settings.lookup_retry_max_seconds,
    )


def batch_screener(
    settings: Settings,
    repository: SchemaRepository,
    catalog: SchemaCatalog,
    ids: OutputSchemaIds,
    *,
    lookup: Callable[[Sequence[str]], LookupResult],
    policy: Callable[[], Policy],
    instance_id: str | None = None,
    clock_us: Callable[[], int] | None = None,
    keep_decisions: bool = False,
) -> BatchScreener:
    """The screening pipeline as configured (`aml-screener run`; `aml-screener replay` with its own lookup, clock
    and instance id; the pre-screen API, a batch of one that keeps the decision records to answer with them)."""
    deposits = None
    if settings.kafka_deposit_topic and ids.deposit_flagged is not None:
        deposits = DepositInput(
            topic=settings.kafka_deposit_topic,
            decoder=DepositDecoder(repository, catalog, settings.kafka_max_message_bytes),
            flagged_encoder=RecordEncoder(catalog.current(DEPOSIT_FLAGGED).schema, ids.deposit_flagged),
            flagged=settings.kafka_deposit_flagged_topic,
            dead_letter=settings.kafka_deposit_dead_letter_topic,
            hold=settings.kafka_deposit_hold_topic,
        )
    screener = BatchScreener(
        decoder=WithdrawalDecoder(repository, catalog, settings.kafka_max_message_bytes),
        decision_encoder=RecordEncoder(catalog.current(SCREENING_DECISION).schema, ids.decisions),
        flagged_encoder=RecordEncoder(catalog.current(WITHDRAWAL_FLAGGED).schema, ids.flagged),
        topics=Topics(
            settings.kafka_decisions_topic,
            settings.kafka_flagged_topic,
            settings.kafka_dead_letter_topic,
            settings.kafka_hold_topic,
        ),
        instance_id=instance_id or settings.instance_id,
        lookup=lookup,
        deposits=deposits,
        screener_version=software_version(),
        policy=policy,
        keep_decisions=keep_decisions,
    )
    if clock_us is not None:
        screener.clock_us = clock_us
    return screener


def watchlist_gate(settings: Settings, metrics: Metrics, state: ServiceState) -> WatchlistGate:
    state.on_readiness = lambda ready: metrics.ready.set(1 if ready else 0)
    return WatchlistGate(
        mode=settings.watchlist_failure_mode,
        metrics=metrics,
        state=state,
        retry_max_seconds=settings.lookup_retry_max_seconds,
        hold_topic=settings.kafka_hold_topic,
    )


def run(settings: Settings, stop_requested: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop_requested`, set by a signal that arrived during start-up); return the
    process exit code."""
    metrics = Metrics()
    state = ServiceState(stall_seconds=settings.health_stall_seconds)
    gate = watchlist_gate(settings, metrics, state)
    health = (
        HealthServer(settings.http_host, settings.http_port, state, metrics).start() if settings.http_port else None
    )
    stop = stop_requested if stop_requested is not None else threading.Event()
    try:
        try:
            policies = PolicyWatcher.from_settings(settings, metrics)
        except PolicyError as exc:
            log.error("cannot start: invalid action policy", extra={"detail": str(exc)})  # noqa: TRY400
            return EXIT_CONFIG
        catalog = SchemaCatalog(Path(settings.schema_dir) if settings.schema_dir else None)
        repository = schema_repository(settings, catalog)
        try:
            output_ids = wait_for_output_schemas(
                settings, repository=repository, catalog=catalog, gate=gate, state=state, stop=stop
            )
        except OutputSchemaUnavailable as exc:
            log.error("cannot start: output schema ids unavailable", extra={"detail": str(exc)})  # noqa: TRY400
            return EXIT_CONFIG
        if output_ids is None:
            log.info("stop requested during start-up")
            return 0
        components = build(
            settings,
            metrics,
            state,
            catalog=catalog,
            repository=repository,
            output_ids=output_ids,
            gate=gate,
            policy=lambda: policies.current,
        )
        screener = components.screener

        def on_signal(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            screener.request_stop()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        if stop.is_set():
            log.info("stop requested during start-up")
            screener.request_stop()
        watcher = WatchlistWatcher(components.redis, WatchlistKeys(settings.watchlist_key_prefix), metrics)
        watcher.start()
        policies.start()
        # Everything built so far lives as long as the process: move it out of the collector's sight so full
        # collections (which pause the loop) only scan what the loop itself allocates.
        gc.freeze()
        try:
            return screener.run()
        finally:
            policies.stop()
            watcher.stop()
    finally:
        if health is not None:
            health.close()
