"""The reporter's metrics, in one object against a registry tests can replace.

The obligation gauges are computed from the book at each scrape (a collector), so "due soon" and "overdue" follow
the clock even while nothing is consumed: `aml_screener_reporting_open_obligations{kind}`,
`_due_soon_obligations{kind}`, `_overdue_obligations{kind}` and `_next_due_timestamp_seconds` (the earliest
deadline of an open obligation; absent when none is open, so no alert compares against a made-up date). Labels are
closed sets: kind (rejected_transaction, blocked_property), direction, topic (the configured flagged topics and the
obligations topic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.obligations import ObligationKind


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _ObligationCollector(Collector):
    def __init__(self, book: ObligationBook, warn_business_days: int, clock: Callable[[], datetime]) -> None:
        self.book = book
        self.warn_business_days = warn_business_days
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        summary = self.book.summary(self.clock(), self.warn_business_days)
        for name, help_text, counts in (
            ("aml_screener_reporting_open_obligations", "OFAC reports owed and not yet filed.", summary.open),
            (
                "aml_screener_reporting_due_soon_obligations",
                "Open obligations with AML_REPORTING_WARN_BUSINESS_DAYS or fewer US business days left (not overdue).",
                summary.due_soon,
            ),
            (
                "aml_screener_reporting_overdue_obligations",
                "Open obligations past their deadline (the end of the 10th business day, Eastern time).",
                summary.overdue,
            ),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["kind"])
            for kind in ObligationKind:
                family.add_metric([kind.value], counts[kind])
            yield family
        next_due = GaugeMetricFamily(
            "aml_screener_reporting_next_due_timestamp_seconds",
            "Deadline of the open obligation due first (Unix time); absent when no obligation is open.",
        )
        if summary.next_due is not None:
            next_due.add_metric([], summary.next_due.timestamp())
        yield next_due
        yield GaugeMetricFamily(
            "aml_screener_reporting_known_obligations",
            "Obligations, open and filed, in the state read from the obligations topic.",
            value=len(self.book),
        )


class ReportingMetrics:
    def __init__(
        self,
        book: ObligationBook,
        *,
        warn_business_days: int = 2,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        r.register(_ObligationCollector(book, warn_business_days, clock))
        self.up = Gauge("aml_screener_reporting_up", "1 while `aml-screener report serve` runs.", registry=r)
        self.ready = Gauge(
            "aml_screener_reporting_ready",
            "1 when the reporter has rebuilt its state and records obligations (Kafka and schemas reachable).",
            registry=r,
        )
        self.flagged = Counter(
            "aml_screener_reporting_flagged_events",
            "Flagged events read from the flagged topics.",
            ["direction"],
            registry=r,
        )
        self.recorded = Counter(
            "aml_screener_reporting_obligations_recorded",
            "New obligations this process wrote to the obligations topic (acknowledged by Kafka).",
            ["kind"],
            registry=r,
        )
        self.unreadable = Counter(
            "aml_screener_reporting_unreadable_records",
            "Records skipped because they are no flagged event or no obligation (logged with their position).",
            ["topic"],
            registry=r,
        )
        self.errors = Counter(
            "aml_screener_reporting_errors",
            "Loop errors (poll, write, schema registry), each retried after a back-off.",
            ["where"],
            registry=r,
        )
        for kind in ObligationKind:
            self.recorded.labels(kind.value)
