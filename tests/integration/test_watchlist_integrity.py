"""Watchlist integrity on a real redis-server: a sync whose result is inconsistent (checksum mismatch, a list that
shrank to a fraction, a table that lost keys) is refused and the previous version stays in force; a Redis that lost
watchlist data is detected by the lookup (fail closed) and repaired by the next sync."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import pytest

from aml_screener.cli import main
from aml_screener.devstack.address_factory import random_address
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.errors import LookupUnavailable
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screening.addresses import normalize_key
from aml_screener.watchlist.config import AddressListConfig, OfacXmlConfig, source_config
from aml_screener.watchlist.errors import SyncConfigError, SyncFailed
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import run_sync
from tests.shared_data import watchlist_data_dir

pytestmark = pytest.mark.integration

OFAC_XML_DIR = watchlist_data_dir() / "ofac_sdn_advanced_xml_2024-09-26"


def addresses(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [random_address("ethereum", rng) for _ in range(count)]


def write_list(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def blocklist(path: Path, **extra) -> AddressListConfig:
    return AddressListConfig(name="blocklist", location=str(path), list="blocklist", category="theft", **extra)


def listed(store: WatchlistStore, address: str) -> bool:
    return bool(store.lookup(store.active_version() or "", normalize_key("ethereum", address)))


def test_a_list_that_shrinks_to_a_fraction_is_refused_unless_the_operator_allows_it(store, tmp_path):
    full = addresses(200)
    path = write_list(tmp_path / "block_ETH.txt", full)
    first = run_sync(store, [blocklist(path)])
    write_list(path, full[:20])  # a truncated publication: 90 % of the list gone
    refused = run_sync(store, [blocklist(path)])
    assert refused.sources[0].status == "failed-kept-previous"
    assert "refusing a shrink from 200 to 20 keys" in (refused.sources[0].error or "")
    assert not refused.activated and store.active_version() == first.version, "previous version stays active"
    assert listed(store, full[-1]), "the vanished entries are still enforced"
    write_list(path, full[:150])  # a 25 % shrink is within the default max_shrink (50 %)
    assert run_sync(store, [blocklist(path)]).sources[0].status == "updated"
    write_list(path, full[:10])
    accepted = run_sync(store, [blocklist(path, max_shrink=1.0)])  # the operator accepts a large delisting
    assert accepted.activated and not listed(store, full[-1])


def test_a_checksum_that_does_not_match_the_published_one_is_refused(store, tmp_path):
    path = write_list(tmp_path / "block_ETH.txt", addresses(50))
    good_digest = hashlib.sha256(path.read_bytes()).hexdigest()
    first = run_sync(store, [blocklist(path, sha256=good_digest)])
    assert first.activated
    tampered = addresses(50)[:49] + addresses(1, seed=99)  # same size, one address swapped
    write_list(path, tampered)
    refused = run_sync(store, [blocklist(path, sha256=good_digest)])
    assert refused.sources[0].status == "failed-kept-previous"
    assert f"checksum mismatch: expected SHA-256 {good_digest}" in (refused.sources[0].error or "")
    assert store.active_version() == first.version
    assert not listed(store, tampered[-1]), "the tampered content never became active"
    checksum = tmp_path / "checksum.txt"
    checksum.write_text(f"SHA256(block_ETH.txt) = {hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    accepted = run_sync(store, [blocklist(path, checksum_location=str(checksum))])
    assert accepted.activated and listed(store, tampered[-1]), "content matching its published checksum is taken"


def test_ofac_advanced_xml_is_checked_against_ofacs_published_checksum_of_the_decompressed_file(store, tmp_path):
    xml = tmp_path / "sdn_advanced.xml.bz2"
    shutil.copy(OFAC_XML_DIR / "sdn_advanced.xml.bz2", xml)
    config = OfacXmlConfig(
        name="ofac",
        location=str(xml),
        list="ofac-sdn",
        category="sanctions",
        checksum_location=str(OFAC_XML_DIR / "sdn_advanced_checksum.txt"),
    )
    result = run_sync(store, [config])
    assert result.activated and result.sources[0].status == "updated"
    assert result.sources[0].table is not None and result.sources[0].table.keys > 600
    wrong = tmp_path / "wrong_checksum.txt"
    wrong.write_text(f"SHA256(sdn_advanced.xml) = {'0' * 64}\n")
    fresh = WatchlistStore(store.redis, WatchlistKeys("other:{wl}"))
    with pytest.raises(SyncFailed, match="checksum mismatch"):  # a first load refused: nothing becomes active
        run_sync(fresh, [config.model_copy(update={"checksum_location": str(wrong)})])
    assert fresh.active_version() is None


def test_checksum_and_shrink_settings_are_validated(tmp_path):
    base = {"name": "x", "format": "address-list", "location": str(tmp_path)}
    with pytest.raises(SyncConfigError, match="'sha256' must be 64 hexadecimal digits"):
        source_config({**base, "sha256": "abc"}, "source #1")
    with pytest.raises(SyncConfigError, match="'max_shrink' must be a number from 0 to 1"):
        source_config({**base, "max_shrink": 5}, "source #1")


def test_a_table_that_lost_keys_fails_lookups_closed_until_a_sync_rebuilds_it(store, client, tmp_path):
    listed_addresses = addresses(100)
    path = write_list(tmp_path / "block_ETH.txt", listed_addresses)
    first = run_sync(store, [blocklist(path)])
    lookup = WatchlistLookup(client, store.keys)
    key = normalize_key("ethereum", listed_addresses[0])
    assert lookup.lookup([key]).matches, "listed"
    assert first.sources[0].table is not None
    table = first.sources[0].table.key
    client.hdel(table, key)  # Redis lost (or someone removed) one entry
    with pytest.raises(LookupUnavailable) as failed:
        lookup.lookup([key])
    assert failed.value.reason == "count_mismatch", "a partial table is never used to decide"
    repaired = run_sync(store, [blocklist(path)])  # same file: 'unchanged' would trust the damaged table
    assert repaired.sources[0].status == "updated"
    assert int(client.hlen(table)) == 100, "the table is rebuilt in place (same content, same key)"
    assert lookup.lookup([key]).matches, "decisions resume with the complete list"


def test_a_damaged_table_whose_source_is_gone_leaves_the_active_version_failing_closed(store, client, tmp_path):
    path = write_list(tmp_path / "block_ETH.txt", addresses(100))
    first = run_sync(store, [blocklist(path)])
    assert first.sources[0].table is not None
    client.hdel(first.sources[0].table.key, normalize_key("ethereum", addresses(1)[0]))
    path.unlink()
    with pytest.raises(SyncFailed, match="damaged and could not be rebuilt"):
        run_sync(store, [blocklist(path)])
    assert store.active_version() == first.version
    with pytest.raises(LookupUnavailable, match="lost or altered"):
        WatchlistLookup(client, store.keys).lookup([])


def test_cli_load_refuses_a_shrunk_reload_unless_told_and_says_why(server, store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AML_REDIS_URL", server.url)
    full = addresses(40)
    path = write_list(tmp_path / "stolen_ETH.txt", full)
    args = ["watchlist", "load", "--list", "stolen", "--category", "theft"]
    assert main([*args, str(path)]) == 0
    write_list(path, full[:4])
    assert main([*args, str(path)]) == 1
    printed = capsys.readouterr()
    assert "refusing a shrink from 40 to 4 keys" in printed.out + printed.err
    assert listed(store, full[-1]), "the previous list stays in force"
    assert main([*args, "--max-shrink", "1", str(path)]) == 0
    assert not listed(store, full[-1])
    assert main([*args, "--max-shrink", "2", str(path)]) == 2
