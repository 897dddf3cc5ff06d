"""The watchlist in a real redis-server (layout 2): content-addressed tables, atomic versions, one-round-trip
lookup across tables, the sync's failure rules, change notifications, the CLI on the real OFAC lists."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from aml_screener.cli import main
from aml_screener.demo.sample import load_sample
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.errors import LookupUnavailable
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screening.addresses import normalize
from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.config import AddressListConfig
from aml_screener.watchlist.errors import EmptyTableError, SyncFailed
from aml_screener.watchlist.sources import address_list
from aml_screener.watchlist.sources.base import SourceEntry
from aml_screener.watchlist.store import KEEP_VERSIONS, WatchlistStore
from aml_screener.watchlist.sync import run_sync
from tests.shared_data import watchlist_data_dir

pytestmark = pytest.mark.integration

OFAC_LISTS = watchlist_data_dir() / "ofac_0xB10C_lists_2024-09-27"
LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"
OTHER = "0x52908400098527886e0f7030069857d2e4169ee7"


def entry(address: str, *, list_name: str = "l", entry_id: str = "1", category: str = "sanctions", asset="ETH"):
    key = normalize("ethereum", address).key
    return SourceEntry(key, "evm", Listing(list_name, category, "test", entry_id, address, listed_asset=asset))


def write_list(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def source(path: Path, name: str = "blocklist", category: str = "theft", **extra) -> AddressListConfig:
    return AddressListConfig(name=name, location=str(path), list=name, category=category, **extra)


def test_tables_merge_listings_of_one_key_across_chunks_and_are_content_addressed(store, client, monkeypatch):
    monkeypatch.setattr("aml_screener.watchlist.store._CHUNK", 2)  # force merges across chunk boundaries
    writer = store.table_writer("s")
    writer.add_all([entry(LAZARUS, entry_id="a"), entry(OTHER), entry(LAZARUS.lower(), entry_id="b", asset="USDT")])
    table = writer.finish()
    assert table.keys == 2 and table.listings == 3
    matches = json.loads(client.hget(table.key, "evm:" + LAZARUS.lower()))
    assert {m["entry_id"] for m in matches} == {"a", "b"}
    again = store.table_writer("s")
    again.add_all([entry(LAZARUS.lower(), entry_id="b", asset="USDT"), entry(OTHER), entry(LAZARUS, entry_id="a")])
    assert again.finish().key == table.key, "same content, any order: the same table, not a second copy"
    with pytest.raises(EmptyTableError):
        store.table_writer("empty").finish()


def test_lookup_is_one_consistent_round_trip_across_tables_and_fails_closed_on_any_doubt(store, client):
    lookup = WatchlistLookup(client, WatchlistKeys())
    with pytest.raises(LookupUnavailable) as nothing:
        lookup.lookup(["evm:0x1"])
    assert nothing.value.reason == "no_active_version"
    sanctions = store.table_writer("ofac")
    sanctions.add(entry(LAZARUS, list_name="ofac-sdn", entry_id="27307"))
    theft = store.table_writer("hacks")
    theft.add_all([entry(LAZARUS, list_name="hacks", category="theft"), entry(OTHER, list_name="hacks")])
    tables = {"ofac": sanctions.finish(), "hacks": theft.finish()}
    meta, created = store.activate(tables, {}, {"ofac-sdn": {"category": "sanctions"}, "hacks": {"overridable": True}})
    assert created
    result = lookup.lookup(["evm:" + LAZARUS.lower(), "evm:0x" + "1" * 40])
    assert result.version == meta.version
    assert sorted(m["list"] for m in result.matches["evm:" + LAZARUS.lower()]) == ["hacks", "ofac-sdn"]
    assert result.overridable == frozenset({"hacks"})
    same, created_again = store.activate(tables, {}, meta.lists)
    assert (same.version, created_again) == (meta.version, False), "identical tables: no new version"
    client.delete(tables["hacks"].key)  # a table of the active version vanished (e.g. a flushed or evicted key)
    with pytest.raises(LookupUnavailable) as gone:
        lookup.lookup(["evm:" + OTHER])
    assert gone.value.reason == "empty_watchlist"


def test_lookup_reports_an_unreachable_redis(server, store):
    writer = store.table_writer("s")
    writer.add(entry(LAZARUS))
    store.activate({"s": writer.finish()}, {}, {})
    lookup = WatchlistLookup(
        redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=0.5), WatchlistKeys()
    )
    lookup.lookup(["evm:" + LAZARUS.lower()])
    server.kill()
    with pytest.raises(LookupUnavailable) as caught:
        lookup.lookup(["evm:" + LAZARUS.lower()])
    assert caught.value.reason == "redis_unavailable"


def test_sync_keeps_a_failed_sources_previous_data_and_refuses_a_first_load_that_fails(store, client, tmp_path):
    good = write_list(tmp_path, "block_ETH.txt", [LAZARUS])
    with pytest.raises(SyncFailed):
        run_sync(store, [source(tmp_path / "missing_ETH.txt")])
    assert store.active_version() is None, "first load failed: nothing active, screeners stay not ready"
    first = run_sync(store, [source(good)])
    assert first.activated and first.sources[0].status == "updated"
    assert first.diff["blocklist"]["added_keys"] == ["evm:" + LAZARUS.lower()]
    again = run_sync(store, [source(good)])
    assert not again.activated and again.sources[0].status == "unchanged", "unchanged file: no new version"
    good.write_text("not an address\n")  # the refresh is broken: zero usable entries
    broken = run_sync(store, [source(good)])
    assert broken.sources[0].status == "failed-kept-previous"
    assert "no usable entry" in (broken.sources[0].error or "")
    assert store.lookup(store.active_version() or "", "evm:" + LAZARUS.lower()), "old data still active"
    state = store.source_state("blocklist")
    assert state["last_error"] and float(state["last_failure_at"]) >= float(state["last_success_at"])


def test_a_parser_bug_surfaces_with_its_traceback_instead_of_passing_for_a_failed_source(
    server, store, tmp_path, monkeypatch
):
    """Only what a list or the network can do wrong (OSError, the package's own errors) is a source failure; a
    bug in a parser (here a ValueError) must not be recorded as "failed, kept previous" with no traceback."""
    listed = write_list(tmp_path, "block_ETH.txt", [LAZARUS])
    first = run_sync(store, [source(listed)])
    listed.write_text(f"{LAZARUS}\n{OTHER}\n")

    def buggy_reader(*args: object, **kwargs: object) -> Iterator[tuple[int, str]]:
        raise ValueError("invalid literal for int() with base 10: 'x'")  # what a parser bug looks like

    with monkeypatch.context() as patched:
        patched.setattr(address_list, "read_addresses", buggy_reader)
        with pytest.raises(ValueError, match="invalid literal"):
            run_sync(store, [source(listed)])
        config = tmp_path / "sources.toml"
        config.write_text(f'[[source]]\nname = "blocklist"\nformat = "address-list"\nlocation = "{listed}"\n')
        patched.setenv("AML_REDIS_URL", server.url)
        with pytest.raises(ValueError, match="invalid literal"):  # the command fails loudly (traceback, exit 1)
            main(["watchlist", "sync", str(config), "--no-progress"])
    assert store.active_version() == first.version, "nothing was activated"
    assert not store.source_state("blocklist").get("last_error"), "a bug is not recorded as the list's failure"
    fixed = run_sync(store, [source(listed)])  # the writer lock was released on the way out
    assert fixed.activated and fixed.sources[0].status == "updated"


def test_sync_diff_is_published_and_a_source_dropped_from_the_configuration_is_removed(store, client, tmp_path):
    pubsub = client.pubsub()
    pubsub.subscribe(store.keys.changes)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # subscribed before anything is published
    block = write_list(tmp_path, "block_ETH.txt", [LAZARUS])
    scam = write_list(tmp_path, "scam_ETH.txt", [OTHER])
    run_sync(store, [source(block), source(scam, name="scams", category="scam")])
    block.write_text(f"{OTHER}\n")
    result = run_sync(store, [source(block)])
    assert result.diff["blocklist"]["added_keys"] == ["evm:" + OTHER]
    assert result.diff["blocklist"]["removed_keys"] == ["evm:" + LAZARUS.lower()]
    assert result.diff["scams"]["removed"] == 1, "a source no longer configured is dropped"
    messages = []
    while (message := pubsub.get_message(timeout=1)) is not None:
        messages.append(json.loads(message["data"]))
    assert len(messages) == 2, "one notification per activated version"
    last = messages[-1]
    assert last["version"] == result.version
    assert last["sources"]["blocklist"]["removed_keys"] == ["evm:" + LAZARUS.lower()]
    assert set(store.active_meta().tables) == {"blocklist"}


def test_old_versions_and_their_unused_tables_are_collected(store, client, tmp_path):
    path = tmp_path / "block_ETH.txt"
    tables = []
    for index in range(KEEP_VERSIONS + 2):
        path.write_text(f"0x{index + 1:040x}\n")
        run_sync(store, [source(path)])
        tables.append(store.active_meta().tables["blocklist"])
    assert len(client.zrange(store.keys.versions, 0, -1)) == KEEP_VERSIONS
    assert not client.exists(tables[0]), "the oldest table is gone with its version"
    assert client.exists(tables[-1])


@pytest.mark.skipif(not OFAC_LISTS.is_dir(), reason="shared watchlist data not present")
def test_cli_loads_the_real_ofac_per_asset_lists_and_reports_every_rejected_line(server, client, capsys, monkeypatch):
    monkeypatch.setenv("AML_REDIS_URL", server.url)
    files = sorted(str(path) for path in OFAC_LISTS.glob("sanctioned_addresses_*.txt"))
    assert sum(len(Path(f).read_text().split()) for f in files) == 654
    code = main(["watchlist", "load", "--list", "ofac-sdn", "--category", "sanctions", "--show-rejected", *files])
    out = capsys.readouterr().out
    assert code == 0, out
    # The TRON address OFAC filed under XBT is kept under TRON; only the 64-hex string under XMR is unusable.
    assert "653 entries, rejected 1" in out, out
    assert "1 kept under another chain than listed" in out
    store = WatchlistStore(client)
    tron = store.lookup(store.active_version() or "", "trx:TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq")
    assert tron and tron[0]["listed_asset"] == "XBT"
    hit = store.lookup(store.active_version() or "", normalize("ethereum", LAZARUS.lower()).key)
    assert hit and hit[0]["listed_address"] == LAZARUS
    assert main(["watchlist", "check", "ethereum", "0x" + LAZARUS[2:].upper()]) == 4, "listed: exit 4"
    assert main(["watchlist", "check", "ethereum", "0x" + "2" * 40]) == 0
    capsys.readouterr()
    assert main(["watchlist", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (
        status["meta"]["sources"]["ofac-sdn"]["rejected"] == {"bad_length": 1}
        or status["meta"]["sources"]["ofac-sdn"]["rejected"]
    )


def test_cli_refuses_to_load_nothing(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("AML_REDIS_URL", server.url)
    empty = write_list(tmp_path, "empty_ETH.txt", ["not-an-address"])
    assert main(["watchlist", "load", "--list", "x", "--category", "scam", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "nothing activated" in err and "no usable entry" in err
    assert WatchlistStore(redis.Redis.from_url(server.url, decode_responses=True)).active_version() is None


def test_bundled_demo_sample_loads_with_party_provenance(store):
    result = load_sample(store)
    report = result.sources[0].report
    assert result.activated and report is not None and not report.rejected
    match = store.lookup(result.version, "evm:" + LAZARUS.lower())[0]
    assert match["entry_id"] == "27307"
    assert match["entry_name"] == "Lazarus Group"
    assert match["programs"] == ["DPRK3"]
    assert match["published_at"] is not None
