"""Metrics of the history indexer and the lookback, in one object per process against its own registry.

Prefix `aml_history_` (a service beside the screener, with its own up/ready). Labels are bounded: topics and
tables are configuration, categories and severities closed sets from the watchlist, `found_by` two values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

# From 1 ms (a batch of a few rows) to 2 min (a large version's lookback).
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class HistoryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.up = Gauge(
            "aml_history_up", "1 while the history process (indexer or lookback) runs.", ["role"], registry=r
        )
        self.ready = Gauge(
            "aml_history_ready",
            "1 when the process can do its work (database reachable and migrated; the lookback: Redis reachable and "
            "the lock held).",
            ["role"],
            registry=r,
        )
        # --- indexer -------------------------------------------------------------------------------------
        self.records_consumed = Counter(
            "aml_history_records_consumed_total", "Records the indexer consumed, by topic.", ["topic"], registry=r
        )
        self.rows_written = Counter(
            "aml_history_rows_written_total",
            "Rows the indexer stored, by table (screened_addresses, screened_events); re-delivered ones not counted.",
            ["table"],
            registry=r,
        )
        self.rows_duplicate = Counter(
            "aml_history_rows_duplicate_total",
            "Rows the history already held (a re-delivered or re-screened record), by table.",
            ["table"],
            registry=r,
        )
        self.skipped = Counter(
            "aml_history_skipped_total",
            "Records not indexed, by reason: input records that cannot be decoded (the screener dead-letters them) "
            "and decisions that cannot be decoded (dead-lettered to AML_HISTORY_DEAD_LETTER_TOPIC).",
            ["reason"],
            registry=r,
        )
        self.stage_duration = Histogram(
            "aml_history_stage_duration_seconds",
            "Wall time of one stage for one batch (decode, write, check, produce, commit) or one version (ingest, "
            "lookup, produce).",
            ["stage"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "aml_history_batch_size_records",
            "Records per indexed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "aml_history_consumer_lag_records",
            "High watermark minus consumed position, per assigned partition of the indexer.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_batch_timestamp = Gauge(
            "aml_history_last_batch_timestamp_seconds",
            "Unix time the indexer last committed a batch (progress indicator).",
            registry=r,
        )
        self.database_errors = Counter(
            "aml_history_database_errors_total",
            "Database operations that failed (retried with back-off; nothing is committed past them), by process.",
            ["role"],
            registry=r,
        )
        # --- lookback ------------------------------------------------------------------------------------
        self.retroactive_matches = Counter(
            "aml_history_retroactive_matches_total",
            "RetroactiveMatch records produced and acknowledged (past screened addresses a new listing applies to), "
            "by the highest category and severity of their matches, direction, and who found them.",
            ["category", "severity", "direction", "found_by"],
            registry=r,
        )
        self.delisted = Counter(
            "aml_history_delisted_total",
            "Delisted records produced and acknowledged: kind 'listing' (the announcement) or 'decision' (a past "
            "flagged decision it affects).",
            ["kind"],
            registry=r,
        )
        self.delisted_open_actions = Counter(
            "aml_history_delisted_open_actions_total",
            "Past decisions holding funds (hold, review, freeze) whose listing was removed: to be reviewed for "
            "release.",
            registry=r,
        )
        self.versions_processed = Counter(
            "aml_history_lookback_versions_total",
            "Watchlist versions the lookback finished (matches and delistings acknowledged), by kind: change, "
            "baseline (the first it saw), skipped (garbage-collected in Redis before it could read them; their "
            "changes are folded into the next version's).",
            ["kind"],
            registry=r,
        )
        self.processed_version = Info(
            "aml_history_lookback_version", "The last watchlist version the lookback finished.", registry=r
        )
        self.processed_created = Gauge(
            "aml_history_lookback_processed_timestamp_seconds",
            "Activation time of the last watchlist version the lookback finished.",
            registry=r,
        )
        self.active_created = Gauge(
            "aml_history_lookback_active_timestamp_seconds",
            "Activation time of the active watchlist version (what the lookback must reach).",
            registry=r,
        )
        self.pending_versions = Gauge(
            "aml_history_lookback_pending_versions",
            "Watchlist versions activated but not yet finished by the lookback.",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "aml_history_lookback_lag_seconds",
            "How long the oldest unfinished watchlist version has been active (0 when the lookback is current).",
            registry=r,
        )
        self.version_latency = Histogram(
            "aml_history_lookback_version_seconds",
            "From a watchlist version's activation to the lookback having every record of it acknowledged.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.notifications = Counter(
            "aml_history_lookback_notifications_total",
            "Watchlist change notifications received (Redis pub/sub; the active version is also checked on a timer).",
            registry=r,
        )
