"""Keeps the screener informed about the watchlist between batches: change notifications and source freshness.

A background thread subscribes to the sync job's change channel (each message: a new version and its diff) and
refreshes per-source freshness gauges from the version metadata and the sync states: publication time of each
source's data, time of its last successful sync, whether its last attempt failed. It never decides anything:
the lookup itself switches to a new version atomically at the next batch, so a lost notification costs nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from aml_screener.infra.watchlist_layout import VersionRecord, WatchlistKeys
from aml_screener.screener.metrics import Metrics

log = logging.getLogger(__name__)

# Freshness gauges are refreshed this often even without notifications (a failing sync publishes nothing).
_REFRESH_SECONDS = 15.0
# Back-off after a Redis error in this thread (the lookup, not this thread, decides about failing closed).
_ERROR_BACKOFF_SECONDS = 2.0


class WatchlistWatcher(threading.Thread):
    def __init__(self, client: redis.Redis, keys: WatchlistKeys, metrics: Metrics) -> None:
        super().__init__(name="watchlist-watch", daemon=True)
        self.redis = client
        self.keys = keys
        self.metrics = metrics
        self._stop = threading.Event()
        self._sources: set[str] = set()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except redis.RedisError as exc:
                log.debug("watchlist watcher: redis error, retrying", extra={"error": str(exc)})
                self._stop.wait(_ERROR_BACKOFF_SECONDS)

    def _watch(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.keys.changes)
        try:
            next_refresh = 0.0
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._on_change(message.get("data"))
                    next_refresh = 0.0
                if time.monotonic() >= next_refresh:
                    self.refresh()
                    next_refresh = time.monotonic() + _REFRESH_SECONDS
        finally:
            pubsub.close()

    def _on_change(self, data: Any) -> None:
        self.metrics.watchlist_notifications.inc()
        try:
            change = json.loads(data)
        except (TypeError, ValueError):
            log.warning("unreadable watchlist change notification")
            return
        summary = {
            name: {k: source.get(k) for k in ("added", "removed", "changed")}
            for name, source in (change.get("sources") or {}).items()
        }
        log.info("watchlist changed", extra={"version": change.get("version"), "sources": summary})

    def refresh(self) -> None:
        """Freshness gauges from the active version's metadata and the per-source sync states."""
        version = self.redis.get(self.keys.active)
        if version is None:
            return
        raw: dict[str, str] = self.redis.hgetall(self.keys.version(str(version)))  # type: ignore[assignment]
        if not raw:
            return
        try:
            record = VersionRecord.from_redis(raw)
        except (KeyError, ValueError):
            return  # the lookup fails closed on it and says why; the gauges keep their last values
        self.metrics.watchlist_created.set(record.created_at)
        sources = record.sources
        for stale in self._sources - set(sources):
            for gauge in (
                self.metrics.source_published,
                self.metrics.source_last_success,
                self.metrics.source_failing,
                self.metrics.source_addresses,
            ):
                gauge.remove(stale)
        self._sources = set(sources)
        for name, stats in sources.items():
            self.metrics.source_addresses.labels(name).set(float(stats.get("keys") or 0))
            state: dict[str, str] = self.redis.hgetall(self.keys.source_state(name))  # type: ignore[assignment]
            published = state.get("published_at") or (
                f"{stats['published_at'] / 1000:.3f}" if stats.get("published_at") else ""
            )
            if published:
                self.metrics.source_published.labels(name).set(float(published))
            if state.get("last_success_at"):
                self.metrics.source_last_success.labels(name).set(float(state["last_success_at"]))
            failing = bool(state.get("last_error")) and float(state.get("last_failure_at") or 0) >= float(
                state.get("last_success_at") or 0
            )
            self.metrics.source_failing.labels(name).set(1 if failing else 0)
