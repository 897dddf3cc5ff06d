"""Listings, severities and the plain address-list source."""

from __future__ import annotations

import json

from aml_screener.screening.decision import Outcome, decide, summarize, unscreenable
from aml_screener.screening.records import Match
from aml_screener.screening.watchlist import Listing, Severity, decode_matches, encode_matches, highest_severity
from aml_screener.watchlist.sources.address_list import AddressListSource, asset_from_filename
from aml_screener.watchlist.sources.base import collect

LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"


def match(category: str, list_name: str = "l") -> Match:
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
    with text.open("rb") as stream:
        entries, rejected, report = collect(
            AddressListSource(list_name="ofac", category="sanctions", label=text.name).parse(stream)
        )
    assert [entry.key for entry in entries] == ["evm:" + LAZARUS.lower()] * 2
    assert [(r.location, r.reason) for r in rejected] == [("sanctioned_addresses_ETH.txt line 4", "bad_length")]
    assert report.entries == 2 and report.rejected == {"bad_length": 1}
    as_json = tmp_path / "sanctioned_addresses_XBT.json"
    as_json.write_text(json.dumps(["TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"]))
    with as_json.open("rb") as stream:
        (entry,), _, _ = collect(
            AddressListSource(list_name="ofac", category="sanctions", label=as_json.name).parse(stream)
        )
    assert entry.key == "trx:TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq", "a TRON address listed as XBT is kept under TRON"
    assert entry.rehomed_from == "XBT"
    assert entry.listing.listed_asset == "XBT" and entry.listing.entry_id == "sanctioned_addresses_XBT.json:1"


def test_asset_comes_from_common_file_name_patterns(tmp_path):
    assert asset_from_filename(tmp_path / "sanctioned_addresses_XBT.txt") == "XBT"
    assert asset_from_filename(tmp_path / "27307-lazarus-group.ETH.txt") == "ETH"
    assert asset_from_filename(tmp_path / "addresses.txt") is None


def allow(list_name: str = "exchange-allowlist") -> Match:
    return Listing(list_name, "allow", "allow.csv", "hot-wallet-1", LAZARUS, entry_name="our hot wallet").as_match()


def test_allowlist_downgrades_only_overridable_lists_and_never_sanctions():
    theft = match("theft", "hacks")
    verdict = decide([theft, allow()], overridable=frozenset({"hacks"}))
    assert verdict.outcome is Outcome.CLEAR
    assert verdict.overridden == [theft] and verdict.allowlisted == [allow()]
    not_overridable = decide([theft, allow()], overridable=frozenset())
    assert not_overridable.outcome is Outcome.FLAGGED and not_overridable.overridden == []
    sanctions = match("sanctions", "hacks")  # even on an overridable list, a sanctions match stays
    mixed = decide([sanctions, theft, allow()], overridable=frozenset({"hacks"}))
    assert mixed.outcome is Outcome.FLAGGED
    assert mixed.matches == [sanctions] and mixed.overridden == [theft]
    assert mixed.severity is Severity.CRITICAL


def test_an_allowlist_entry_alone_is_not_a_hit():
    verdict = decide([allow()])
    assert verdict.outcome is Outcome.CLEAR and verdict.allowlisted == [allow()]


def test_an_allowlist_entry_found_through_a_related_address_allows_nothing():
    # The exchange allowlisted its hot wallet; a withdrawal goes to the wallet's TRON twin, which a theft list has.
    related_allow = allow() | {"match_type": "related", "relation": "same_account"}
    theft = match("theft", "hacks")
    verdict = decide([theft, related_allow], overridable=frozenset({"hacks"}))
    assert verdict.outcome is Outcome.FLAGGED and list(verdict.matches) == [theft] and not verdict.allowlisted
    alone = decide([related_allow])
    assert alone.outcome is Outcome.CLEAR and not alone.allowlisted and not alone.matches


def test_a_related_match_is_one_severity_level_below_a_direct_one():
    related = match("sanctions") | {"match_type": "related", "relation": "same_account"}
    assert decide([related]).severity is Severity.HIGH
    assert decide([related, match("sanctions")]).severity is Severity.CRITICAL
    assert decide([match("scam") | {"match_type": "related"}]).severity is Severity.LOW
    assert decide([match("internal") | {"match_type": "related"}]).severity is Severity.LOW
