"""The lookback's semantics on real components: real PostgreSQL (history, change log, progress), real redis-server
(watchlist versions written by the real sync), real Kafka (the records). Decisions are made in-process by the
screener's own batch pipeline against the real Redis watchlist and stored through the indexer's own decoder, so
every field is what a running screener writes; the process-level pipeline is tests/integration/test_history_e2e.py.

What a compliance team relies on: a newly listed address finds exactly the past events that touched it within the
window (withdrawals to it, deposits from it, and addresses related to it: the TRON twin of a listed EVM account),
none outside the window, none the screener already decided with the listing; a removal names the decisions it
flagged; a crash before the records were acknowledged redoes them with the same ids."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import base58
import psycopg
import pytest
import redis

from aml_screener.devstack.postgres_server import PostgresServer
from aml_screener.history.indexer import BatchDecoder, DecisionReader
from aml_screener.history.lookback import Lookback
from aml_screener.history.metrics import HistoryMetrics
from aml_screener.history.outputs import DeliveryFailed, HistoryOutputs
from aml_screener.history.store import HistoryStore
from aml_screener.infra.settings import load_settings
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.codec import DepositDecoder, WithdrawalDecoder
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screener.schemas import DEPOSIT_RECEIVED
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync
from tests.history_support import HistoryReader, HistoryTopics, fresh_database, listed_keys
from tests.integration.harness import CATALOG, REPOSITORY, IsolatedStack, encoder
from tests.pipeline_support import DEPOSIT_TOPIC, Record, batch_screener

pytestmark = pytest.mark.integration

WINDOW_DAYS = 365
RNG = random.Random(20261201)


def evm() -> str:
    return "0x" + RNG.randbytes(20).hex()


def tron_twin(evm_address: str) -> str:
    """The TRON address of the same 20 bytes (one secp256k1 key controls both)."""
    return base58.b58encode_check(b"\x41" + bytes.fromhex(evm_address[2:])).decode()


def bitcoin() -> str:
    return base58.b58encode_check(b"\x00" + RNG.randbytes(20)).decode()


class World:
    """A watchlist in the stack's Redis (address lists per asset, synced by the real sync), decisions made
    in-process against it, and a history database they are stored in."""

    def __init__(self, stack: IsolatedStack, dsn: str, lists: Path) -> None:
        self.stack = stack
        self.dsn = dsn
        self.lists = lists
        self.client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        self.store = WatchlistStore(self.client)
        self.lookup = WatchlistLookup(self.client, WatchlistKeys())
        self.offset = 0
        self.decoder = BatchDecoder(
            decisions_topic="decisions",
            withdrawals_topic="withdrawals",
            deposits_topic=DEPOSIT_TOPIC,
            decisions=DecisionReader(REPOSITORY, CATALOG),
            withdrawals=WithdrawalDecoder(REPOSITORY, CATALOG, 65_536),
            deposits=DepositDecoder(REPOSITORY, CATALOG, 65_536),
            dead_letter_topic="dlq",
        )

    def sync(self, listed: dict[str, list[str]]) -> str:
        """Make the watchlist exactly ``listed`` (asset -> addresses), as one source; the active version."""
        for old in self.lists.glob("*.txt"):
            old.unlink()
        for asset, addresses in listed.items():
            (self.lists / f"hacks_{asset}.txt").write_text("".join(f"{a}\n" for a in addresses))
        config = AddressListConfig(
            name="hacks", location=str(self.lists / "*.txt"), list="hacks", category="theft", max_shrink=1.0
        )
        result = run_sync(self.store, [config])
        assert result.version is not None
        return result.version

    def screen(self, events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Screen ("withdrawal"|"deposit", event) pairs with the screener's pipeline against the active watchlist
        and store decisions and events through the indexer's decoder; return the decisions."""
        now_us = int(time.time() * 1e6)
        screener = batch_screener(self.lookup.lookup, clock_us=lambda: now_us)
        records = []
        for kind, event in events:
            self.offset += 1
            if kind == "deposit":
                value = encoder(DEPOSIT_RECEIVED).encode(event)
                records.append(Record(DEPOSIT_TOPIC, 0, self.offset, now_us // 1000, None, value))
            else:
                records.append(Record("withdrawals", 0, self.offset, now_us // 1000, None, encoder().encode(event)))
        completed = screener.complete(screener.prepare(records))
        decisions = [
            Record("decisions", 0, self.offset + index, now_us // 1000, output.key, output.value)
            for index, output in enumerate(completed.outputs)
            if output.topic == "decisions"
        ]
        batch = self.decoder.decode([*records, *decisions])
        with psycopg.connect(self.dsn) as conn:
            HistoryStore(conn).write(batch.addresses, batch.events)
        return [self.decoder.decisions.decode(record.value) for record in decisions]


def withdrawal(event_id: str, network: str, address: str, days_ago: float, asset: str = "ETH") -> tuple[str, dict]:
    return "withdrawal", {
        "event_id": event_id,
        "exchange_id": "upbit-kr",
        "account_id": f"acct-{event_id}",
        "asset": asset,
        "network": network,
        "destination_address": address,
        "amount": Decimal("1.25"),
        "usd_value": Decimal("4100.50"),
        "requested_at": int((time.time() - days_ago * 86_400) * 1000),
    }


def deposit(event_id: str, sources: list[str], days_ago: float) -> tuple[str, dict]:
    return "deposit", {
        "event_id": event_id,
        "exchange_id": "upbit-kr",
        "account_id": f"acct-{event_id}",
        "asset": "BTC",
        "network": "bitcoin",
        "tx_hash": "ab" * 32,
        "output_index": 0,
        "receiving_address": bitcoin(),
        "source_addresses": sources,
        "amount": Decimal("0.5"),
        "observed_at": int((time.time() - days_ago * 86_400) * 1000),
    }


@pytest.fixture
def world(stack: IsolatedStack, postgres_server: PostgresServer, tmp_path: Path) -> Iterator[World]:
    with fresh_database(postgres_server) as dsn:
        yield World(stack, dsn, tmp_path)


@pytest.fixture
def topics(stack: IsolatedStack) -> HistoryTopics:
    created = HistoryTopics.unique()
    created.create(stack)
    return created


def make_lookback(world: World, topics: HistoryTopics, outputs: HistoryOutputs | None = None) -> Lookback:
    settings = load_settings(
        kafka_bootstrap_servers=world.stack.bootstrap_servers,
        history_retroactive_topic=topics.retroactive,
        history_delisted_topic=topics.delisted,
        history_dead_letter_topic=topics.dead_letter,
    )
    return Lookback(
        connect=lambda: psycopg.connect(world.dsn, options="-c timezone=UTC"),
        client=world.client,
        keys=WatchlistKeys(),
        outputs=outputs or HistoryOutputs(settings, REPOSITORY, CATALOG),
        lookback_days=WINDOW_DAYS,
        metrics=HistoryMetrics(),
        state=ServiceState(),
    )


@pytest.fixture
def reader(stack: IsolatedStack, topics: HistoryTopics) -> Iterator[HistoryReader]:
    history_reader = HistoryReader(stack, topics)
    yield history_reader
    history_reader.close()


def test_new_listings_find_exactly_the_past_events_that_touched_them_within_the_window(world, topics, reader):
    already, direct, evm_account, old, never = evm(), evm(), evm(), evm(), evm()
    btc_listed, btc_clean = bitcoin(), bitcoin()
    world.sync({"ETH": [already]})
    lookback = make_lookback(world, topics)
    assert [r.baseline for r in lookback.process_pending()] == [True]

    world.screen(
        [
            withdrawal("w-direct", "ethereum", direct.upper().replace("0X", "0x"), days_ago=30),
            withdrawal("w-twin", "tron", tron_twin(evm_account), days_ago=200, asset="USDT"),
            withdrawal("w-old", "ethereum", old, days_ago=WINDOW_DAYS + 5),
            withdrawal("w-never", "ethereum", never, days_ago=3),
            withdrawal("w-already", "ethereum", already, days_ago=3),
            deposit("d-mixed", [btc_clean, btc_listed], days_ago=10),
        ]
    )
    v2 = world.sync({"ETH": [already, direct, evm_account, old], "XBT": [btc_listed]})
    after_v2 = world.screen([withdrawal("w-after", "ethereum", direct, days_ago=0)])  # decided with v2: flagged
    assert after_v2[0]["decision"] == "FLAGGED"

    results = lookback.process_pending()
    assert [(r.version, r.retroactive) for r in results] == [(v2, 3)]
    reader.read_until(lambda r: len(r.retroactive) >= 3, 30, "three retroactive matches").settle(1)
    assert reader.retroactive_events() == {("w-direct", 0), ("w-twin", 0), ("d-mixed", 1)}
    by_event = {record["decision"]["event_id"]: record for record in reader.retroactive}

    direct_match = by_event["w-direct"]
    assert direct_match["watchlist_version"] == v2
    assert direct_match["decision"]["outcome"] == "CLEAR" and direct_match["decision"]["direction"] == "withdrawal"
    assert direct_match["decision"]["account_id"] == "acct-w-direct"
    assert direct_match["decision"]["amount"] == Decimal("1.25")
    assert direct_match["decision"]["usd_value"] == Decimal("4100.50")
    assert direct_match["decision"]["address"] == direct.upper().replace("0X", "0x")  # as typed
    [match] = direct_match["matches"]
    assert (match["list"], match["category"], match["match_type"]) == ("hacks", "theft", "direct")
    assert match["listed_address"] == direct
    assert direct_match["severity"] == "high"

    [twin] = by_event["w-twin"]["matches"]  # listed as an EVM account, sent to on TRON
    assert (twin["match_type"], twin["relation"]) == ("related", "same_account")
    assert twin["listed_address"] == evm_account
    assert by_event["w-twin"]["severity"] == "medium"  # related: one level below direct

    deposit_match = by_event["d-mixed"]
    assert deposit_match["decision"]["direction"] == "deposit"
    assert deposit_match["decision"]["address"] == btc_listed
    assert deposit_match["decision"]["amount"] == Decimal("0.5")

    # Nothing twice: a second pass finds the version done.
    assert lookback.process_pending() == []
    assert len(reader.settle(1).retroactive) == 3


def test_a_removal_names_the_decisions_it_flagged_and_whether_they_hold_funds(world, topics, reader):
    """A theft listing held the withdrawal to it and froze the deposit from it (the default policy); removing
    both listings names both decisions as open actions to release, and announces each removal once."""
    thief, other, thief_btc = evm(), evm(), bitcoin()
    world.sync({"ETH": [thief, other], "XBT": [thief_btc]})
    lookback = make_lookback(world, topics)
    lookback.process_pending()
    held, frozen = world.screen(
        [withdrawal("w-to-thief", "ethereum", thief, days_ago=1), deposit("d-from-thief", [thief_btc], days_ago=2)]
    )
    assert (held["decision"], held["action"]) == ("FLAGGED", "hold")
    assert (frozen["decision"], frozen["action"]) == ("FLAGGED", "freeze")
    world.screen([withdrawal("w-to-other", "ethereum", other, days_ago=1)])
    v2 = world.sync({"ETH": [other]})

    [result] = lookback.process_pending()
    assert (result.version, result.delisted_decisions) == (v2, 2)
    reader.read_until(lambda r: len(r.delisted) >= 5, 30, "the delistings and their decisions")
    announcements = {record["key"]: record for record in reader.delisted if record["decision"] is None}
    named = {record["decision"]["event_id"]: record for record in reader.delisted if record["decision"] is not None}
    # the Bitcoin listing's own key and the P2SH-P2WPKH key the list loader derives for it
    assert set(announcements) == {"evm:" + thief} | listed_keys([("bitcoin", thief_btc)])[1]
    evm_announcement = announcements["evm:" + thief]
    assert [listing["listed_address"] for listing in evm_announcement["removed"]] == [thief]
    assert evm_announcement["still_listed"] == [] and evm_announcement["affected_decisions"] == 1
    assert set(named) == {"w-to-thief", "d-from-thief"}
    assert named["w-to-thief"]["decision"]["outcome"] == "FLAGGED"
    assert named["w-to-thief"]["decision"]["action"] == "hold" and named["w-to-thief"]["open_action"] is True
    assert named["d-from-thief"]["decision"]["action"] == "freeze" and named["d-from-thief"]["open_action"] is True
    assert named["d-from-thief"]["decision"]["direction"] == "deposit"
    assert not any(record["still_flagged"] for record in named.values())
    assert len(reader.settle(1).delisted) == 5  # three announcements, two decisions, each once


class _Refusing(HistoryOutputs):
    """Real outputs that fail the first delivery after sending (as if Kafka had not acknowledged in time)."""

    failures = 1

    def deliver(self, outputs, heartbeat=lambda: None):
        sent = super().deliver(outputs, heartbeat)
        if self.failures:
            self.failures -= 1
            raise DeliveryFailed("simulated: acknowledgements lost")
        return sent


def test_a_version_whose_records_were_not_acknowledged_is_redone_with_the_same_ids(world, topics, reader):
    thief = evm()
    world.sync({"ETH": [evm()]})
    settings = load_settings(
        kafka_bootstrap_servers=world.stack.bootstrap_servers,
        history_retroactive_topic=topics.retroactive,
        history_delisted_topic=topics.delisted,
    )
    lookback = make_lookback(world, topics, _Refusing(settings, REPOSITORY, CATALOG))
    lookback.process_pending()
    world.screen([withdrawal(f"w-{n}", "ethereum", thief, days_ago=n) for n in range(5)])
    world.sync({"ETH": [thief]})
    with pytest.raises(DeliveryFailed):
        lookback.process_pending()
    with contextlib.closing(psycopg.connect(world.dsn)) as conn:
        pending = [v for v in HistoryStore(conn).ingested_versions() if not v.done]
    assert len(pending) == 1  # ingested, not done: the progress did not move past unacknowledged records
    [result] = lookback.process_pending()
    assert result.retroactive == 5
    reader.read_until(lambda r: len(r.retroactive) >= 10, 30, "the matches twice").settle(1)
    ids = [record["retroactive_match_id"] for record in reader.retroactive]
    assert len(ids) == 10 and len(set(ids)) == 5  # duplicates, recognisable


def test_versions_activated_while_the_lookback_was_away_are_each_looked_back_on(world, topics, reader):
    first, second, kept = evm(), evm(), evm()
    world.sync({"ETH": [kept]})
    lookback = make_lookback(world, topics)
    lookback.process_pending()
    world.screen([withdrawal("w-first", "ethereum", first, 5), withdrawal("w-second", "ethereum", second, 5)])
    v2 = world.sync({"ETH": [kept, first]})
    v3 = world.sync({"ETH": [kept, first, second]})
    v4 = world.sync({"ETH": [kept, second]})  # first delisted again
    results = lookback.process_pending()
    assert [(r.version, r.retroactive) for r in results] == [(v2, 1), (v3, 1), (v4, 0)]
    reader.read_until(lambda r: len(r.retroactive) >= 2 and len(r.delisted) >= 1, 30, "records").settle(1)
    assert {(r["decision"]["event_id"], r["watchlist_version"]) for r in reader.retroactive} == {
        ("w-first", v2),
        ("w-second", v3),
    }
    assert [(r["key"], r["watchlist_version"]) for r in reader.delisted] == [("evm:" + first, v4)]


def test_window_is_measured_from_the_listing_version(world, topics):
    """Events older than AML_HISTORY_LOOKBACK_DAYS before the version are not looked up (even in the default
    partition, where events older than the partitions land)."""
    address = evm()
    world.sync({"ETH": [evm()]})
    lookback = make_lookback(world, topics)
    lookback.process_pending()
    world.screen([withdrawal("w-ancient", "ethereum", address, days_ago=3 * WINDOW_DAYS)])
    with contextlib.closing(psycopg.connect(world.dsn)) as conn:
        partition = conn.execute(
            "SELECT tableoid::regclass::text FROM aml_history.screened_addresses WHERE event_id = 'w-ancient'"
        ).fetchone()
    assert partition == ("aml_history.screened_addresses_default",)
    world.sync({"ETH": [address]})
    [result] = lookback.process_pending()
    assert result.retroactive == 0
    since = datetime.now(UTC) - timedelta(days=WINDOW_DAYS)
    with contextlib.closing(psycopg.connect(world.dsn)) as conn:
        rows = list(HistoryStore(conn).addresses_touching(["evm:" + address], since=since - timedelta(days=5 * 365),
                                                          before=datetime.now(UTC)))  # fmt: skip
    assert [row.event_id for row in rows] == ["w-ancient"]  # stored, only outside the window
