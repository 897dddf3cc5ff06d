"""The retroactive-match pipeline end to end, every part a real process on real components: `aml-screener run`
screens a mixed stream of withdrawals and deposits from the shared Apache Kafka cluster against the bundled OFAC
sample in a real redis-server; `aml-screener history index` stores every screened address in a real PostgreSQL;
`aml-screener history lookback` watches the watchlist. Then a sync lists addresses the stream already sent to or
received from: exactly the past events that touched them (the generator's own record is the oracle, with the
TRON twin of a listed EVM account) get a RetroactiveMatch; a removal gets its Delisted records."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from aml_screener.devstack.generator import Expected, GeneratedEvent
from aml_screener.devstack.postgres_server import PostgresServer
from aml_screener.screening.records import Direction
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync
from tests.history_support import (
    HistoryProcess,
    HistoryReader,
    HistoryTopics,
    fresh_database,
    history_env,
    history_processes,
    listed_keys,
    touched,
)
from tests.integration.harness import IsolatedStack, all_decided, generate, load_bundled_watchlist, produce

pytestmark = pytest.mark.integration


def tron_twin(evm_address: str) -> str:
    import base58

    return base58.b58encode_check(b"\x41" + bytes.fromhex(evm_address[2:].lower())).decode()


def screened_addresses(events: list[GeneratedEvent]) -> int:
    """How many rows the history must hold: one per screened address of every decided event."""
    return sum(
        1 if event.direction is Direction.WITHDRAWAL else len(dict.fromkeys(event.sources))
        for event in events
        if event.expected is not Expected.DEAD_LETTER
    )


def pick_listings(events: list[GeneratedEvent]) -> dict[str, list[tuple[str, str]]]:
    """Addresses the stream already touched, to be listed: the TRON twin of an EVM destination (a related match on
    every EVM chain and spelling), a TRON destination, a source of a Bitcoin deposit. Asset -> (network, address)."""
    clean = [event for event in events if event.expected is Expected.CLEAR]
    evm_to = next(e for e in clean if e.direction is Direction.WITHDRAWAL and e.network in ("ethereum", "bsc"))
    tron_to = next(e for e in clean if e.direction is Direction.WITHDRAWAL and e.network == "tron")
    btc_from = next(e for e in clean if e.direction is Direction.DEPOSIT and e.network == "bitcoin")
    return {
        "TRX": [("tron", tron_twin(evm_to.address)), ("tron", tron_to.address)],
        "XBT": [("bitcoin", btc_from.sources[0])],
    }


def sync_hacks(stack: IsolatedStack, lists: Path, listed: dict[str, list[tuple[str, str]]]) -> str:
    """The `hacks` source holds exactly ``listed``; the bundled OFAC sample stays. The new active version."""
    for old in lists.glob("*.txt"):
        old.unlink()
    for asset, pairs in listed.items():
        (lists / f"hacks_{asset}.txt").write_text("".join(f"{address}\n" for _network, address in pairs))
    store = WatchlistStore(redis.Redis.from_url(stack.redis_url, decode_responses=True))
    config = AddressListConfig(
        name="hacks", location=str(lists / "*.txt"), list="hacks", category="theft", max_shrink=1.0
    )
    result = run_sync(store, [config], keep_other_sources=True)
    assert result.activated and result.version
    return result.version


class Pipeline:
    """The history processes of one test, on its stack and database."""

    def __init__(
        self, stack: IsolatedStack, server: PostgresServer, dsn: str, start: Callable[..., HistoryProcess], lists: Path
    ) -> None:
        self.server = server
        self.lists = lists  # the `hacks` source's files
        self.topics = HistoryTopics.unique()
        self.topics.create(stack)
        self.env = history_env(stack, dsn, self.topics, AML_HISTORY_GROUP_ID=f"history-{uuid.uuid4().hex[:8]}")
        self.start = start
        self.dsn = dsn

    def indexer(self, name: str = "indexer") -> HistoryProcess:
        return self.start("index", self.env, name)

    def lookback(self, name: str = "lookback") -> HistoryProcess:
        return self.start("lookback", self.env, name)

    def rows(self) -> int:
        with contextlib.closing(psycopg.connect(self.dsn)) as conn:
            row = conn.execute("SELECT count(*) FROM aml_history.screened_addresses").fetchone()
        return int(row[0]) if row else 0

    def wait_rows(self, process: HistoryProcess, expected: int, timeout: float = 90) -> None:
        process.wait_until(lambda: self.rows() >= expected, timeout, f"{expected} history rows")


@pytest.fixture
def pipeline(stack: IsolatedStack, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Pipeline]:
    with fresh_database(postgres_server) as dsn, history_processes() as start:
        yield Pipeline(stack, postgres_server, dsn, start, tmp_path)


@pytest.fixture
def history_reader(stack: IsolatedStack, pipeline: Pipeline) -> Iterator[HistoryReader]:
    reader = HistoryReader(stack, pipeline.topics)
    yield reader
    reader.close()


def test_a_sync_alerts_exactly_the_past_withdrawals_and_deposits_that_touched_new_listings(
    stack, screeners, reader, pipeline, history_reader
):
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 3000, seed=41, hit_share=0.03, deposit_share=0.4, clean_pool=300)
    screener = screeners()
    indexer = pipeline.indexer()
    lookback = pipeline.lookback()
    screener.wait_assigned()
    indexer.wait_ready()
    lookback.wait_ready()  # its baseline (the OFAC sample) is recorded
    produce(stack, events)
    reader.read_until(all_decided(events), 90, "every event decided")
    pipeline.wait_rows(indexer, screened_addresses(events))

    listed = pick_listings(events)
    expected = touched(events, [pair for pairs in listed.values() for pair in pairs])
    assert len(expected) > 10 and any(index > 0 or "d" in event for event, index in expected)
    version = sync_hacks(stack, pipeline.lists, listed)
    history_reader.read_until(lambda r: r.retroactive_events() >= expected, 60, "every retroactive match")
    history_reader.settle(2)
    assert history_reader.retroactive_events() == expected
    assert len({r["retroactive_match_id"] for r in history_reader.retroactive}) == len(history_reader.retroactive)
    assert {r["watchlist_version"] for r in history_reader.retroactive} == {version}
    assert {r["found_by"] for r in history_reader.retroactive} == {"lookback"}
    directions = {r["decision"]["direction"] for r in history_reader.retroactive}
    assert directions == {"withdrawal", "deposit"}
    relations = {m["relation"] for r in history_reader.retroactive for m in r["matches"]}
    assert "same_account" in relations  # the TRON twin of the EVM destinations
    assert all(r["decision"]["account_id"] and r["decision"]["amount"] is not None for r in history_reader.retroactive)
    lookback.wait_until(
        lambda: lookback.metric("aml_history_retroactive_matches_total") == len(expected), 10, "the match counter"
    )
    assert lookback.metric("aml_history_lookback_lag_seconds") == 0
    assert pipeline.rows() == screened_addresses(events)  # written once each

    # A removal: the BTC source is delisted; its announcement names nothing flagged (the stream was screened
    # before it was listed), and nothing already alerted is alerted again.
    remaining = {"TRX": listed["TRX"]}
    sync_hacks(stack, pipeline.lists, remaining)
    _, btc_keys = listed_keys(listed["XBT"])  # its own key and the one the list loader derives for it
    history_reader.read_until(lambda r: len(r.delisted) >= len(btc_keys), 60, "the delisting")
    history_reader.settle(1)
    assert {announcement["key"] for announcement in history_reader.delisted} == btc_keys
    for announcement in history_reader.delisted:
        assert [listing["listed_address"] for listing in announcement["removed"]] == [listed["XBT"][0][1]]
        assert announcement["decision"] is None and announcement["affected_decisions"] == 0
    assert len(history_reader.retroactive) == len(expected)
    assert indexer.terminate() == 0 and lookback.terminate() == 0


def test_a_sync_while_the_indexer_is_down_loses_no_retroactive_match(
    stack, screeners, reader, pipeline, history_reader
):
    """The lookback processes the new version while the history lacks the decisions; the indexer, started later,
    finds the matches itself when it stores them (found_by 'indexer')."""
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 1500, seed=43, hit_share=0.02, deposit_share=0.4, clean_pool=150)
    screener = screeners()
    lookback = pipeline.lookback()
    screener.wait_assigned()
    lookback.wait_ready()
    produce(stack, events)
    reader.read_until(all_decided(events), 90, "every event decided")
    listed = pick_listings(events)
    expected = touched(events, [pair for pairs in listed.values() for pair in pairs])
    version = sync_hacks(stack, pipeline.lists, listed)
    lookback.wait_until(
        lambda: lookback.metric("aml_history_lookback_versions_total", kind="change") == 1, 30, "the version done"
    )
    assert history_reader.settle(1).retroactive == []  # nothing in the history yet

    indexer = pipeline.indexer()
    history_reader.read_until(lambda r: r.retroactive_events() >= expected, 90, "every late retroactive match")
    history_reader.settle(2)
    assert history_reader.retroactive_events() == expected
    assert {r["found_by"] for r in history_reader.retroactive} == {"indexer"}
    assert {r["watchlist_version"] for r in history_reader.retroactive} == {version}
    pipeline.wait_rows(indexer, screened_addresses(events))


def test_an_indexer_killed_mid_stream_and_a_database_crash_lose_no_match_and_store_nothing_twice(
    stack, screeners, reader, pipeline, history_reader
):
    """SIGKILL of the indexer while it writes, then a crash of PostgreSQL (SIGKILL of the postmaster, recovery at
    restart) while decisions keep coming: every screened address is stored exactly once, and a sync afterwards
    finds exactly the past events that touched its listings."""
    listings = load_bundled_watchlist(stack.redis_url)
    events = generate(listings, 2400, seed=47, hit_share=0.02, deposit_share=0.4, clean_pool=200)
    screener = screeners()
    indexer = pipeline.indexer("indexer-1")
    lookback = pipeline.lookback()
    screener.wait_assigned()
    indexer.wait_ready()
    lookback.wait_ready()
    half = len(events) // 2
    produce(stack, events[:half])
    pipeline.wait_rows(indexer, 100)
    indexer.kill()  # mid-stream: batches written but not committed are read again by the next member
    produce(stack, events[half:])
    reader.read_until(all_decided(events), 90, "every event decided")
    pipeline.server.kill()
    pipeline.server.start()
    replacement = pipeline.indexer("indexer-2")
    pipeline.wait_rows(replacement, screened_addresses(events), timeout=120)
    lookback.wait_ready(60)  # reconnected after the crash

    listed = pick_listings(events)
    expected = touched(events, [pair for pairs in listed.values() for pair in pairs])
    sync_hacks(stack, pipeline.lists, listed)
    history_reader.read_until(lambda r: r.retroactive_events() >= expected, 60, "every retroactive match")
    history_reader.settle(2)
    assert history_reader.retroactive_events() == expected
    assert len({r["retroactive_match_id"] for r in history_reader.retroactive}) == len(history_reader.retroactive)
    assert pipeline.rows() == screened_addresses(events)  # nothing stored twice, nothing missing
    assert replacement.terminate() == 0 and lookback.terminate() == 0
