"""Listings, severities and the plain address-list source."""

from __future__ import annotations

import json

from aml_screener.screening.decision import Outcome, decide, summarize, unscreenable
from aml_screener.screening.watchlist import Listing, Severity, decode_matches, encode_matches, highest_severity
from aml_screener.watchlist.sources.address_list import asset_from_filename, parse_address_list

LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"


def match(category: str, list_name: str = "l") -> dict:
    return Listing(list_name, category, "src", "1", LAZARUS).as_match()


def test_severity_is_the_highest_of_the_matches_and_sanctions_are_critical():
    assert highest_severity([match("scam"), match("sanctions")]) is Severity.CRITICAL
    assert highest_severity([match("theft"), match("mixer")]) is Severity.HIGH
    assert highest_severity([match("internal")]) is Severity.LOW
    verdict = decide([match("ransomware")])
    assert verdict.outcome is Outcome.FLAGGED and verdict.severity is Severity.HIGH


def test_no_match_is_clear_and_unscreenable_carries_its_reason():
    assert decide(None).outcome is Outcome.CLEAR
    assert decide([]).outcome is Outcome.CLEAR
    verdict = unscreenable("unsupported_network")
    assert verdict.outcome is Outcome.UNSCREENABLE and verdict.reason == "unsupported_network"


def test_matches_round_trip_through_the_redis_value_in_stable_order():
    listings = [Listing("b", "scam", "s", "2", LAZARUS), Listing("a", "sanctions", "s", "1", LAZARUS, "Lazarus Group")]
    value = encode_matches(listings)
    decoded = decode_matches(value)
    assert [m["list"] for m in decoded] == ["a", "b"]
    assert [Listing.from_match(m) for m in decoded] == sorted(listings, key=lambda item: item.list)
    assert "Lazarus Group" in summarize("ETH", "ethereum", decoded)


def test_address_list_accepts_text_and_json_and_reports_every_rejected_line(tmp_path):
    text = tmp_path / "sanctioned_addresses_ETH.txt"
    text.write_text(f"{LAZARUS}\n\n# comment\n0x123\n{LAZARUS.lower()}\n")
    result = parse_address_list(text, list_name="ofac", category="sanctions")
    assert [key for key, _ in result.listings] == ["evm:" + LAZARUS.lower()] * 2
    assert [(r.line, r.reason) for r in result.rejected] == [(4, "bad_length")]
    as_json = tmp_path / "sanctioned_addresses_TRX.json"
    as_json.write_text(json.dumps(["TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"]))
    ((key, listing),) = parse_address_list(as_json, list_name="ofac", category="sanctions").listings
    assert key == "trx:TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"
    assert listing.listed_asset == "TRX" and listing.entry_id == "sanctioned_addresses_TRX.json:1"


def test_asset_comes_from_common_file_name_patterns(tmp_path):
    assert asset_from_filename(tmp_path / "sanctioned_addresses_XBT.txt") == "XBT"
    assert asset_from_filename(tmp_path / "27307-lazarus-group.ETH.txt") == "ETH"
    assert asset_from_filename(tmp_path / "addresses.txt") is None
