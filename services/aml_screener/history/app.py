"""Wiring of the history commands: builds the indexer and the lookback from Settings and runs them with signal
handling and the HTTP endpoints (/metrics, /healthz, /readyz, as the screener's: screener/health.py)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import psycopg
from kafka import KafkaConsumer

from aml_screener.history.indexer import Indexer, decoders
from aml_screener.history.lookback import Lookback
from aml_screener.history.metrics import HistoryMetrics
from aml_screener.history.migrate import migrate
from aml_screener.history.outputs import HistoryOutputs, schema_catalog
from aml_screener.history.store import connect
from aml_screener.infra.kafka import consumer_config, redacted
from aml_screener.infra.redis_client import redis_client
from aml_screener.infra.settings import Settings
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.app import schema_repository
from aml_screener.screener.health import HealthServer, ServiceState
from aml_screener.screener.schemas import OutputSchemaUnavailable

log = logging.getLogger(__name__)

EXIT_CONFIG = 2


def _connector(settings: Settings, name: str) -> Callable[[], psycopg.Connection]:
    return lambda: connect(settings, application_name=name)


def run_migrate(settings: Settings) -> int:
    with connect(settings, application_name="aml-history-migrate", autocommit=True) as conn:
        applied = migrate(conn)
    names = [f"{m.number:04d}_{m.name}" for m in applied]
    print(f"history database up to date ({len(names)} migration(s) applied{': ' + ', '.join(names) if names else ''})")
    return 0


def _serve(settings: Settings, state: ServiceState, metrics: HistoryMetrics) -> HealthServer | None:
    if not settings.http_port:
        return None
    return HealthServer(settings.http_host, settings.http_port, state, metrics).start()


def _on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def run_indexer(settings: Settings, stop_requested: threading.Event | None = None) -> int:
    metrics = HistoryMetrics()
    state = ServiceState(stall_seconds=settings.health_stall_seconds)
    health = _serve(settings, state, metrics)
    try:
        catalog = schema_catalog(settings)
        repository = schema_repository(settings, catalog)
        try:
            outputs = HistoryOutputs(settings, repository, catalog)
        except OutputSchemaUnavailable as exc:
            log.error("cannot start: output schema ids unavailable", extra={"detail": str(exc)})  # noqa: TRY400
            return EXIT_CONFIG
        config = {
            **consumer_config(settings),
            "group_id": settings.history_group_id,
            "client_id": f"{settings.kafka_client_id}-history",
        }
        log.info("starting history indexer", extra={"settings": settings.redacted(), "consumer": redacted(config)})
        indexer = Indexer(
            settings=settings,
            consumer=KafkaConsumer(**config),
            decoder=decoders(settings, repository, catalog),
            connect=_connector(settings, "aml-history-indexer"),
            outputs=outputs,
            metrics=metrics,
            state=state,
        )
        _on_signals(indexer.request_stop)
        if stop_requested is not None and stop_requested.is_set():
            indexer.request_stop()
        return indexer.run()
    finally:
        if health is not None:
            health.close()


def run_lookback(settings: Settings, stop_requested: threading.Event | None = None) -> int:
    metrics = HistoryMetrics()
    state = ServiceState(stall_seconds=settings.health_stall_seconds)
    health = _serve(settings, state, metrics)
    try:
        catalog = schema_catalog(settings)
        repository = schema_repository(settings, catalog)
        try:
            outputs = HistoryOutputs(settings, repository, catalog)
        except OutputSchemaUnavailable as exc:
            log.error("cannot start: output schema ids unavailable", extra={"detail": str(exc)})  # noqa: TRY400
            return EXIT_CONFIG
        log.info("starting lookback", extra={"settings": settings.redacted()})
        lookback = Lookback(
            connect=_connector(settings, "aml-history-lookback"),
            client=redis_client(settings),
            keys=WatchlistKeys(settings.watchlist_key_prefix),
            outputs=outputs,
            lookback_days=settings.history_lookback_days,
            metrics=metrics,
            state=state,
            poll_seconds=settings.lookback_poll_seconds,
            retry_max_seconds=settings.lookup_retry_max_seconds,
        )
        _on_signals(lookback.request_stop)
        if stop_requested is not None and stop_requested.is_set():
            lookback.request_stop()
        return lookback.run()
    finally:
        if health is not None:
            health.close()
