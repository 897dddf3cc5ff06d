"""Wiring of `aml-screener api`: builds the pre-screen API from Settings and serves it with uvicorn.

One process: the API on AML_API_HOST:AML_API_PORT (uvicorn, uvloop + httptools), /metrics, /healthz and /readyz on
AML_HTTP_PORT (the same probe server as the screener's), and three daemon threads: the policy file watcher, the API
keys file watcher, and a watchlist probe that keeps readiness current between requests. SIGTERM: uvicorn stops
accepting, finishes the requests in flight, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import redis
import uvicorn

from aml_screener.api.http import ApiContext, ApiState, build_app
from aml_screener.api.keys import KeysFileError, KeysWatcher
from aml_screener.api.metrics import ApiMetrics
from aml_screener.api.recorder import DecisionRecorder
from aml_screener.api.screening import PreScreener
from aml_screener.infra.kafka import producer_config, redacted
from aml_screener.infra.periodic import Periodic
from aml_screener.infra.redis_client import redis_client
from aml_screener.infra.settings import Settings
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.app import OutputSchemaIds, batch_screener, output_schema_ids, schema_repository
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.emitter import Emitter
from aml_screener.screener.errors import LookupUnavailable, SchemaSourceUnavailable
from aml_screener.screener.health import HealthServer
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screener.policy_watch import PolicyWatcher
from aml_screener.screener.schemas import (
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    WITHDRAWAL_REQUESTED,
    LocalSchemaRepository,
    OutputSchemaUnavailable,
    SchemaCatalog,
)
from aml_screener.screening.policy import DEFAULT_POLICY, Policy, PolicyError

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
# How often the watchlist probe checks the watchlist between requests (one small Redis transaction): how fast
# /readyz follows an outage or a recovery when no request comes.
_PROBE_SECONDS = 2.0
# uvicorn's bound on finishing the requests in flight after SIGTERM (a request takes milliseconds; the Kafka wait of
# a recorded decision at most AML_API_RECORD_TIMEOUT_SECONDS).
_GRACEFUL_SECONDS = 10
# Idle keep-alive connections are closed after this long (clients such as wrk or an exchange's HTTP pool reuse
# connections; a short bound frees sockets of clients that went away).
_KEEP_ALIVE_SECONDS = 30


class WatchlistProbe:
    """Checks the watchlist every _PROBE_SECONDS in a daemon thread: readiness and the version gauge follow it."""

    def __init__(self, lookup: WatchlistLookup, state: ApiState, metrics: ApiMetrics) -> None:
        self.lookup, self.state, self.metrics = lookup, state, metrics
        self._rounds = Periodic("api-watchlist-probe", _PROBE_SECONDS, self.check, now=True)
        self._version: str | None = None

    def start(self) -> WatchlistProbe:
        self._rounds.start()
        return self

    def stop(self) -> None:
        self._rounds.stop()

    def check(self) -> None:
        try:
            result = self.lookup.check()
        except LookupUnavailable as exc:
            if self.state.outage != exc.reason:
                log.error(  # noqa: TRY400 - an expected outage: the reason says it all
                    "watchlist unavailable: the API answers 503 (fail closed)",
                    extra={"reason": exc.reason, "detail": exc.detail},
                )
            self.state.set_not_ready(exc.reason)
            return
        if result.version != self._version:
            self._version = result.version
            self.metrics.watchlist_info.info({"version": result.version, "digest": result.digest or ""})
            log.info("watchlist version in use", extra={"version": result.version, "addresses": result.size})
        self.state.set_ready(result.version)


def build_screener(
    settings: Settings,
    client: redis.Redis,
    policy: PolicyWatcher | None = None,
    *,
    output_ids: OutputSchemaIds | None = None,
    catalog: SchemaCatalog | None = None,
) -> tuple[PreScreener, WatchlistLookup]:
    """The PreScreener: the stream's BatchScreener over the API's synthetic records (decoded with the bundled
    schemas: the record never leaves the process) and the same watchlist lookup. ``output_ids``: the registry's ids
    of the output schemas when decisions are recorded (else the bundled ones: the encoded outputs are dropped)."""
    catalog = catalog or SchemaCatalog(Path(settings.schema_dir) if settings.schema_dir else None)
    lookup = WatchlistLookup(client, WatchlistKeys(settings.watchlist_key_prefix))
    bundled = OutputSchemaIds(
        catalog.current(SCREENING_DECISION).schema_id, catalog.current(WITHDRAWAL_FLAGGED).schema_id, None
    )
    batch = batch_screener(
        settings,
        repository=LocalSchemaRepository(catalog),
        catalog=catalog,
        ids=output_ids or bundled,
        lookup=lookup.lookup,
        policy=(lambda: policy.current) if policy is not None else _default_policy,
        keep_decisions=True,
    )
    withdrawal = catalog.current(WITHDRAWAL_REQUESTED)
    screener = PreScreener(
        lookup=lookup.lookup,
        batch=batch,
        event_encoder=EventEncoder(withdrawal.schema, withdrawal.schema_id),
        policy=batch.policy,
    )
    return screener, lookup


def _default_policy() -> Policy:
    return DEFAULT_POLICY


def run(settings: Settings) -> int:
    """`aml-screener api` until SIGTERM/SIGINT; returns the exit code."""
    if not settings.api_keys_file:
        log.error(
            "cannot start: AML_API_KEYS_FILE is not set (the API accepts only API keys; create one with "
            "`aml-screener api keys create --name NAME --file keys.json`)"
        )
        return EXIT_CONFIG
    metrics = ApiMetrics()
    state = ApiState(stall_seconds=settings.health_stall_seconds)
    state.on_readiness = lambda ready: metrics.ready.set(1 if ready else 0)
    try:
        keys = KeysWatcher(
            Path(settings.api_keys_file),
            interval_seconds=settings.api_keys_reload_seconds,
            on_reload=metrics.keys_changed,
        )
        policies = PolicyWatcher.from_settings(settings, metrics)
    except (KeysFileError, PolicyError) as exc:
        log.error("cannot start", extra={"detail": str(exc)})  # noqa: TRY400
        return EXIT_CONFIG
    catalog = SchemaCatalog(Path(settings.schema_dir) if settings.schema_dir else None)
    recorder = None
    output_ids = None
    if settings.api_record_decisions:
        try:
            output_ids = output_schema_ids(settings, schema_repository(settings, catalog), catalog)
        except (SchemaSourceUnavailable, OutputSchemaUnavailable) as exc:
            log.error("cannot start: output schema ids unavailable", extra={"detail": str(exc)})  # noqa: TRY400
            return EXIT_CONFIG
        producer = producer_config(settings)
        log.info("recording decisions", extra={"producer": redacted(producer)})
        recorder = DecisionRecorder(Emitter(producer), timeout_seconds=settings.api_record_timeout_seconds).start()
    client = redis_client(settings)
    screener, lookup = build_screener(settings, client, policies, output_ids=output_ids, catalog=catalog)
    context = ApiContext(
        screener=screener,
        keys=lambda: keys.ring,
        metrics=metrics,
        state=state,
        max_body_bytes=settings.api_max_body_bytes,
        max_batch=settings.api_max_batch,
        recorder=recorder,
    )
    probe = WatchlistProbe(lookup, state, metrics)
    health = (
        HealthServer(settings.http_host, settings.http_port, state, metrics).start() if settings.http_port else None
    )
    log.info("starting pre-screen API", extra={"settings": settings.redacted()})
    keys.start()
    policies.start()
    probe.start()
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(context),
            host=settings.api_host,
            port=settings.api_port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,  # one line per request would cost more than the screening; errors are logged
            log_config=None,  # our JSON logging (configured by the CLI) handles uvicorn's loggers too
            timeout_keep_alive=_KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=_GRACEFUL_SECONDS,
            server_header=False,
        )
    )
    if threading.current_thread() is threading.main_thread():
        # uvicorn handles SIGTERM/SIGINT while it serves (stop accepting, finish what is in flight), then restores the
        # handlers it found and raises the signal again. This handler is the one it finds: that second delivery only
        # repeats the stop, so the process exits 0 after a graceful stop (the default handler would kill it); a
        # signal before uvicorn took over makes it stop as soon as it started.
        def stop(signum: int, frame: FrameType | None) -> None:
            del signum, frame
            server.should_exit = True

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
    try:
        server.run()
    finally:
        probe.stop()
        policies.stop()
        keys.stop()
        if recorder is not None:
            recorder.close(settings.api_record_timeout_seconds)
        if health is not None:
            health.close()
    return 0 if server.started else 1
