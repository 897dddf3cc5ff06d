"""Wiring of the reporter: builds its Kafka clients, schema source, state, metrics and probes from Settings."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer

from aml_screener.infra.kafka import admin_config, consumer_config, producer_config, redacted
from aml_screener.infra.settings import Settings
from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.metrics import ReportingMetrics
from aml_screener.reporting.service import Reporter, ReporterState
from aml_screener.reporting.topic import ObligationLog, ObligationsTopicError, ensure_compacted
from aml_screener.screener.app import schema_repository
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.codec import FramedReader
from aml_screener.screener.health import HealthServer
from aml_screener.screener.schemas import SchemaCatalog
from aml_screener.screening.records import Direction

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


def obligation_log(settings: Settings, metrics: ReportingMetrics | None = None) -> ObligationLog:
    """Reader and writer of the obligations topic (every command uses one)."""
    reader = consumer_config(settings) | {
        "group_id": None,  # the whole topic, every partition, no group
        "client_id": f"{settings.kafka_client_id}-obligations",
    }
    producer = Producer(producer_config(settings))
    return ObligationLog(settings.kafka_obligations_topic, KafkaConsumer(**reader), producer, metrics)


def flagged_directions(settings: Settings) -> dict[str, Direction]:
    directions = {settings.kafka_flagged_topic: Direction.WITHDRAWAL}
    if settings.kafka_deposit_topic:
        directions[settings.kafka_deposit_flagged_topic] = Direction.DEPOSIT
    return directions


def _ensure_topic(settings: Settings, state: ReporterState, stop: threading.Event) -> bool:
    """Check (or create) the obligations topic, retrying while Kafka cannot answer; False when stopped meanwhile.
    ObligationsTopicError (not compacted, cannot be created) is the operator's to fix: it propagates."""
    admin = AdminClient(admin_config(settings))
    backoff = Backoff(settings.lookup_retry_max_seconds)
    while not stop.is_set():
        state.heartbeat()
        try:
            ensure_compacted(admin, settings.kafka_obligations_topic)
        except KafkaException as exc:
            state.set_not_ready("kafka_unavailable")
            log.warning("cannot check the obligations topic yet; retrying", extra={"error": str(exc)})
            stop.wait(backoff.next())
            continue
        return True
    return False


def run(settings: Settings, stop_requested: threading.Event | None = None) -> int:
    """`aml-screener report serve` until SIGTERM/SIGINT; returns the exit code."""
    stop = stop_requested if stop_requested is not None else threading.Event()
    book = ObligationBook()
    metrics = ReportingMetrics(book, warn_business_days=settings.reporting_warn_business_days)
    state = ReporterState(
        stall_seconds=settings.health_stall_seconds,
        obligations=lambda: len(book),
        on_readiness=lambda ready: metrics.ready.set(1 if ready else 0),
    )
    health = (
        HealthServer(settings.http_host, settings.http_port, state, metrics).start() if settings.http_port else None
    )
    try:
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, frame: FrameType | None) -> None:
                del frame
                log.info("stop requested", extra={"signal": signal.Signals(signum).name})
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        directions = flagged_directions(settings)
        log.info(
            "starting reporter",
            extra={
                "settings": settings.redacted(),
                "flagged_topics": list(directions),
                "obligations_topic": settings.kafka_obligations_topic,
                "consumer": redacted(consumer_config(settings)),
            },
        )
        if settings.reporting_manage_topic and not _ensure_topic(settings, state, stop):
            return 0
        catalog = SchemaCatalog(Path(settings.schema_dir) if settings.schema_dir else None)
        flagged_consumer = KafkaConsumer(
            **consumer_config(settings)
            | {"group_id": settings.reporting_group_id, "client_id": f"{settings.kafka_client_id}-reporting"}
        )
        reporter = Reporter(
            flagged_consumer=flagged_consumer,
            obligations=obligation_log(settings, metrics),
            reader=FramedReader(schema_repository(settings, catalog)),
            book=book,
            metrics=metrics,
            state=state,
            directions=directions,
            delivery_timeout_seconds=settings.kafka_delivery_timeout_ms / 1000,
            retry_max_seconds=settings.lookup_retry_max_seconds,
            stop=stop,
        )
        return reporter.run()
    except ObligationsTopicError as exc:
        log.error("cannot start: the obligations topic is unusable", extra={"detail": str(exc)})  # noqa: TRY400
        return EXIT_CONFIG
    finally:
        if health is not None:
            health.close()
