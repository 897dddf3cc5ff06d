"""The watchlist in a real redis-server: versioned layout, atomic activation, one-round-trip lookup, loader CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from aml_screener.cli import main
from aml_screener.devstack.redis_server import RedisServer
from aml_screener.screener.errors import LookupUnavailable
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screening.addresses import normalize
from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist import loader
from aml_screener.watchlist.keys import WatchlistKeys
from aml_screener.watchlist.store import KEEP_VERSIONS, WatchlistStore
from tests.shared_data import watchlist_data_dir

pytestmark = pytest.mark.integration

SHARED = watchlist_data_dir()
OFAC_LISTS = SHARED / "ofac_0xB10C_lists_2024-09-27"
LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"


@pytest.fixture
def server():
    with RedisServer() as running:
        yield running


@pytest.fixture
def client(server):
    return redis.Redis.from_url(server.url, decode_responses=True)


def listing(list_name: str, address: str, entry_id: str = "1", category: str = "sanctions") -> tuple[str, Listing]:
    key = normalize("ethereum", address).key
    return key, Listing(list_name, category, "test", entry_id, address, listed_asset="ETH")


def test_loading_a_list_replaces_only_that_list_and_versions_are_immutable(client):
    store = WatchlistStore(client)
    first = store.replace_list("ofac-sdn", [listing("ofac-sdn", LAZARUS, "27307")])
    other = "0x52908400098527886e0f7030069857d2e4169ee7"
    second = store.replace_list("exchange-blocklist", [listing("exchange-blocklist", other, "b1", "theft")])
    assert second.version != first.version
    assert second.parent == first.version
    assert store.lookup(second.version, "evm:" + LAZARUS.lower())[0]["entry_id"] == "27307"
    assert store.lookup(second.version, "evm:" + other)[0]["category"] == "theft"
    assert store.lookup(first.version, "evm:" + other) == [], "the old version was not edited in place"
    third = store.replace_list("ofac-sdn", [])
    assert store.lookup(third.version, "evm:" + LAZARUS.lower()) == []
    assert store.lookup(third.version, "evm:" + other), "other lists survive a reload of one list"
    assert set(third.lists) == {"ofac-sdn", "exchange-blocklist"}


def test_identical_content_does_not_make_a_new_version_and_old_versions_are_collected(client):
    store = WatchlistStore(client)
    meta = store.replace_list("l", [listing("l", LAZARUS)])
    assert store.replace_list("l", [listing("l", LAZARUS)]).version == meta.version
    versions = [meta.version]
    for index in range(KEEP_VERSIONS + 2):
        address = f"0x{index + 1:040x}"
        versions.append(store.replace_list("l", [listing("l", address)]).version)
    kept = client.zrange(store.keys.versions, 0, -1)
    assert len(kept) == KEEP_VERSIONS
    assert kept[-1] == versions[-1] == store.active_version()
    assert not client.exists(store.keys.addresses(versions[0])), "collected versions are deleted"


def test_lookup_is_one_consistent_round_trip_and_fails_closed_on_any_doubt(client):
    keys = WatchlistKeys()
    lookup = WatchlistLookup(client, keys)
    with pytest.raises(LookupUnavailable) as nothing:
        lookup.lookup(["evm:0x1"])
    assert nothing.value.reason == "no_active_version"
    store = WatchlistStore(client, keys)
    meta = store.replace_list("ofac-sdn", [listing("ofac-sdn", LAZARUS, "27307")])
    result = lookup.lookup(["evm:" + LAZARUS.lower(), "evm:0x" + "1" * 40])
    assert result.version == meta.version
    assert list(result.matches) == ["evm:" + LAZARUS.lower()]
    newer = store.replace_list("extra", [listing("extra", "0x" + "1" * 40, "e1", "scam")])
    result = lookup.lookup(["evm:0x" + "1" * 40])
    assert result.version == newer.version, "a new active version is picked up at the next batch"
    assert result.matches["evm:0x" + "1" * 40][0]["list"] == "extra"
    client.delete(keys.addresses(newer.version))  # the active version's data vanished (e.g. a flushed Redis)
    with pytest.raises(LookupUnavailable) as emptied:
        lookup.lookup(["evm:0x" + "1" * 40])
    assert emptied.value.reason == "empty_watchlist"


def test_lookup_reports_an_unreachable_redis(server, client):
    WatchlistStore(client).replace_list("l", [listing("l", LAZARUS)])
    lookup = WatchlistLookup(
        redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=0.5), WatchlistKeys()
    )
    lookup.lookup(["evm:" + LAZARUS.lower()])
    server.kill()
    with pytest.raises(LookupUnavailable) as caught:
        lookup.lookup(["evm:" + LAZARUS.lower()])
    assert caught.value.reason == "redis_unavailable"


@pytest.mark.skipif(not OFAC_LISTS.is_dir(), reason="shared watchlist data not present")
def test_cli_loads_the_real_ofac_per_asset_lists_and_reports_rejects(server, client, capsys, monkeypatch):
    monkeypatch.setenv("AML_REDIS_URL", server.url)
    files = sorted(str(path) for path in OFAC_LISTS.glob("sanctioned_addresses_*.txt"))
    code = main(["watchlist", "load", "--list", "ofac-sdn", "--category", "sanctions", "--show-rejected", *files])
    out = capsys.readouterr().out
    assert code == 0
    total_lines = sum(len(Path(f).read_text().split()) for f in files)
    assert total_lines == 654
    # Every line is accounted for: 643 loaded + 11 rejected with a reason. The rejects are the TRON address
    # OFAC filed under XBT, and the formats this version does not parse yet (BCH CashAddr, Monero, XRP).
    assert (
        "643 listings from 17 file(s); rejected 11 (unsupported_format: 6, unsupported_asset: 4, bad_version: 1)" in out
    )
    assert "sanctioned_addresses_XBT.txt:355 'TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq': bad_version" in out
    store = WatchlistStore(client)
    meta = store.meta(store.active_version() or "")
    assert meta is not None
    assert meta.listings == 643
    # 641 distinct strings; EVM case variants collapse, the same address under several assets is one key.
    assert meta.keys < 641
    hit = store.lookup(meta.version, normalize("ethereum", LAZARUS.lower()).key)
    assert hit and hit[0]["listed_address"] == LAZARUS
    assert main(["watchlist", "check", "ethereum", LAZARUS.upper().replace("0X", "0x")]) == 4, "listed: exit 4"
    assert main(["watchlist", "check", "ethereum", "0x" + "2" * 40]) == 0
    capsys.readouterr()
    assert main(["watchlist", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["active"] == meta.version
    assert status["meta"]["lists"]["ofac-sdn"]["rejected"] == 11


def test_cli_refuses_to_load_nothing(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("AML_REDIS_URL", server.url)
    empty = tmp_path / "empty_ETH.txt"
    empty.write_text("not-an-address\n")
    assert main(["watchlist", "load", "--list", "x", "--category", "scam", str(empty)]) == 1
    assert "no valid address" in capsys.readouterr().err
    assert WatchlistStore(redis.Redis.from_url(server.url, decode_responses=True)).active_version() is None


def test_bundled_demo_sample_loads_with_party_provenance(client):
    spec = loader.from_manifest(Path(loader.__file__).resolve().parents[1] / "demo" / "watchlist" / "manifest.json")
    assert not spec.parsed.rejected
    meta = loader.load(WatchlistStore(client), spec)
    store = WatchlistStore(client)
    match = store.lookup(meta.version, "evm:" + LAZARUS.lower())[0]
    assert match["entry_id"] == "27307"
    assert match["entry_name"] == "Lazarus Group"
    assert match["programs"] == ["DPRK3"]
    assert match["published_at"] is not None
