"""`aml-screener watchlist sync`: fetch every configured source, build the new version beside the active one, swap
atomically, publish what changed. This module orchestrates; the jobs it calls live beside it: `config.py` (what
the operator configured), `sources/registry.py` (what each format reads, and with which parser), `fetch.py`
(files and conditional downloads), `store.py` (tables and versions in Redis), `publish.py` (change notification).

Per source: plan (the registry) -> fetch (a file, or an HTTP(S) URL with a conditional request so an unchanged list
is not downloaded again) -> parse -> write its table. A source that fails (unreachable, unparsable, empty,
refused by an integrity guard) keeps the table it had in the active version; if it never had one, it is missing
from the version and reported. Only what a list or the network can do wrong counts as a failure
(`errors.SOURCE_ERRORS`); anything else is a bug and stops the sync with its traceback, nothing activated. If no
source has data (the first load failed), nothing is activated and screeners stay not-ready. The diff per source is
published on the Redis change channel (and, when configured, as records on a compacted Kafka topic keyed by
address key).

Integrity guards (a refused source keeps its previous table, exactly like a failed one):
- checksum: the content's SHA-256 must equal the one configured (`sha256`) or published beside it
  (`checksum_location`, e.g. OFAC's sdn_advanced_checksum.txt, which hashes the decompressed XML);
- shrink: a source whose new table has lost more than `max_shrink` of the previous table's keys (default half;
  an empty result always fails) is refused: a truncated download or a broken publication is not a delisting;
- counts: the table written must hold exactly the keys parsed (TableWriter), and a previous table that no longer
  holds the keys its version recorded (Redis lost or altered data) is rebuilt from the source, not trusted;
- key scheme: a previous table built under other key rules (another release, other Solana mints) is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aml_screener.watchlist.config import SourceConfig, load_config
from aml_screener.watchlist.errors import (
    SOURCE_ERRORS,
    IntegrityError,
    SyncFailed,
    WatchlistWriteError,
)
from aml_screener.watchlist.fetch import FetchedFiles, fetch_all, open_location
from aml_screener.watchlist.publish import Diff, Publish, publish_changes
from aml_screener.watchlist.sources.base import ParseReport, Rejection, SourceEntry
from aml_screener.watchlist.sources.ofac_xml import parse_checksum_file
from aml_screener.watchlist.sources.registry import Plan, format_of
from aml_screener.watchlist.store import TableInfo, WatchlistStore

log = logging.getLogger(__name__)


@dataclass
class SourceResult:
    name: str
    status: str  # updated | unchanged | failed-kept-previous | failed-missing
    table: TableInfo | None
    report: ParseReport | None = None
    error: str | None = None
    rejected: list[Rejection] = field(default_factory=list)


@dataclass
class SyncResult:
    version: str | None
    activated: bool
    sources: list[SourceResult]
    diff: Diff
    seconds: float


ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""Starts a progress bar for a source (name, total bytes) and returns its tick (bytes read)."""


def run_sync(
    store: WatchlistStore,
    configs: Sequence[SourceConfig],
    *,
    progress: ProgressFactory | None = None,
    kafka_publish: Publish | None = None,
    keep_rejected: int = 1_000,
    keep_other_sources: bool = False,
) -> SyncResult:
    """Sync every configured source into a new version (or keep the active one when nothing changed).

    The configuration is the complete set of sources: a source the active version has but the configuration no
    longer names is dropped — unless `keep_other_sources` (used by `watchlist load`, which updates one list).
    """
    started = time.monotonic()
    with store.writer_lock():
        active = store.active_meta()
        previous = active.tables if active else {}
        recorded = {name: int(info.get("keys", 0)) for name, info in (active.sources if active else {}).items()}
        results = [
            _sync_source(
                store,
                config,
                previous_tables=previous,
                recorded_keys=recorded,
                progress=progress,
                keep_rejected=keep_rejected,
            )
            for config in configs
        ]
        tables = {r.name: r.table for r in results if r.table is not None}
        now = time.time()
        stats = {r.name: _source_stats(r, configs, now) for r in results if r.table is not None}
        lists = _lists(configs, tables)
        if keep_other_sources and active is not None:
            configured = {config.name for config in configs}
            for name, kept_table in active.tables.items():
                if name not in configured and store.redis.exists(kept_table):
                    tables[name] = _existing_table(store, kept_table, active.sources.get(name, {}).get("key_scheme"))
                    stats[name] = active.sources.get(name, {})
            for list_name, info in active.lists.items():
                kept = [name for name in info.get("sources", []) if name in tables and name not in configured]
                if kept and list_name not in lists:
                    lists[list_name] = {**info, "sources": kept}
        if not tables:
            raise SyncFailed("no source produced data and there is no previous version: nothing activated", results)
        meta, created = store.activate(tables, stats, lists)
        diff: Diff = {}
        if created:
            diff = publish_changes(store, meta, previous, tables, kafka_publish)
            store.collect_garbage()
        for result in results:
            _record_state(store, result, meta.version if result.table is not None else None)
    return SyncResult(meta.version, created, results, diff, time.monotonic() - started)


def _sync_source(
    store: WatchlistStore,
    config: SourceConfig,
    *,
    previous_tables: dict[str, str],
    recorded_keys: dict[str, int],
    progress: ProgressFactory | None,
    keep_rejected: int,
) -> SourceResult:
    state = store.source_state(config.name)
    previous_table = previous_tables.get(config.name)
    damaged = False
    scheme = store.relations.fingerprint()
    built_under = state.get("key_scheme") or None  # of the previous table; None: built by an older release
    if previous_table is not None and built_under != scheme:
        # Keys are computed differently now (a new release, other Solana mints): the previous table may lack keys
        # this release looks up, so the source is fetched unconditionally and rebuilt.
        log.info(
            "key scheme changed: rebuilding the source's table",
            extra={"source": config.name, "built_under": built_under, "now": scheme},
        )
        state = {name: value for name, value in state.items() if name not in ("etag", "last_modified")}
    if previous_table is not None and int(store.redis.hlen(previous_table)) != recorded_keys.get(config.name):
        # Redis lost or altered the table (restart without persistence, eviction, tampering): rebuild it from
        # the source, fetched unconditionally, rather than trusting what is left.
        log.error(
            "previous table does not hold the keys its version recorded: rebuilding it",
            extra={"source": config.name, "table": previous_table, "recorded": recorded_keys.get(config.name)},
        )
        state, previous_table, damaged = {}, None, True
    store.set_source_state(config.name, {"last_attempt_at": f"{time.time():.3f}", "location": config.location})
    try:
        plan = format_of(config).plan(config, open_location)
        with fetch_all(plan.inputs, state) as fetched:
            unchanged = fetched.not_modified or (
                previous_table is not None
                and state.get("content_sha256") == fetched.sha256
                and state.get("table") == previous_table
                and built_under == scheme
            )
            if unchanged:
                if previous_table is None:
                    raise WatchlistWriteError("the server says unchanged, but there is no previous table")
                store.set_source_state(config.name, {**fetched.validators, "status": "unchanged"})
                return SourceResult(config.name, "unchanged", _existing_table(store, previous_table, built_under))
            table, report, rejected = _build_table(
                store, config, plan, fetched, progress=progress, keep_rejected=keep_rejected
            )
            _check_shrink(config, recorded_keys.get(config.name) if previous_table else None, table)
            store.set_source_state(
                config.name,
                {
                    **fetched.validators,
                    "content_sha256": fetched.sha256,
                    "status": "updated",
                    "table": table.key,
                    "key_scheme": table.key_scheme,
                },
            )
            return SourceResult(config.name, "updated", table, report, rejected=rejected)
    except SOURCE_ERRORS as exc:  # what a list or the network can do wrong; anything else is a bug: not caught
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, IntegrityError):
            store.set_source_state(config.name, {"content_sha256": ""})  # refused content is checked again next time
        log.error(  # noqa: TRY400 - the message carries the error; a traceback would only repeat it
            "source failed", extra={"source": config.name, "error": error, "kept_previous": bool(previous_table)}
        )
        if previous_table is not None and store.redis.exists(previous_table):
            return SourceResult(
                config.name,
                "failed-kept-previous",
                _existing_table(store, previous_table, built_under),
                error=error,
            )
        if damaged:
            raise SyncFailed(
                f"source {config.name!r}: its table in Redis is damaged and could not be rebuilt ({error}); the "
                "active version is left as is, so screeners keep failing closed on it"
            ) from exc
        return SourceResult(config.name, "failed-missing", None, error=error)


def _build_table(
    store: WatchlistStore,
    config: SourceConfig,
    plan: Plan,
    fetched: FetchedFiles,
    *,
    progress: ProgressFactory | None,
    keep_rejected: int,
) -> tuple[TableInfo, ParseReport, list[Rejection]]:
    """Parse the source into a new table (checked against its published checksum, if any)."""
    expected_sha256 = _expected_sha256(config)
    # The content digest (of the decompressed bytes, as OFAC publishes it) is taken while parsing a source of one
    # file; a source of several files is checked against the digest of their digests only.
    content = hashlib.sha256() if expected_sha256 and len(plan.parts) == 1 else None
    tick = progress(config.name, fetched.size) if progress else None
    writer = store.table_writer(config.name)
    report = ParseReport()
    rejected: list[Rejection] = []
    try:
        with contextlib.closing(plan.read(fetched.opener(tick, content))) as items:
            for _part, item in items:
                report.count(item)
                if isinstance(item, SourceEntry):
                    writer.add(item)
                elif len(rejected) < keep_rejected:
                    rejected.append(item)
        report.published_at = plan.published_at()
        if expected_sha256:
            _check_checksum(expected_sha256, fetched.sha256, content.hexdigest() if content else None)
        return writer.finish(), report, rejected
    except BaseException:
        writer.abort()
        raise


def _expected_sha256(config: SourceConfig) -> str | None:
    if config.sha256:
        return config.sha256
    if not config.checksum_location:
        return None
    with open_location(config.checksum_location) as published:
        _name, digest = parse_checksum_file(published.read().decode("utf-8", errors="replace"))
    return digest


def _check_checksum(expected: str, file_sha256: str, content_sha256: str | None) -> None:
    """The published digest may be of the file as fetched or of its decompressed content (OFAC's is)."""
    if expected not in (file_sha256, content_sha256):
        raise IntegrityError(
            f"checksum mismatch: expected SHA-256 {expected}, file has {file_sha256}"
            + (f", content has {content_sha256}" if content_sha256 else "")
        )


def _check_shrink(config: SourceConfig, previous_keys: int | None, table: TableInfo) -> None:
    if not previous_keys or config.max_shrink >= 1:
        return
    lost = 1 - table.keys / previous_keys
    if lost > config.max_shrink:
        raise IntegrityError(
            f"refusing a shrink from {previous_keys} to {table.keys} keys ({lost:.0%} gone, max_shrink "
            f"{config.max_shrink:.0%}): a truncated or broken publication is not a delisting; raise max_shrink "
            "for this source to accept it"
        )


def _existing_table(store: WatchlistStore, table: str, key_scheme: str | None) -> TableInfo:
    keys = int(store.redis.hlen(table))
    if keys == 0:
        raise WatchlistWriteError(f"previous table {table} is missing")
    digest = table.rsplit(":", 1)[1]
    return TableInfo(table, digest, keys, keys, key_scheme)


def _source_stats(result: SourceResult, configs: Sequence[SourceConfig], now: float) -> dict[str, Any]:
    config = next(c for c in configs if c.name == result.name)
    stats: dict[str, Any] = {
        "format": config.format,
        "list": config.list,
        "status": result.status,
        "keys": result.table.keys if result.table else 0,
        "table": result.table.key if result.table else None,
    }
    if result.report is not None:
        stats.update(
            entries=result.report.entries,
            rejected=dict(result.report.rejected),
            rehomed=result.report.rehomed,
            per_asset=dict(result.report.per_asset),
            published_at=result.report.published_at,
            fetched_at=round(now, 3),
        )
    if result.error:
        stats["error"] = result.error
    return stats


def _lists(configs: Sequence[SourceConfig], tables: dict[str, TableInfo]) -> dict[str, dict[str, Any]]:
    lists: dict[str, dict[str, Any]] = {}
    for config in configs:
        if config.name not in tables:
            continue
        info = lists.setdefault(config.list, {"category": config.category, "overridable": False, "sources": []})
        info["sources"].append(config.name)
        info["overridable"] = info["overridable"] or config.overridable
    return lists


def _record_state(store: WatchlistStore, result: SourceResult, version: str | None) -> None:
    now = f"{time.time():.3f}"
    fields: dict[str, Any] = {"status": result.status, "version": version or ""}
    if result.error is None:
        fields["last_success_at"] = now
        fields["last_error"] = ""
    else:
        fields["last_error"] = result.error
        fields["last_failure_at"] = now
    if result.report is not None:
        fields["entries"] = result.report.entries
        fields["rejected"] = sum(result.report.rejected.values())
        if result.report.published_at is not None:
            fields["published_at"] = f"{result.report.published_at / 1000:.3f}"
    store.set_source_state(result.name, fields)


# `load_config` and `SourceConfig` are re-exported: callers configure and run a sync from here (tests/deploy and
# bench/ load the shipped configurations through `sync.load_config`).
__all__ = ["ProgressFactory", "SourceConfig", "SourceResult", "SyncResult", "load_config", "run_sync"]
