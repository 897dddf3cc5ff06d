"""`aml-screener demo`: the main job on the embedded default, end to end, with a live progress line.

1. start the embedded stack (librdkafka mock broker + redis-server on free loopback ports), unless
   --bootstrap-servers/--redis-url point at real ones;
2. load the bundled OFAC sample (demo/watchlist/) into a new watchlist version;
3. start `aml-screener run` as a child process, configured only through AML_* variables, and wait for /readyz;
4. produce a seeded synthetic withdrawal stream at a steady rate while reading the output topics;
5. stop the screener with SIGTERM and print a summary, checked against the generator's expected outcomes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from aml_screener.demo.lookback import HISTORY_TOPICS, running_history, show_retroactive_match
from aml_screener.demo.sample import load_sample, sample_listings
from aml_screener.devstack.generator import EventGenerator, Expected, GeneratedEvent
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.screener_process import ScreenerNotReady, screener_env, start_screener, wait_until_consuming
from aml_screener.devstack.stack import KAFKA_PYTHON_API_VERSION, EmbeddedStack
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.codec import EventEncoder, FramedReader
from aml_screener.screener.schemas import DEPOSIT_RECEIVED, WITHDRAWAL_REQUESTED, LocalSchemaRepository, SchemaCatalog
from aml_screener.screening.records import Direction
from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.store import WatchlistStore

INPUT_TOPIC = "withdrawals.requested"
DEPOSIT_TOPIC = "deposits.received"
DECISIONS_TOPIC = "screening.decisions"
FLAGGED_TOPIC = "withdrawals.flagged"
DEPOSIT_FLAGGED_TOPIC = "deposits.flagged"
DLQ_TOPIC = "withdrawals.requested.dlq"
DEPOSIT_DLQ_TOPIC = "deposits.received.dlq"
DLQ_TOPICS = (DLQ_TOPIC, DEPOSIT_DLQ_TOPIC)
# The demo's one deliberate deposit from a Lazarus Group address (OFAC SDN entry 27307), to show it frozen.
LAZARUS_DEPOSIT_ID = "dep-demo-lazarus"
# Waiting for the screener to become ready: it connects to Kafka and Redis and checks the watchlist.
_READY_TIMEOUT_SECONDS = 60
# After the last event is produced, how long to wait for every decision before reporting a shortfall.
_DRAIN_TIMEOUT_SECONDS = 60


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="events to generate (default 20000)")
    parser.add_argument("--deposit-share", type=float, default=0.25, help="share of deposits (default 0.25)")
    parser.add_argument("--rate", type=float, default=4_000, help="events per second (default 4000)")
    parser.add_argument("--hit-share", type=float, default=0.02, help="share to listed addresses (default 0.02)")
    parser.add_argument("--invalid-share", type=float, default=0.005, help="share with invalid addresses")
    parser.add_argument("--malformed-share", type=float, default=0.002, help="share of undecodable payloads")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (same seed, same stream)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per input topic (embedded stack)")
    parser.add_argument("--bootstrap-servers", help="use this Kafka instead of the embedded broker")
    parser.add_argument("--kafka-api-version", help="pin kafka-python's API version for --bootstrap-servers")
    parser.add_argument("--redis-url", help="use this Redis instead of an embedded redis-server")
    parser.add_argument("--http-port", type=int, default=9400, help="screener /metrics port (0: pick a free one)")
    parser.add_argument("--serve", action="store_true", help="keep the screener running after the summary")
    parser.add_argument(
        "--lookback",
        action="store_true",
        help="also run the screening history (PostgreSQL) and show a retroactive match (embedded stack only)",
    )


@dataclass
class Tally:
    decisions: Counter[str] = field(default_factory=Counter)
    by_direction: Counter[tuple[str, str]] = field(default_factory=Counter)  # (direction, outcome)
    actions: Counter[str] = field(default_factory=Counter)  # the policy's actions
    lazarus_deposit: dict[str, Any] | None = None  # the decision of the demo's Lazarus deposit
    flags_by_list: Counter[str] = field(default_factory=Counter)
    flags_by_asset: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    decided_ids: set[str] = field(default_factory=set)
    decision_ids: Counter[str] = field(default_factory=Counter)
    outcome_by_event: dict[str, str] = field(default_factory=dict)
    dead_letter_offsets: set[tuple[int, int]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    flagged_events: int = 0
    first_decided: float | None = None
    last_decided: float | None = None

    @property
    def accounted(self) -> int:
        return len(self.decided_ids) + sum(self.dead_letters.values())


def _progress(produced: int, total: int, tally: Tally, started: float) -> str:
    elapsed = max(1e-6, time.monotonic() - started)
    return (
        f"\r  produced {produced:>7}/{total}  decided {len(tally.decided_ids):>7}  "
        f"flagged {tally.decisions['FLAGGED']:>5}  unscreenable {tally.decisions['UNSCREENABLE']:>4}  "
        f"dead-lettered {sum(tally.dead_letters.values()):>4}  {tally.accounted / elapsed:>7.0f} events/s"
    )


class _Producer(threading.Thread):
    """Sends the generated stream at a steady rate."""

    def __init__(self, bootstrap: str, events: list[GeneratedEvent], rate: float) -> None:
        super().__init__(name="demo-producer", daemon=True)
        # linger.ms=5 like an exchange's batching producer; also, the mock broker returns one record batch per
        # partition per fetch, so tiny producer batches would throttle the screener (docs/benchmarks.md).
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "log.connection.close": False,
            }
        )
        # Connect and learn the topic's leaders before the clock starts: otherwise the first events are
        # timestamped while the producer is still connecting, and that wait would be counted as screening latency.
        self.producer.list_topics(INPUT_TOPIC, timeout=10)
        self.producer.list_topics(DEPOSIT_TOPIC, timeout=10)
        self.events = events
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started = time.monotonic()
            for index, event in enumerate(self.events):
                due = started + index / self.rate
                delay = due - time.monotonic()
                if delay > 0.002:
                    self.producer.poll(0)
                    time.sleep(delay)
                topic = DEPOSIT_TOPIC if event.direction is Direction.DEPOSIT else INPUT_TOPIC
                self.producer.produce(topic, event.value, event.key)
                self.sent = index + 1
            self.producer.flush(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            # Destroy the client now: kept alive, it would try to reconnect (and log connection failures) once the
            # embedded broker has been stopped at the end of the demo.
            del self.producer


@contextlib.contextmanager
def _infrastructure(args: argparse.Namespace) -> Iterator[tuple[str, str, str | None]]:
    if args.bootstrap_servers and args.redis_url:
        if args.lookback:
            raise SystemExit("demo: --lookback runs on the embedded stack only (it creates the history's topics)")
        yield args.bootstrap_servers, args.redis_url, args.kafka_api_version
        return
    if args.bootstrap_servers or args.redis_url:
        raise SystemExit("demo: give both --bootstrap-servers and --redis-url, or neither (embedded stack)")
    topics = (HISTORY_TOPICS if args.lookback else {}) | {
        INPUT_TOPIC: args.partitions,
        DEPOSIT_TOPIC: args.partitions,
        DECISIONS_TOPIC: args.partitions,
        FLAGGED_TOPIC: 1,
        DEPOSIT_FLAGGED_TOPIC: 1,
        DLQ_TOPIC: 1,
        DEPOSIT_DLQ_TOPIC: 1,
    }
    print("starting the embedded stack (librdkafka mock broker + redis-server) ...", flush=True)
    # The broker in its own process keeps its threads off this process, which also generates and reads.
    with EmbeddedStack(brokers=1, topics=topics, broker_in_subprocess=True) as stack:
        yield stack.bootstrap_servers, stack.redis_url, ".".join(map(str, KAFKA_PYTHON_API_VERSION))


def run_demo(args: argparse.Namespace) -> int:
    catalog = SchemaCatalog()
    repository = LocalSchemaRepository(catalog)
    encoder, deposit_encoder = (
        EventEncoder(catalog.current(name).schema, catalog.current(name).schema_id)
        for name in (WITHDRAWAL_REQUESTED, DEPOSIT_RECEIVED)
    )
    listings = sample_listings()
    retroactive_ok = True
    with _infrastructure(args) as (bootstrap, redis_url, api_version), contextlib.ExitStack() as extras:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        synced = load_sample(WatchlistStore(client, WatchlistKeys()))
        parties = {listing.entry_id for _, listing in listings}
        print(
            f"watchlist: loaded {len(listings)} OFAC SDN addresses of {len(parties)} parties "
            f"(incl. Lazarus Group), version {synced.version}"
        )
        generator = EventGenerator(
            listings,
            encoder,
            seed=args.seed,
            hit_share=args.hit_share,
            invalid_share=args.invalid_share,
            malformed_share=args.malformed_share,
            clean_pool=min(100_000, max(1_000, args.events)),
            deposit_share=args.deposit_share,
            deposit_encoder=deposit_encoder,
        )
        events = list(generator.stream(args.events))
        events.insert(len(events) // 2, _lazarus_deposit(generator, listings))
        expected = Counter(event.expected.value for event in events)
        http_port = args.http_port or free_port()
        env = screener_env(
            bootstrap,
            redis_url,
            http_port,
            mock_broker=not args.bootstrap_servers,
            extra={"AML_KAFKA_GROUP_ID": f"aml-screener-demo-{os.getpid()}", "AML_LOG_FORMAT": "json"},
        )
        if args.bootstrap_servers and api_version:
            env["AML_KAFKA_API_VERSION"] = api_version
        log_file = tempfile.NamedTemporaryFile(prefix="aml-screener-demo-", suffix=".log", delete=False)  # noqa: SIM115
        log_path = Path(log_file.name)
        history = extras.enter_context(running_history(env)) if args.lookback else None
        child = start_screener(env, log_file)
        try:
            base = f"http://127.0.0.1:{http_port}"
            try:
                wait_until_consuming(http_port, child, _READY_TIMEOUT_SECONDS)
            except ScreenerNotReady as exc:
                raise SystemExit(f"demo: {exc}; log: {log_path}") from None
            print(f"screener ready (pid {child.pid}, metrics {base}/metrics, log {log_path})")
            print(
                f"producing {len(events)} events ({sum(e.direction is Direction.DEPOSIT for e in events)} deposits) "
                f"at {args.rate:.0f}/s: expected " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(expected.items()))
            )
            tally = _screen(bootstrap, api_version, events, args.rate, FramedReader(repository, logical_types=False))
            metrics_excerpt = _scrape(f"{base}/metrics")
            if history is not None:
                retroactive_ok = show_retroactive_match(
                    history,
                    events,
                    bootstrap=bootstrap,
                    api_version=api_version,
                    redis_url=redis_url,
                    reader=FramedReader(repository, logical_types=False),
                )
            if args.serve:
                print(f"\nscreener still running: {base}/metrics  {base}/readyz  (Ctrl-C to stop)")
                with contextlib.suppress(KeyboardInterrupt):
                    child.wait()
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
            log_file.close()
    ok = _report(
        events=events,
        tally=tally,
        expected=expected,
        metrics_excerpt=metrics_excerpt,
        base_url=base,
        exit_code=child.returncode,
    )
    return 0 if ok and retroactive_ok else 1


def _lazarus_deposit(generator: EventGenerator, listings: list[tuple[str, Listing]]) -> GeneratedEvent:
    """A USDT deposit on Ethereum whose sender is a Lazarus Group address of the OFAC sample: must be frozen."""
    key, listing = next((key, listing) for key, listing in listings if listing.entry_name == "Lazarus Group")
    return generator.deposit_from(
        [listing.listed_address],
        network="ethereum",
        asset="USDT",
        expected=Expected.FLAGGED,
        address_key=key,
        event_id=LAZARUS_DEPOSIT_ID,
    )


def _screen(
    bootstrap: str, api_version: str | None, events: list[GeneratedEvent], rate: float, reader: FramedReader
) -> Tally:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        enable_auto_commit=False,
        **({"api_version": tuple(int(p) for p in api_version.split("."))} if api_version else {}),
    )
    partitions = [
        TopicPartition(topic, partition)
        for topic in (DECISIONS_TOPIC, *DLQ_TOPICS)
        for partition in sorted(consumer.partitions_for_topic(topic) or {0})
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    tally = Tally()
    producer = _Producer(bootstrap, events, rate)
    started = time.monotonic()
    producer.start()
    next_print = 0.0
    drain_deadline: float | None = None
    try:
        while tally.accounted < len(events):
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if tp.topic in DLQ_TOPICS:
                        reason = dict(record.headers).get("aml.dlq.reason", b"?").decode()
                        tally.dead_letters[reason] += 1
                        tally.dead_letter_offsets.add((record.partition, record.offset))
                        continue
                    _schema_id, decision = reader.decode(record.value)
                    _count_decision(tally, decision)
            now = time.monotonic()
            if now >= next_print:
                print(_progress(producer.sent, len(events), tally, started), end="", flush=True)
                next_print = now + 0.5
            if producer.error is not None:
                raise SystemExit(f"\ndemo: producing failed: {producer.error}")
            if not producer.is_alive():
                drain_deadline = drain_deadline or now + _DRAIN_TIMEOUT_SECONDS
                if now > drain_deadline:
                    print("\ndemo: timed out waiting for decisions", file=sys.stderr)
                    break
    finally:
        consumer.close()
    print(_progress(producer.sent, len(events), tally, started), flush=True)
    return tally


def _count_decision(tally: Tally, decision: dict[str, Any]) -> None:
    event_id = decision["event_id"]
    tally.decision_ids[decision["decision_id"]] += 1
    if event_id in tally.decided_ids:
        return  # a duplicate (same decision id): counted once
    tally.decided_ids.add(event_id)
    outcome = decision["decision"]
    tally.decisions[outcome] += 1
    tally.by_direction[decision["direction"], outcome] += 1
    tally.actions[decision["action"]] += 1
    if event_id == LAZARUS_DEPOSIT_ID:
        tally.lazarus_deposit = decision
    tally.outcome_by_event[event_id] = outcome
    if outcome == "FLAGGED":
        for match in decision["matches"]:
            tally.flags_by_list[f"{match['list']}: {match.get('entry_name') or match['entry_id']}"] += 1
        tally.flags_by_asset[f"{decision['asset']} on {decision['network']}"] += 1
    timings = decision["timings"]
    decided = timings["decided_at"] / 1e6  # raw Avro: timestamp-micros
    tally.latencies_ms.append(decided * 1000 - timings["event_timestamp"])  # timestamp-millis
    tally.first_decided = decided if tally.first_decided is None else min(tally.first_decided, decided)
    tally.last_decided = decided if tally.last_decided is None else max(tally.last_decided, decided)


def _scrape(url: str) -> list[str]:
    wanted = (
        "aml_screener_decisions_total",
        "aml_screener_dead_lettered_total",
        "aml_screener_ready ",
        "aml_screener_watchlist_addresses",
    )
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL we built
            text = response.read().decode()
    except OSError:
        return []
    return [line for line in text.splitlines() if line.startswith(wanted)]


_OUTCOMES = ("CLEAR", "FLAGGED", "UNSCREENABLE")


def _describe(decision: dict[str, Any] | None) -> str:
    if decision is None:
        return "no decision"
    match = decision["matches"][0] if decision["matches"] else {}
    listed = f"{match.get('list')} entry {match.get('entry_id')} ({match.get('entry_name')})" if match else "-"
    return (
        f"{decision['decision']}, severity {decision['severity']}, action {decision['action']} "
        f"(policy rule {decision['policy_rule']}); matched {listed}"
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] if len(values) > 1 else values[0]


def _report(
    *,
    events: list[GeneratedEvent],
    tally: Tally,
    expected: Counter[str],
    metrics_excerpt: list[str],
    base_url: str,
    exit_code: int | None,
) -> bool:
    expected_flagged = {e.event_id for e in events if e.expected is Expected.FLAGGED}
    got_flagged = {event_id for event_id, outcome in tally.outcome_by_event.items() if outcome == "FLAGGED"}
    expected_screened = {e.event_id for e in events if e.expected is not Expected.DEAD_LETTER}
    missing = expected_screened - tally.decided_ids
    clear_but_listed = {event_id for event_id in expected_flagged if tally.outcome_by_event.get(event_id) == "CLEAR"}
    duplicates = sum(count - 1 for count in tally.decision_ids.values() if count > 1)
    span = (tally.last_decided or 0) - (tally.first_decided or 0)
    rows = [
        ("events produced", f"{len(events)}"),
        ("decisions", f"{len(tally.decided_ids)}  ({duplicates} duplicate records, same decision id)"),
        ("  clear", f"{tally.decisions['CLEAR']}  (expected {expected['CLEAR']})"),
        ("  flagged", f"{tally.decisions['FLAGGED']}  (expected {expected['FLAGGED']})"),
        ("  unscreenable", f"{tally.decisions['UNSCREENABLE']}  (expected {expected['UNSCREENABLE']})"),
        *(
            (
                f"  {direction}s",
                ", ".join(f"{outcome.lower()} {tally.by_direction[direction, outcome]}" for outcome in _OUTCOMES),
            )
            for direction in ("withdrawal", "deposit")
        ),
        ("actions (policy)", ", ".join(f"{action} {count}" for action, count in tally.actions.most_common())),
        (
            "dead-lettered",
            f"{sum(tally.dead_letters.values())}  (expected {expected['DEAD_LETTER']}): "
            + ", ".join(f"{k} {v}" for k, v in tally.dead_letters.most_common()),
        ),
        (
            "missed hits / false hits",
            f"{len(expected_flagged - got_flagged)} / {len(got_flagged - expected_flagged)}",
        ),
        ("listed but decided clear", f"{len(clear_but_listed)}"),
        ("events without decision", f"{len(missing)}"),
        (
            "throughput",
            f"{len(tally.decided_ids) / span:,.0f} decisions/s over {span:.1f}s" if span > 0 else "n/a",
        ),
        (
            "decision latency",
            f"p50 {_percentile(tally.latencies_ms, 0.5):.1f} ms, p99 {_percentile(tally.latencies_ms, 0.99):.1f} ms"
            " (input record timestamp -> decision made)",
        ),
        ("screener exit code", f"{exit_code}"),
    ]
    width = max(len(label) for label, _ in rows)
    print("\nsummary")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(f"\ndeposit from a Lazarus Group address ({LAZARUS_DEPOSIT_ID}): {_describe(tally.lazarus_deposit)}")
    print("\nflags by list entry")
    for name, count in tally.flags_by_list.most_common():
        print(f"  {count:>6}  {name}")
    print("flags by asset and network")
    for name, count in tally.flags_by_asset.most_common():
        print(f"  {count:>6}  {name}")
    print(f"\nmetrics: {base_url}/metrics (scraped before shutdown):")
    for line in metrics_excerpt:
        print(f"  {line}")
    ok = (
        not missing
        and not clear_but_listed
        and got_flagged == expected_flagged
        and sum(tally.dead_letters.values()) == expected["DEAD_LETTER"]
        and tally.lazarus_deposit is not None
        and tally.lazarus_deposit["action"] == "freeze"
        and exit_code == 0
    )
    print("\nresult: " + ("OK - every event decided, every listed address flagged" if ok else "MISMATCH"))
    return ok
