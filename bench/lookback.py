"""`make bench` part E: the lookback at scale (issue 14). Target: sync completed -> last retroactive match produced
within 60 s, with 10,000,000 history rows and 1,000 newly listed addresses.

Set-up (not timed, reported): a PostgreSQL server of its own (devstack/postgres_server.py), the history schema
migrated, monthly partitions for the window, and 10,000,000 screened-address rows (plus one event row per screened
event, as the indexer stores them) loaded by COPY from a generator: a pool of 1,000,000 distinct addresses (EVM on
ethereum and bsc, TRON, Bitcoin P2PKH), each row keyed and checked under the related keys exactly as the screener
would have (screening/related.py), event times spread over 360 days, withdrawals and deposits (a deposit with one
to three sources), then ANALYZE (as autovacuum would). A real single-node Apache Kafka, a real redis-server with the
bundled OFAC sample as the lookback's baseline, and `aml-screener history lookback` as a process, ready.

Timed: a watchlist sync of a new `sanctions` source with 1,000 addresses: 400 EVM and 100 TRON and 100 Bitcoin
addresses from the pool (direct matches), 100 TRON twins of pool EVM addresses (related matches: the same
account), 300 addresses never seen. The clock starts when run_sync returns (version activated, change published)
and stops at the Kafka timestamp (producer create time) of the last RetroactiveMatch; an observer reads the topic
until it holds every expected match. The oracle is the generator's own count of rows per pool address; exactly
that many distinct retroactive_match_ids must arrive. Where the time goes: the lookback's own stage histograms
(ingest: read the new table from Redis, diff, write the change log; lookup: the SQL over the history; produce:
encode, send, wait for acknowledgements) and the wake-up delay (sync -> ingest start).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import base58
import psycopg
import redis
from kafka import KafkaConsumer, TopicPartition

from aml_screener.demo.sample import load_sample
from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.postgres_server import PostgresServer
from aml_screener.devstack.process import child_process_kwargs
from aml_screener.devstack.redis_server import RedisServer
from aml_screener.history.migrate import ensure_partitions, migrate
from aml_screener.history.rows import ADDRESS_COLUMNS, EVENT_COLUMNS
from aml_screener.screener.codec import FramedReader
from aml_screener.screener.schemas import SchemaCatalog
from aml_screener.screening.addresses import normalize_key
from aml_screener.screening.related import ListingRelations, listing_keys, screening_keys
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync

TARGET_SECONDS = 60.0
WINDOW_DAYS = 365
# Event times are spread over this many days before the run, inside the window with a margin.
SPREAD_DAYS = 360
# Server settings for a bulk load on this machine (the timed part reads what is cached, as a server that has been
# indexing would): room to build the indexes in memory, checkpoints far apart during the load.
PG_SETTINGS = {
    "shared_buffers": "2GB",
    "maintenance_work_mem": "512MB",
    "work_mem": "64MB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
}
# The load is streamed to COPY in chunks of about this many bytes.
_COPY_CHUNK = 4 << 20


@dataclass
class Pool:
    """Distinct addresses with what the screener would store for them."""

    networks: list[str]
    addresses: list[str]
    keys: list[str]
    checked: list[str]  # COPY text of checked_keys
    relations: list[str]  # COPY text of checked_relations
    kinds: list[str]  # evm | tron | btc
    rows: array  # how many history rows touch each


def _copy_array(items: list[str]) -> str:
    return "{" + ",".join(items) + "}"


def build_pool(size: int, rng: random.Random) -> Pool:
    pool = Pool([], [], [], [], [], [], array("I"))
    for index in range(size):
        share = index % 4
        if share < 2:
            kind, network = "evm", ("ethereum" if share == 0 else "bsc")
            address = "0x" + rng.randbytes(20).hex()
        elif share == 2:
            kind, network = "tron", "tron"
            address = base58.b58encode_check(b"\x41" + rng.randbytes(20)).decode()
        else:
            kind, network = "btc", "bitcoin"
            address = base58.b58encode_check(b"\x00" + rng.randbytes(20)).decode()
        key = normalize_key(network, address)
        related = screening_keys(key)
        pool.networks.append(network)
        pool.addresses.append(address)
        pool.keys.append(key)
        pool.checked.append(_copy_array([item.key for item in related]))
        pool.relations.append(_copy_array([item.relation.value for item in related]))
        pool.kinds.append(kind)
        pool.rows.append(0)
    return pool


_ASSET = {"ethereum": "ETH", "bsc": "BNB", "tron": "TRX", "bitcoin": "BTC"}


def history_chunks(
    pool: Pool, rows: int, version: str, rng: random.Random, now: float
) -> Iterator[tuple[bytes, bytes]]:
    """(screened-address COPY text, event COPY text) chunks of ``rows`` address rows in all; counts each pool
    address's rows in ``pool.rows``. A fifth of the events are deposits with one to three sources (of one chain)."""
    by_kind: dict[str, list[int]] = {}
    for index, kind in enumerate(pool.kinds):
        by_kind.setdefault(kind, []).append(index)
    evm, tron, btc = by_kind["evm"], by_kind["tron"], by_kind["btc"]
    start = now - SPREAD_DAYS * 86_400
    step = SPREAD_DAYS * 86_400 / rows
    written = 0
    offset = 0
    addresses: list[str] = []
    events: list[str] = []
    size = 0
    while written < rows:
        offset += 1
        event_at = start + written * step + rng.random() * step
        stamp = datetime.fromtimestamp(event_at, UTC).isoformat()
        decided = datetime.fromtimestamp(event_at + 0.02, UTC).isoformat()
        decision_id = f"{rng.getrandbits(128):032x}"
        deposit = rng.random() < 0.2
        if deposit:
            family = btc if rng.random() < 0.5 else (evm if rng.random() < 0.6 else tron)
            picks = [rng.choice(family) for _ in range(rng.choice((1, 1, 2, 3)))]
            picks = list(dict.fromkeys(picks))[: rows - written]
            direction, topic, event_id = "deposit", "deposits.received", f"d-{offset}"
        else:
            family = evm if rng.random() < 0.5 else (tron if rng.random() < 0.5 else btc)
            picks = [rng.choice(family)]
            direction, topic, event_id = "withdrawal", "withdrawals.requested", f"w-{offset}"
        network = pool.networks[picks[0]]
        asset = _ASSET[network]
        verdict = "CLEAR"
        action = "accept" if deposit else "allow"
        for position, index in enumerate(picks):
            pool.rows[index] += 1
            line = (
                f"{stamp}\t{decision_id}\t{position}\t{direction}\t{event_id}\tupbit-kr\t{asset}\t{network}\t"
                f"{pool.addresses[index]}\t{pool.keys[index]}\t{pool.checked[index]}\t{pool.relations[index]}\t"
                f"CLEAR\t{verdict}\t\\N\t\\N\t{action}\t{{}}\t{{}}\t{version}\t{decided}\t{stamp}\t{topic}\t0\t"
                f"{offset}\t1\n"
            )
            addresses.append(line)
            size += len(line)
        written += len(picks)
        amount = f"{rng.randrange(1, 10**6)}.{rng.randrange(10**6):06d}"
        events.append(
            f"{stamp}\t{direction}\t{event_id}\tupbit-kr\tacct-{rng.randrange(10**6)}\t{asset}\t{network}\t{amount}\t"
            f"{rng.randrange(10**5)}.00\t\\N\t{stamp}\t{topic}\t0\t{offset}\n"
        )
        if size >= _COPY_CHUNK:
            yield "".join(addresses).encode(), "".join(events).encode()
            addresses, events, size = [], [], 0
    if addresses:
        yield "".join(addresses).encode(), "".join(events).encode()


def load_history(dsn: str, pool: Pool, rows: int, version: str, seed: int) -> dict[str, float]:
    """Migrate and load; timings of each step."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        ensure_partitions(conn, SPREAD_DAYS // 30 + 2, 1)
    rng = random.Random(seed)
    address_sql = f"COPY aml_history.screened_addresses ({', '.join(ADDRESS_COLUMNS)}) FROM STDIN"
    event_sql = f"COPY aml_history.screened_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN"
    with psycopg.connect(dsn) as addresses_conn, psycopg.connect(dsn) as events_conn:
        with (
            addresses_conn.cursor().copy(address_sql) as address_copy,
            events_conn.cursor().copy(event_sql) as event_copy,
        ):
            for address_chunk, event_chunk in history_chunks(pool, rows, version, rng, time.time()):
                address_copy.write(address_chunk)
                event_copy.write(event_chunk)
        addresses_conn.commit()
        events_conn.commit()
    timings["copy_seconds"] = time.perf_counter() - started
    analyzed = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) aml_history.screened_addresses")
        conn.execute("VACUUM (ANALYZE) aml_history.screened_events")
        row = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database())), "
            "(SELECT count(*) FROM aml_history.screened_addresses), (SELECT count(*) FROM aml_history.screened_events)"
        ).fetchone()
    assert row is not None
    timings["analyze_seconds"] = time.perf_counter() - analyzed
    timings["database_size"] = row[0]
    timings["address_rows"] = row[1]
    timings["event_rows"] = row[2]
    return timings


def choose_listed(pool: Pool, rng: random.Random) -> tuple[dict[str, list[str]], int]:
    """The 1,000 addresses the new source lists (asset ticker -> addresses), and how many history rows they touch
    (the oracle: one retroactive match per row)."""
    used = [index for index in range(len(pool.addresses)) if pool.rows[index]]
    by_kind: dict[str, list[int]] = {}
    for index in used:
        by_kind.setdefault(pool.kinds[index], []).append(index)
    evm = rng.sample(by_kind["evm"], 500)
    direct_evm, twin_of = evm[:400], evm[400:]
    tron = rng.sample(by_kind["tron"], 100)
    btc = rng.sample(by_kind["btc"], 100)
    listed = {
        "ETH": [pool.addresses[i] for i in direct_evm] + ["0x" + rng.randbytes(20).hex() for _ in range(100)],
        "TRX": [base58.b58encode_check(b"\x41" + bytes.fromhex(pool.addresses[i][2:])).decode() for i in twin_of]
        + [pool.addresses[i] for i in tron]
        + [base58.b58encode_check(b"\x41" + rng.randbytes(20)).decode() for _ in range(100)],
        "XBT": [pool.addresses[i] for i in btc]
        + [base58.b58encode_check(b"\x00" + rng.randbytes(20)).decode() for _ in range(100)],
    }
    expected = sum(pool.rows[i] for i in (*direct_evm, *twin_of, *tron, *btc))
    return listed, expected


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("aml_history_") and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if predicate():
                return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


TOPICS = {"retro": "screening.retroactive", "delisted": "screening.delisted", "dlq": "screening.history.dlq"}


def start_lookback(stack: contextlib.ExitStack, kafka: KafkaCluster, redis_url: str, dsn: str, log_path: Path) -> int:
    """`aml-screener history lookback` as a process, ready (its baseline recorded); its HTTP port."""
    port = free_port()
    env = {
        **os.environ,
        "AML_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "AML_REDIS_URL": redis_url,
        "AML_HISTORY_DATABASE_URL": dsn,
        "AML_HISTORY_LOOKBACK_DAYS": str(WINDOW_DAYS),
        "AML_HTTP_HOST": "127.0.0.1",
        "AML_HTTP_PORT": str(port),
        "AML_LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aml_screener.cli", "history", "lookback"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            **child_process_kwargs(),
        )
    stack.callback(_stop, proc)
    # Start-up includes recording the baseline (the bundled sample: a few hundred keys).
    _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200, 120, "ready")
    return port


def observe(consumer: KafkaConsumer, expected: int) -> tuple[set[str], int, float]:
    """Read RetroactiveMatch records until ``expected`` distinct ids arrived (at most 10 minutes), then 2 s more
    for any unexpected extra; the ids, the latest Kafka timestamp (ms) and when the last expected one was read."""
    framed = FramedReader(_repository())
    ids: set[str] = set()
    last_ms = 0
    deadline = time.monotonic() + 600
    settle_until: float | None = None
    reached = float("nan")
    while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                ids.add(framed.decode(record.value)[1]["retroactive_match_id"])
                last_ms = max(last_ms, record.timestamp)
        if settle_until is None and len(ids) >= expected:
            settle_until = time.monotonic() + 2
            reached = time.time()
    return ids, last_ms, reached


def run(rows: int, pool_size: int, seed: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {"rows_target": rows, "pool": pool_size, "listed_addresses": 1000}
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(PostgresServer(settings=PG_SETTINGS))
        redis_server = stack.enter_context(RedisServer())
        kafka = stack.enter_context(KafkaCluster(1))
        started = time.perf_counter()
        pool = build_pool(pool_size, rng)
        out["pool_seconds"] = round(time.perf_counter() - started, 1)
        print(f"  address pool: {pool_size:,} addresses in {out['pool_seconds']} s", flush=True)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        baseline = load_sample(WatchlistStore(client))
        assert baseline.version is not None
        out["load"] = load_history(postgres.dsn, pool, rows, baseline.version, seed)
        print(f"  history loaded: {out['load']}", flush=True)
        listed, expected = choose_listed(pool, rng)
        out["expected_matches"] = expected
        for topic in TOPICS.values():
            kafka.create_topic(topic, 1)
        log_path = work / "lookback.log"
        port = start_lookback(stack, kafka, redis_server.url, postgres.dsn, log_path)
        consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
        stack.callback(consumer.close)
        consumer.assign([TopicPartition(TOPICS["retro"], 0)])
        consumer.seek_to_beginning()
        lists = work / "lists"
        lists.mkdir()
        for asset, addresses in listed.items():
            (lists / f"lazarus_{asset}.txt").write_text("".join(f"{address}\n" for address in addresses))
        config = AddressListConfig(
            name="lazarus", location=str(lists / "*.txt"), list="ofac-lazarus", category="sanctions"
        )
        result = run_sync(WatchlistStore(client), [config], keep_other_sources=True)
        synced = time.time()  # the clock starts: the version is active and its change published
        assert result.activated and result.version
        ids, last_ms, reached = observe(consumer, expected)
        metrics = _metrics(port)
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        ingested = next((line for line in lines if line.get("msg") == "watchlist version ingested"), {"ts": None})
        finished: dict[str, Any] = next(
            (line for line in lines if line.get("msg") == "lookback finished a watchlist version"), {}
        )
        out.update(
            {
                "matches_received": len(ids),
                "sync_to_last_match_seconds": round(last_ms / 1000 - synced, 2),
                "sync_to_last_match_read_seconds": round(reached - synced, 2),
                "listed_keys": len(_listed_keys(listed)),
                "stages": {
                    stage: round(metrics.get(f'aml_history_stage_duration_seconds_sum{{stage="{stage}"}}', 0.0), 2)
                    for stage in ("ingest", "lookup", "produce")
                },
                "sync_to_ingest_done_seconds": (
                    round(datetime.fromisoformat(ingested["ts"]).timestamp() - synced, 2) if ingested["ts"] else None
                ),
                "lookback_reported_seconds": finished.get("seconds"),
                "target_seconds": TARGET_SECONDS,
            }
        )
    return out


def _listed_keys(listed: dict[str, list[str]]) -> set[str]:
    network = {"ETH": "ethereum", "TRX": "tron", "XBT": "bitcoin"}
    own = {normalize_key(network[asset], address) for asset, addresses in listed.items() for address in addresses}
    return own | {related.key for key in own for related in listing_keys(key, ListingRelations())}


def _repository() -> Any:
    from aml_screener.screener.schemas import LocalSchemaRepository  # noqa: PLC0415

    return LocalSchemaRepository(SchemaCatalog())


def summary_lines(out: dict[str, Any]) -> list[str]:
    load = out["load"]
    return [
        f"history: {load['address_rows']:,} screened-address rows, {load['event_rows']:,} events, "
        f"{load['database_size']}; COPY {load['copy_seconds']:.0f} s, VACUUM ANALYZE {load['analyze_seconds']:.0f} s",
        f"sync of {out['listed_addresses']:,} addresses ({out['listed_keys']:,} keys with derived ones) -> last of "
        f"{out['matches_received']:,} retroactive matches (expected {out['expected_matches']:,}) produced: "
        f"{out['sync_to_last_match_seconds']} s (target <= {TARGET_SECONDS:.0f} s)",
        f"where the time goes: sync -> change ingested {out['sync_to_ingest_done_seconds']} s; "
        + ", ".join(f"{stage} {seconds} s" for stage, seconds in out["stages"].items()),
    ]


def _interrupt(signum: int, frame: Any) -> None:
    del frame
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)  # it finishes the statement it is in (seconds), then exits
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def main() -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--pool", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    # A stop (SIGTERM, or SIGINT even when started in the background, where the shell ignores it) unwinds the
    # ExitStack: the servers are stopped and their data directories (about 10 GB) removed.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)
    with tempfile.TemporaryDirectory(prefix="aml-bench-lookback-") as work:
        out = run(args.rows, args.pool, args.seed, Path(work))
    print(json.dumps(out, indent=2))
    for line in summary_lines(out):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
