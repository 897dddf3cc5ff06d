"""`aml-screener demo --lookback`: the retroactive match, shown. Beside the demo's screener, a PostgreSQL (Debian
package, free port), `aml-screener history index` and `aml-screener history lookback` run; after the stream, a new
sanctions listing names an address the stream already sent to, and the demo prints the RetroactiveMatch records the
lookback produces for the past withdrawals (and deposits) that touched it, with the time from the sync."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from kafka import KafkaConsumer, TopicPartition

from aml_screener.devstack.generator import Expected, GeneratedEvent
from aml_screener.devstack.postgres_server import PostgresServer
from aml_screener.devstack.process import child_process_kwargs
from aml_screener.history.migrate import migrate
from aml_screener.screener.codec import FramedReader
from aml_screener.screening.addresses import InvalidAddress, UnsupportedNetwork, normalize_key
from aml_screener.screening.records import Direction
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync

RETROACTIVE_TOPIC = "screening.retroactive"
HISTORY_TOPICS = {RETROACTIVE_TOPIC: 1, "screening.delisted": 1, "screening.history.dlq": 1}
# Waits of the demo (a 2-core machine shared with the broker and the screener): the lookback's baseline, the stream
# reaching the history, and the matches after the sync (the benchmark's 10-million-row case takes about 12 s).
_WAIT_SECONDS = 120.0


@dataclass
class History:
    dsn: str
    processes: list[subprocess.Popen[bytes]]
    log_dir: Path


@contextlib.contextmanager
def running_history(env: Mapping[str, str]) -> Iterator[History]:
    """PostgreSQL (migrated), the indexer and the lookback (the lookback's baseline recorded); all stopped on exit."""
    with PostgresServer() as postgres, tempfile.TemporaryDirectory(prefix="aml-demo-history-") as logs:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            migrate(conn)
        history_env = {
            **env,
            "AML_HISTORY_DATABASE_URL": postgres.dsn,
            "AML_HTTP_PORT": "0",  # no HTTP endpoints: the demo's screener has the port
            "AML_KAFKA_GROUP_ID": env.get("AML_KAFKA_GROUP_ID", "demo") + "-history",
        }
        processes = []
        try:
            for command in ("index", "lookback"):
                with (Path(logs) / f"{command}.log").open("wb") as log:
                    processes.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "aml_screener.cli", "history", command],
                            env=history_env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            **child_process_kwargs(),
                        )
                    )
            history = History(postgres.dsn, processes, Path(logs))
            _wait(history, "SELECT count(*) FROM aml_history.watchlist_versions WHERE lookback_done_at IS NOT NULL", 1)
            yield history
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def _count(dsn: str, query: str) -> int:
    with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0
    return 0


def _wait(history: History, query: str, wanted: int) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while _count(history.dsn, query) < wanted:
        for process in history.processes:
            if process.poll() is not None:
                raise SystemExit(f"demo: a history process exited ({process.returncode}); logs in {history.log_dir}")
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for the history ({query}); logs in {history.log_dir}")
        time.sleep(0.2)


def _keys(event: GeneratedEvent) -> set[str | None]:
    if event.direction is Direction.WITHDRAWAL:
        return {event.address_key}
    found: set[str | None] = set()
    for source in event.sources:
        with contextlib.suppress(InvalidAddress, UnsupportedNetwork):
            found.add(normalize_key(event.network, source))
    return found


def show_retroactive_match(
    history: History,
    events: list[GeneratedEvent],
    *,
    bootstrap: str,
    api_version: str | None,
    redis_url: str,
    reader: FramedReader,
) -> bool:
    """List a destination the stream already sent to; print its retroactive matches. True when every past event
    that touched it was reported."""
    decided = [event for event in events if event.expected is not Expected.DEAD_LETTER]
    print("\nlookback: waiting for the history to hold the stream ...", flush=True)
    _wait(history, "SELECT count(*) FROM aml_history.screened_events", len(decided))
    # The clean destination the stream sent to most often: the listing will have several past events to find.
    sent = Counter(
        e.address_key for e in decided if e.expected is Expected.CLEAR and e.direction is Direction.WITHDRAWAL
    )
    key = sent.most_common(1)[0][0]
    clean = next(e for e in decided if e.address_key == key and e.direction is Direction.WITHDRAWAL)
    touched = {e.event_id for e in decided if key in _keys(e)}
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        **({"api_version": tuple(int(part) for part in api_version.split("."))} if api_version else {}),
    )
    try:
        partition = TopicPartition(RETROACTIVE_TOPIC, 0)
        consumer.assign([partition])
        # The end offset now, before the sync: seek_to_end() would be resolved only at the first poll, after the
        # sync, and a lookback quicker than that poll would have put every match before "the end" (the demo then
        # reported 0 of 6 after 120 s under load).
        consumer.seek(partition, consumer.end_offsets([partition])[partition])
        with tempfile.TemporaryDirectory(prefix="aml-demo-listing-") as lists:
            (Path(lists) / f"designation_{clean.asset}.txt").write_text(f"{clean.address}\n")
            config = AddressListConfig(
                name="demo-designation", location=f"{lists}/*.txt", list="ofac-sdn-update", category="sanctions"
            )
            store = WatchlistStore(redis.Redis.from_url(redis_url, decode_responses=True))
            result = run_sync(store, [config], keep_other_sources=True)
        synced = time.monotonic()
        print(f"lookback: new sanctions listing of {clean.address} ({clean.network}), version {result.version}")
        found: dict[str, dict[str, object]] = {}
        deadline = synced + _WAIT_SECONDS
        while {str(record["decision"]["event_id"]) for record in found.values()} < touched:  # type: ignore[index]
            if time.monotonic() > deadline:
                break
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    match = reader.decode(record.value)[1]
                    found[match["retroactive_match_id"]] = match
        seconds = time.monotonic() - synced
    finally:
        consumer.close()
    for match in list(found.values())[:3]:
        past = match["decision"]
        assert isinstance(past, dict)
        print(
            f"  RetroactiveMatch: {past['direction']} {past['event_id']} of account {past['account_id']} "
            f"({past['asset']}, {past['network']}) touched {past['address']}; listed by "
            f"{', '.join(str(m['list']) for m in match['matches'])} in {match['watchlist_version']}"  # type: ignore[attr-defined]
        )
    reported = {str(match["decision"]["event_id"]) for match in found.values()}  # type: ignore[index]
    print(
        f"lookback: {len(reported & touched)} of {len(touched)} past events that touched it reported "
        f"{seconds:.1f} s after the sync"
    )
    return reported == touched
