"""A screener at work, observed by a real Prometheus: the scenario behind the dashboard-query test and
`scripts/render_dashboards.py --demo`.

Embedded stack (the librdkafka mock, so `render_dashboards.py --demo` needs no JVM, + redis-server) with the
bundled OFAC sample, one real `aml-screener run` process, a Prometheus scraping it every second with the alert
rules loaded, and a seeded stream of withdrawals and deposits (a quarter) with sanctions hits, unscreenable and
malformed records, produced in waves, with one short watchlist outage (Redis paused) so that the fail-closed series
exist too. Beside it one `aml-screener report serve` with two OFAC reporting obligations (a sanctions reject decided
a month ago, overdue, and a freeze decided now), from flagged events produced here with those dates, so the
reporting panels and alerts have series whatever the screener decided during the run. And the screening history:
a real PostgreSQL, `aml-screener history index` storing the stream and `aml-screener history lookback`; at the end a
sync lists a destination the stream already sent to (`list_past_destination`), so the lookback's panels and alerts
have retroactive matches behind them. The pre-screen API is scraped too.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.api_process import ApiProcess
from aml_screener.devstack.generator import EventGenerator, Expected, GeneratedEvent
from aml_screener.devstack.postgres_server import PostgresServer
from aml_screener.devstack.stack import MOCK_SCREENER_ENV
from aml_screener.screener.schemas import DEPOSIT_RECEIVED
from aml_screener.screening.records import Direction
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync
from tests.history_support import HistoryProcess, HistoryTopics, fresh_database, history_env
from tests.integration.harness import (
    IsolatedStack,
    ScreenerProcess,
    encoder,
    isolated_stack,
    load_bundled_watchlist,
    produce,
)
from tests.integration.reporting_process import ReporterProcess, produce_values, reporting_env
from tests.observability.prom import PrometheusServer
from tests.reporting_support import deposit_flagged, encode, withdrawal_flagged

# Redis stays paused this long: longer than the harness's AML_REDIS_TIMEOUT_SECONDS (0.5 s), so lookups time out
# and the screener fails closed, short enough to keep the test quick.
OUTAGE_MS = 2000
_SLICES = 5
# Deposits among the events, so the per-direction panels (deposits frozen, matches by direction) have series.
DEPOSIT_SHARE = 0.25


# The obligations topic on the mock, which has no admin API to create (or check) a compacted topic: created here.
OBLIGATIONS_TOPIC = "compliance.obligations"


@dataclass
class Run:
    stack: IsolatedStack
    screener: ScreenerProcess
    prometheus: PrometheusServer
    reporter: ScreenerProcess
    indexer: HistoryProcess
    lookback: HistoryProcess
    api: ApiProcess | None = None  # the pre-screen API, scraped too (its alert watches its readiness)
    started_at: float = field(default_factory=time.time)
    produced: list[GeneratedEvent] = field(default_factory=list)

    def expected(self, outcome: Expected) -> int:
        return sum(1 for event in self.produced if event.expected is outcome)

    def decided_or_dead_lettered(self) -> float:
        decisions = sum(self.screener.metric("aml_screener_decisions_total", decision=d) for d in _DECISIONS)
        dead = sum(
            value
            for line in self.screener.metrics().splitlines()
            if line.startswith("aml_screener_dead_lettered_total{")
            for value in [float(line.rpartition(" ")[2])]
        )
        return decisions + dead

    def wait_all_handled(self, timeout: float = 60) -> None:
        total = len(self.produced)
        self.screener.wait_until(lambda: self.decided_or_dead_lettered() >= total, timeout, f"{total} events handled")

    def wait_scraped(self, timeout: float = 15) -> None:
        """Until Prometheus holds the screener's final counts and the reporter's obligations (so every query sees
        the whole run)."""
        wanted = {
            "sum(aml_screener_decisions_total) + (sum(aml_screener_dead_lettered_total) or vector(0))": (
                self.decided_or_dead_lettered()
            ),
            "sum(aml_screener_reporting_open_obligations)": float(REPORTED_OBLIGATIONS),
            "sum(aml_history_retroactive_matches_total) or vector(0)": self.retroactive_matches(),
            # a few scrapes of the matches' series: a rate over the last seconds needs two samples
            "min(count_over_time(aml_history_retroactive_matches_total[1m])) or vector(0)": 3.0,
        }
        for query, want in wanted.items():
            deadline = time.monotonic() + timeout
            while True:
                result = self.prometheus.query(query)
                if result and float(result[0]["value"][1]) >= want:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"Prometheus did not scrape {query} >= {want} within {timeout}s")
                time.sleep(0.25)

    def retroactive_matches(self) -> float:
        return sum(p.metric("aml_history_retroactive_matches_total") for p in (self.indexer, self.lookback))

    def list_past_destination(self, timeout: float = 90) -> None:
        """A sync lists (as `theft`) the destination of a clear withdrawal the stream already made, once the
        history holds it; wait for its retroactive match."""
        clean = next(e for e in self.produced if e.expected is Expected.CLEAR and e.direction is Direction.WITHDRAWAL)
        self.indexer.wait_until(
            lambda: (
                self.indexer.metric("aml_history_rows_written_total", table="screened_addresses")
                >= self.expected(Expected.CLEAR)
            ),
            timeout,
            "the stream in the history",
        )
        with tempfile.TemporaryDirectory(prefix="aml-observability-") as lists:
            (Path(lists) / f"hacks_{clean.asset}.txt").write_text(f"{clean.address}\n")
            config = AddressListConfig(name="hacks", location=f"{lists}/*.txt", list="hacks", category="theft")
            store = WatchlistStore(redis.Redis.from_url(self.stack.redis_url, decode_responses=True))
            assert run_sync(store, [config], keep_other_sources=True).activated
        self.lookback.wait_until(lambda: self.retroactive_matches() >= 1, timeout, "a retroactive match")


_DECISIONS = ("clear", "flagged", "unscreenable")


@contextlib.contextmanager
def observed_screener(scrape_interval: float = 1.0) -> Iterator[Run]:
    """Stack, screener and Prometheus, all started; everything stopped and removed on exit."""
    with (
        isolated_stack(None, broker="mock") as stack,
        PostgresServer() as postgres,
        fresh_database(postgres) as dsn,
    ):
        screener = ScreenerProcess(stack, group=f"aml-observability-{uuid.uuid4().hex[:8]}", instance="s1")
        group = f"aml-observability-reporting-{uuid.uuid4().hex[:8]}"
        env = {**reporting_env(OBLIGATIONS_TOPIC, group), "AML_REPORTING_MANAGE_TOPIC": "false"}
        reporter = ReporterProcess(stack, group=group, instance="r1", env=env)
        history_topics = HistoryTopics.unique()
        history = history_env(
            stack, dsn, history_topics, AML_HISTORY_GROUP_ID=f"aml-observability-history-{group}", **MOCK_SCREENER_ENV
        )
        indexer, lookback = HistoryProcess("index", history, "indexer"), HistoryProcess("lookback", history, "lookback")
        api = ApiProcess(stack.redis_url)
        targets = [f"127.0.0.1:{process.port}" for process in (screener, reporter, indexer, lookback)]
        targets.append(f"127.0.0.1:{api.http_port}")
        prometheus = PrometheusServer(targets, scrape_interval=scrape_interval)
        try:
            prometheus.start()
            run = Run(stack, screener, prometheus, reporter, indexer, lookback, api)
            load_bundled_watchlist(stack.redis_url)
            history_topics.create(stack)
            screener.start()
            api.start()
            indexer.start()
            lookback.start()
            screener.wait_assigned()
            api.wait_ready()
            start_reporting(run)
            indexer.wait_ready()
            lookback.wait_ready()  # the bundled sample is its baseline
            yield run
        finally:
            screener.close()
            reporter.close()
            api.close()
            indexer.close()
            lookback.close()
            prometheus.close()


REPORTED_OBLIGATIONS = 2


def start_reporting(run: Run) -> None:
    """The reporter with its topics, and two obligations recorded: one overdue, one due in two weeks."""
    run.stack.kafka.create_topic(OBLIGATIONS_TOPIC, 1)
    run.reporter.start()
    run.reporter.wait_until(lambda: run.reporter.probe("/readyz")[0] == 200, 60, "reporter ready")
    now = datetime.now(UTC)
    rejected = withdrawal_flagged(action="reject", flagged_at=now - timedelta(days=30))
    frozen = deposit_flagged(action="freeze", flagged_at=now)
    servers = run.stack.bootstrap_servers
    produce_values(servers, run.stack.topics.flagged, [(rejected["event_id"].encode(), encode(rejected))])
    produce_values(servers, run.stack.topics.deposit_flagged, [(frozen["event_id"].encode(), encode(frozen))])

    def recorded() -> bool:
        open_ = run.reporter.metric("aml_screener_reporting_open_obligations", kind="rejected_transaction")
        return open_ + run.reporter.metric("aml_screener_reporting_open_obligations", kind="blocked_property") >= 2

    run.reporter.wait_until(recorded, 60, f"{REPORTED_OBLIGATIONS} obligations recorded")


def run_traffic(
    run: Run,
    *,
    waves: int = 6,
    per_wave: int = 600,
    pause: float = 1.0,
    outage_at_wave: int | None = 3,
    seed: int = 5,
    hit_share: float = 0.04,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Produce `waves` waves of seeded withdrawals and deposits (sanctions hits, unscreenable and malformed records
    among them), `pause` seconds apart; when wave `outage_at_wave` starts (0-based), pause Redis for OUTAGE_MS while
    it arrives."""
    generator = EventGenerator(
        sample_listings(),
        encoder(),
        seed=seed,
        hit_share=hit_share,
        invalid_share=0.01,
        malformed_share=0.01,
        deposit_share=DEPOSIT_SHARE,
        deposit_encoder=encoder(DEPOSIT_RECEIVED),
    )
    client = redis.Redis.from_url(run.stack.redis_url)
    try:
        for wave in range(waves):
            if outage_at_wave is not None and wave == outage_at_wave:
                # Every client, the screener's included, blocks (then times out) until the pause ends.
                client.client_pause(OUTAGE_MS)
            # Each wave in a few slices spread over `pause`, so rates look like traffic rather than bursts.
            for _ in range(_SLICES):
                events = list(generator.stream(per_wave // _SLICES))
                produce(run.stack, events)
                run.produced.extend(events)
                time.sleep(pause / _SLICES)
            if progress is not None:
                progress(f"wave {wave + 1}/{waves}: {len(run.produced)} events produced")
    finally:
        client.close()
