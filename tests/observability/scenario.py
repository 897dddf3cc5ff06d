"""A screener at work, observed by a real Prometheus: the scenario behind the dashboard-query test and
`scripts/render_dashboards.py --demo`.

Embedded stack (the librdkafka mock, so `render_dashboards.py --demo` needs no JVM, + redis-server) with the
bundled OFAC sample, one real `aml-screener run` process, a Prometheus scraping it every second with the alert
rules loaded, and a seeded withdrawal stream with sanctions hits, unscreenable and malformed records, produced in
waves, with one short watchlist outage (Redis paused) so that the fail-closed series exist too.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.generator import EventGenerator, Expected, GeneratedEvent
from tests.integration.harness import (
    IsolatedStack,
    ScreenerProcess,
    encoder,
    isolated_stack,
    load_bundled_watchlist,
    produce,
)
from tests.observability.prom import PrometheusServer

# Redis stays paused this long: longer than the harness's AML_REDIS_TIMEOUT_SECONDS (0.5 s), so lookups time out
# and the screener fails closed, short enough to keep the test quick.
OUTAGE_MS = 2000
_SLICES = 5


@dataclass
class Run:
    stack: IsolatedStack
    screener: ScreenerProcess
    prometheus: PrometheusServer
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
        """Until Prometheus holds the screener's final counts (so every query sees the whole run)."""
        want = self.decided_or_dead_lettered()
        query = "sum(aml_screener_decisions_total) + (sum(aml_screener_dead_lettered_total) or vector(0))"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.prometheus.query(query)
            if result and float(result[0]["value"][1]) >= want:
                return
            time.sleep(0.25)
        raise AssertionError(f"Prometheus did not scrape the final counts ({want}) within {timeout}s")


_DECISIONS = ("clear", "flagged", "unscreenable")


@contextlib.contextmanager
def observed_screener(scrape_interval: float = 1.0) -> Iterator[Run]:
    """Stack, screener and Prometheus, all started; everything stopped and removed on exit."""
    with isolated_stack(None, broker="mock") as stack:
        screener = ScreenerProcess(stack, group=f"aml-observability-{uuid.uuid4().hex[:8]}", instance="s1")
        prometheus = PrometheusServer([f"127.0.0.1:{screener.port}"], scrape_interval=scrape_interval)
        try:
            prometheus.start()
            run = Run(stack, screener, prometheus)
            load_bundled_watchlist(stack.redis_url)
            screener.start()
            screener.wait_assigned()
            yield run
        finally:
            screener.close()
            prometheus.close()


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
    """Produce `waves` waves of seeded withdrawals (sanctions hits, unscreenable and malformed records among them),
    `pause` seconds apart; when wave `outage_at_wave` starts (0-based), pause Redis for OUTAGE_MS while it arrives."""
    generator = EventGenerator(
        sample_listings(), encoder(), seed=seed, hit_share=hit_share, invalid_share=0.01, malformed_share=0.01
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
