"""Telling the world what a new watchlist version changed.

Responsible for: the diff of an activated version against its parent, per source (counts, and the address keys
added and removed for tables small enough to enumerate), one JSON message on the Redis change channel per
activated version (screeners reload on it; keys listed up to `NOTIFY_KEYS_MAX` per source), and, when configured,
the changed address keys as records of a compacted Kafka topic (key = address key, value = every current listing
as JSON, a tombstone when the key is gone).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from email.utils import formatdate
from typing import Any

from confluent_kafka import Producer

# The Kafka client configuration is the service's (TLS, SASL settings); it moves to the shared plumbing with issue
# 12, item 3.
from aml_screener.infra.kafka import producer_config
from aml_screener.infra.settings import Settings
from aml_screener.infra.watchlist_layout import VersionRecord
from aml_screener.watchlist.errors import WatchlistWriteError
from aml_screener.watchlist.store import TableInfo, WatchlistStore

# Diffs are enumerated (keys listed in the notification and on Kafka) only for tables up to this size; larger
# ones are reported as counts, because listing millions of keys in one message helps nobody.
DIFF_ENUMERATE_MAX = 200_000
# Keys listed in one pub/sub notification (the full diff goes to Kafka when configured).
NOTIFY_KEYS_MAX = 1_000
# The Kafka producer gets this long to have every change record acknowledged before the sync reports a failure.
KAFKA_FLUSH_SECONDS = 30

Publish = Callable[[dict[str, str | None]], None]
"""Sends change records (address key -> JSON listings, None for a tombstone) and returns once acknowledged."""
Diff = dict[str, dict[str, Any]]
"""Per source: added, removed and changed counts, and added_keys/removed_keys (None when not enumerated)."""


def publish_changes(
    store: WatchlistStore,
    meta: VersionRecord,
    previous: Mapping[str, str],
    tables: Mapping[str, TableInfo],
    kafka_publish: Publish | None = None,
) -> Diff:
    """The diff of the activated version `meta` against the tables of its parent (`previous`: source -> table
    key), notified on the change channel and, with `kafka_publish`, sent to Kafka. Sources no longer in the
    version count as every key removed."""
    diff: Diff = {}
    for name, table in tables.items():
        table_diff = store.diff(previous.get(name), table.key, enumerate_up_to=DIFF_ENUMERATE_MAX)
        diff[name] = {
            "added": table_diff.added,
            "removed": table_diff.removed,
            "changed": table_diff.changed,
            "added_keys": table_diff.added_keys,
            "removed_keys": table_diff.removed_keys,
        }
    for name in set(previous) - set(tables):  # dropped sources: every key removed
        size = int(store.redis.hlen(previous[name]))
        keys = [key for key, _ in store.iter_table(previous[name])] if size <= DIFF_ENUMERATE_MAX else None
        diff[name] = {"added": 0, "removed": size, "changed": 0, "added_keys": [], "removed_keys": keys}
    _notify(store, meta.version, meta.parent, diff)
    if kafka_publish is not None:
        _publish_to_kafka(store, meta.tables, diff, kafka_publish)
    return diff


def _notify(store: WatchlistStore, version: str, previous: str | None, diff: Diff) -> None:
    message: dict[str, Any] = {"version": version, "previous": previous, "at": formatdate(usegmt=True), "sources": {}}
    for name, change in diff.items():
        entry = {k: change[k] for k in ("added", "removed", "changed")}
        for field_name in ("added_keys", "removed_keys"):
            keys = change[field_name]
            if keys is not None and len(keys) <= NOTIFY_KEYS_MAX:
                entry[field_name] = keys
        message["sources"][name] = entry
    store.redis.publish(store.keys.changes, json.dumps(message))


def _publish_to_kafka(store: WatchlistStore, tables: Mapping[str, str], diff: Diff, publish: Publish) -> None:
    """Changed keys as records of a compacted topic: value = all current listings, None (tombstone) = removed."""
    changed: set[str] = set()
    for change in diff.values():
        for field_name in ("added_keys", "removed_keys"):
            if change[field_name] is not None:
                changed.update(change[field_name])
    records: dict[str, str | None] = {}
    for key in sorted(changed):
        matches: list[Any] = []
        for table in tables.values():
            value = store.redis.hget(table, key)
            if value is not None:
                matches.extend(json.loads(str(value)))
        records[key] = json.dumps(matches) if matches else None
    if records:
        publish(records)


def kafka_publisher(topic: str, settings: Settings) -> Publish:
    """A `Publish` producing to `topic` with the service's Kafka client configuration (TLS, SASL)."""
    producer = Producer(producer_config(settings))

    def publish(records: dict[str, str | None]) -> None:
        for key, value in records.items():
            producer.produce(topic, value.encode() if value is not None else None, key.encode())
            producer.poll(0)
        undelivered = producer.flush(KAFKA_FLUSH_SECONDS)
        if undelivered:
            raise WatchlistWriteError(f"{undelivered} watchlist change records not acknowledged by Kafka")

    return publish


__all__ = ["DIFF_ENUMERATE_MAX", "NOTIFY_KEYS_MAX", "Diff", "Publish", "kafka_publisher", "publish_changes"]
