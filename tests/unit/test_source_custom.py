"""The exchange's own blocklist and allowlist CSV: provenance mapping, CSV traps, and every row error."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.fetch import open_location
from aml_screener.watchlist.sources.base import collect
from aml_screener.watchlist.sources.custom import CustomAllowlistSource, CustomBlocklistSource

DATA = Path(__file__).resolve().parents[1] / "data" / "sources"
BLOCKLIST = DATA / "custom_blocklist.csv"
LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"
HOT_WALLET = "0x28C6c06298d514Db089934071355E5743bf21d60"
BLOCK_HEADER = "address,chain,category,reason,reference\n"
ALLOW_HEADER = "address,chain,reason,reference\n"


def parse_file(path: Path, source=None):
    with open_location(str(path)) as stream:
        return collect((source or CustomBlocklistSource()).parse(stream))


def parse_text(text: str | bytes, source=None):
    data = text.encode() if isinstance(text, str) else text
    return collect((source or CustomBlocklistSource()).parse(io.BytesIO(data)))


# --- blocklist ---------------------------------------------------------------------------------------------


def test_blocklist_rows_become_entries_with_their_provenance():
    entries, _, _ = parse_file(BLOCKLIST)
    first = entries[0]
    assert first.key == "evm:" + LAZARUS.lower() and first.chain == "evm"
    listing = first.listing
    assert listing.list == "exchange-blocklist" and listing.source == "exchange-blocklist"
    assert listing.category == "theft"
    assert listing.entry_id == "CASE-2022-0042"
    assert listing.entry_name == "Lazarus Group — Ronin bridge exploit, March 2022 (FBI attribution)"
    assert listing.listed_asset == "ETH" and listing.listed_address == LAZARUS
    assert listing.published_at == 1649894400000  # added_at 2022-04-14, UTC


def test_blocklist_chain_aliases_category_case_and_free_labels():
    entries, _, _ = parse_file(BLOCKLIST)
    upbit, cryptex = entries[1].listing, entries[2].listing
    assert upbit.category == "theft"  # "Theft": lower-cased, so it keeps its severity
    assert upbit.listed_asset == "ethereum"  # chain "eth", canonical name
    assert upbit.published_at == 1574849160000  # 2019-11-27T10:06:00Z
    assert entries[2].key == "trx:TTUDyVhhpCC1xJoPmWzdjLAzeoPwbSABdr" and cryptex.listed_asset == "USDT"
    assert entries[4].listing.category == "suspicious-activity"  # an unknown label is not an error


def test_blocklist_empty_chain_is_found_from_the_address_and_quoted_fields_are_kept_whole():
    entries, _, _ = parse_file(BLOCKLIST)
    locky = entries[3]
    assert locky.key == "btc:1P7A3tqZTBXt8zfTfJPkiNZCRFJkUV5N9R" and locky.rehomed_from is None
    assert locky.listing.listed_asset is None
    assert locky.listing.entry_name == 'Locky ransom payments, reported by the victim\'s "IT" team'
    assert locky.listing.published_at is None
    multiline = entries[4].listing
    assert multiline.entry_name == "deposits split into\nmany small withdrawals"


def test_blocklist_address_valid_only_on_another_chain_is_rehomed():
    entries, _, _ = parse_file(BLOCKLIST)
    rehomed = entries[5]
    assert rehomed.key == "trx:TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq" and rehomed.rehomed_from == "XBT"


BLOCKLIST_REJECTIONS = [
    ("line 11", "missing_category"),
    ("line 12", "unknown_chain"),
    ("line 13", "bad_eip55_checksum"),
    ("line 15", "missing_column"),
    ("line 16", "extra_fields"),
    ("line 17", "reserved_category"),
    ("line 18", "bad_added_at"),
    ("line 19", "unrecognized_address"),
    ("line 20", "whitespace"),
    ("line 21", "missing_address"),
]


def test_every_bad_blocklist_row_is_rejected_with_its_line_and_reason():
    entries, rejected, report = parse_file(BLOCKLIST)
    assert len(entries) == 6
    assert [(r.location, r.reason) for r in rejected] == BLOCKLIST_REJECTIONS
    assert all(r.source == "exchange-blocklist" for r in rejected)
    assert "etherium" in rejected[1].detail and "ethereum" in rejected[1].detail
    assert "reason, reference" in rejected[3].detail
    assert "quote" in rejected[4].detail
    assert sum(report.rejected.values()) == len(BLOCKLIST_REJECTIONS)


def test_bom_and_crlf_give_the_same_rows_on_the_same_lines():
    entries, rejected, _ = parse_file(DATA / "custom_blocklist_bom_crlf.csv")
    plain_entries, _, _ = parse_file(BLOCKLIST)
    assert [e.key for e in entries] == [e.key for e in plain_entries]
    assert [(r.location, r.reason) for r in rejected] == BLOCKLIST_REJECTIONS
    assert entries[0].listing.listed_address == LAZARUS  # the BOM is not part of the first field
    assert entries[4].listing.entry_name == "deposits split into\r\nmany small withdrawals"


def test_published_at_is_the_newest_added_at():
    source = CustomBlocklistSource()
    parse_file(BLOCKLIST, source)
    assert source.published_at == 1727308800000  # 2024-09-26
    parse_text(BLOCK_HEADER + f"{LAZARUS},ethereum,theft,x,y\n", source)
    assert source.published_at is None


def test_a_file_without_the_required_header_is_refused_naming_the_missing_columns():
    with pytest.raises(
        SourceFormatError, match=r"lacks the required column\(s\) address, chain, category, reason, reference"
    ):
        parse_file(DATA / "custom_blocklist_no_header.csv")
    with pytest.raises(SourceFormatError, match=r"lacks the required column\(s\) category \("):
        parse_text("address,chain,reason,reference\n")


def test_empty_file_repeated_column_and_non_utf8_are_refused():
    with pytest.raises(SourceFormatError, match="empty"):
        parse_text("# only a comment\n\n")
    with pytest.raises(SourceFormatError, match="repeats the column"):
        parse_text("address,chain,category,reason,reference,chain\n")
    with pytest.raises(SourceFormatError, match="not UTF-8"):
        parse_text(BLOCK_HEADER.encode() + b"0x\xff,ethereum,theft,x,y\n")


def test_header_is_case_and_space_insensitive_and_extra_columns_are_ignored():
    text = " Address , CHAIN ,Category,Reason,Reference,ticket_url\n" + f"{LAZARUS},ethereum,scam,,,https://x\n"
    (entry,), rejected, _ = parse_text(text)
    assert rejected == []
    assert entry.listing.category == "scam"
    assert entry.listing.entry_id == "exchange-blocklist:2"  # no reference: list name and line
    assert entry.listing.entry_name is None


def test_a_row_may_omit_trailing_optional_columns_but_not_required_ones():
    header = "address,chain,category,reason,reference,name,asset,added_at\n"
    (entry,), _, _ = parse_text(header + f"{LAZARUS},ethereum,theft,why,ref\n")
    assert entry.listing.entry_name == "why"
    _, (rejection,), _ = parse_text(header + f"{LAZARUS},ethereum,theft\n")
    assert rejection.reason == "missing_column" and rejection.location == "line 2"


def test_only_name_gives_the_entry_name():
    header = "address,chain,category,reason,reference,name\n"
    (entry,), _, _ = parse_text(header + f"{LAZARUS},ethereum,theft,,CASE-1,Lazarus Group\n")
    assert entry.listing.entry_name == "Lazarus Group"


# --- allowlist ---------------------------------------------------------------------------------------------


def test_allowlist_rows_are_listings_of_the_reserved_category_allow():
    entries, _, _ = parse_file(DATA / "custom_allowlist.csv", CustomAllowlistSource())
    assert [e.key for e in entries] == [
        "evm:0x28c6c06298d514db089934071355e5743bf21d60",
        "evm:0x21a31ee1afc51d94c2efccaa2092ad1028285549",
        "btc:34xp4vRoCGJym3xR7yCVPFHoCNxv4Twseo",
        "trx:TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G",  # chain left empty: found from the address
    ]
    assert {e.listing.category for e in entries} == {"allow"}
    assert {e.listing.list for e in entries} == {"exchange-allowlist"}
    hot = entries[0].listing
    assert hot.entry_id == "OPS-2021-118" and hot.entry_name == "Hot wallet 14 — exchange hot wallet 14"
    assert hot.listed_asset == "ethereum" and hot.published_at is None
    assert entries[1].listing.listed_asset == "bsc"


def test_allowlist_is_strict_about_chain_reason_and_unknown_chains():
    _, rejected, _ = parse_file(DATA / "custom_allowlist.csv", CustomAllowlistSource())
    assert [(r.location, r.reason) for r in rejected] == [
        ("line 8", "bad_version"),  # a TRON address under bitcoin is rejected, never re-homed
        ("line 9", "missing_reason"),
        ("line 10", "unknown_chain"),
    ]


def test_a_blocklist_given_as_allowlist_is_refused_whole():
    with pytest.raises(SourceFormatError, match="category column: this looks like a blocklist"):
        parse_file(BLOCKLIST, CustomAllowlistSource())


def test_allowlist_header_and_row_errors():
    with pytest.raises(SourceFormatError, match=r"lacks the required column\(s\) chain, reference"):
        parse_text("address,network,reason\n", CustomAllowlistSource())
    text = ALLOW_HEADER + f",ethereum,hot wallet,OPS-1\nnot-an-address,,hot wallet,OPS-2\n{HOT_WALLET},eth,x,y,z\n"
    _, rejected, _ = parse_text(text, CustomAllowlistSource())
    assert [r.reason for r in rejected] == ["missing_address", "unrecognized_address", "extra_fields"]


def test_allowlist_list_name_is_configurable_and_header_only_is_empty():
    source = CustomAllowlistSource(list_name="ops-allowlist")
    entries, rejected, _ = parse_text(ALLOW_HEADER + f"{HOT_WALLET},ethereum,hot wallet,OPS-1\n", source)
    assert entries[0].listing.list == "ops-allowlist" and rejected == []
    assert parse_text(ALLOW_HEADER, source)[:2] == ([], [])
