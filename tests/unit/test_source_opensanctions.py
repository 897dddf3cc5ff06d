"""OpenSanctions / FtM CryptoWallet source: provenance, holders before and after, re-homing, every rejection."""

from __future__ import annotations

import bz2
import gzip
import io
import json
from pathlib import Path

import pytest

from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.fetch import open_location
from aml_screener.watchlist.sources.base import Rejection, SourceEntry, collect
from aml_screener.watchlist.sources.opensanctions import (
    OpenSanctionsSource,
    chain_of_currency,
    read_lines,
)

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "sources" / "opensanctions_entities.ftm.json"
KIM_ETH = "0x97b1043abd9e6fc31681635166d430a458d14f9c"
KIM_XBT = "1D6gG9iKEhPitTcWRJiniuj1jYM2hNeAfJ"
CRYPTEX_TRX = "TTUDyVhhpCC1xJoPmWzdjLAzeoPwbSABdr"
CRYPTEX_EVM = "0x0931cA4D13BB4ba75D9B7132AB690265D749a5E7"
CRYPTEX_LTC = "LNf2JDiuunBz7GMDKFYHN4rq5meXWxiwfb"
LOCKY = "1P7A3tqZTBXt8zfTfJPkiNZCRFJkUV5N9R"
TORNADO = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"


def parse_bytes(data: bytes, source: OpenSanctionsSource | None = None):
    return collect((source or OpenSanctionsSource()).parse(io.BytesIO(data)))


def parse_fixture(source: OpenSanctionsSource | None = None):
    with open_location(str(FIXTURE)) as stream:
        return collect((source or OpenSanctionsSource()).parse(stream))


def by_address(entries: list[SourceEntry]) -> dict[str, SourceEntry]:
    return {entry.listing.listed_address: entry for entry in entries}


def wallet_line(wallet_id: str, properties: dict, **extra) -> str:
    return json.dumps({"id": wallet_id, "schema": "CryptoWallet", "properties": properties, **extra})


def test_every_public_key_of_every_wallet_becomes_one_entry_in_file_order():
    entries, rejected, report = parse_fixture()
    assert [e.listing.listed_address for e in entries] == [
        KIM_ETH,
        KIM_XBT,
        CRYPTEX_TRX,
        CRYPTEX_EVM,
        LOCKY,
        CRYPTEX_LTC,
        TORNADO,
    ]
    assert [e.key for e in entries][:3] == ["evm:" + KIM_ETH, "btc:" + KIM_XBT, "trx:" + CRYPTEX_TRX]
    assert report.entries == 7 and len(rejected) == 4
    assert all(e.listing.list == "opensanctions" and e.listing.source == "OpenSanctions" for e in entries)


def test_provenance_entry_id_is_the_wallet_and_name_topics_datasets_come_from_holder_and_wallet():
    entries, _, _ = parse_fixture()
    kim = by_address(entries)[KIM_ETH].listing
    assert kim.entry_id.startswith("ofac-") and kim.entry_id != "ofac-43377"
    assert kim.entry_name == "Kim Sang Man"
    assert kim.programs == ("sanction", "us_ofac_sdn")
    assert kim.category == "sanctions"
    # Listed under ETH, USDC and USDT: one entry, under the first currency the address is valid for.
    assert kim.listed_asset == "ETH"
    assert [e.listing.listed_address for e in entries].count(KIM_ETH) == 1


def test_a_holder_that_comes_after_its_wallet_is_resolved():
    entries, _, _ = parse_fixture()
    trx = by_address(entries)[CRYPTEX_TRX]
    assert trx.chain == "trx" and trx.listing.listed_asset == "TRX"
    assert trx.listing.entry_name == "Cryptex"
    # The holder's topics join the wallet's.
    assert trx.listing.programs == ("sanction", "crime.cyber", "us_ofac_sdn")


def test_an_address_valid_only_for_another_chain_is_rehomed_and_says_so():
    entries, _, report = parse_fixture()
    evm = by_address(entries)[CRYPTEX_EVM]
    assert evm.key == "evm:" + CRYPTEX_EVM.lower() and evm.rehomed_from == "XBT"
    assert evm.listing.listed_asset == "XBT"
    assert report.rehomed == 1


def test_a_wallet_without_currency_is_placed_by_its_address():
    entries, _, _ = parse_fixture()
    ltc = by_address(entries)[CRYPTEX_LTC]
    assert ltc.key == "ltc:" + CRYPTEX_LTC and ltc.rehomed_from is None and ltc.listing.listed_asset is None
    _, (rejection,), _ = parse_bytes(wallet_line("w1", {"publicKey": ["not-an-address"]}).encode())
    assert rejection.reason == "unrecognized_address" and rejection.location == "entity w1"


def test_a_network_name_as_currency_and_a_dataset_category():
    entries, _, _ = parse_fixture()
    locky = by_address(entries)[LOCKY].listing
    assert locky.listed_asset == "bitcoin" and locky.category == "ransomware"
    assert locky.entry_name == "Locky"  # no holder: the wallet's own alias (the ransomware family)
    assert locky.programs == ("crime.theft", "ransomwhere")


def test_a_holder_missing_from_the_file_falls_back_to_the_wallet_name():
    entries, _, _ = parse_fixture()
    assert by_address(entries)[TORNADO].listing.entry_name == "Tornado Cash"


def test_every_unusable_wallet_and_line_is_rejected_with_location_and_reason():
    _, rejected, report = parse_fixture()
    reasons = {r.reason: r for r in rejected}
    assert set(reasons) == {"malformed_json", "bad_checksum", "unsupported_asset", "no_public_key"}
    assert reasons["malformed_json"].location == "line 9"
    bad = reasons["bad_checksum"]
    assert bad.address == "1D6gG9iKEhPitTcWRJiniuj1jYM2hNeAfK" and bad.asset == "XBT"
    assert bad.location.startswith("entity ofac-")
    assert reasons["unsupported_asset"].asset == "ADA"
    account = reasons["no_public_key"]
    assert account.address == "73419582" and "Binance" in account.detail
    assert report.rejected["malformed_json"] == 1


def test_published_at_is_the_newest_last_seen_and_is_on_every_listing():
    source = OpenSanctionsSource()
    entries, _, _ = parse_fixture(source)
    assert source.published_at == 1727416963000  # 2024-09-27T06:02:43Z
    assert {e.listing.published_at for e in entries} == {1727416963000}
    given = OpenSanctionsSource(published_at=123)
    assert {e.listing.published_at for e in parse_fixture(given)[0]} == {123}


class NonSeekable(io.RawIOBase):
    """A download-like stream that cannot be rewound."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def test_a_stream_that_cannot_be_rewound_is_spooled_with_the_same_result():
    expected = parse_fixture()
    spooled = collect(OpenSanctionsSource().parse(NonSeekable(FIXTURE.read_bytes())))  # type: ignore[arg-type]
    assert spooled[0] == expected[0] and spooled[1] == expected[1]


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_exports_are_read_directly(tmp_path, suffix, compress):
    path = tmp_path / ("entities.ftm.json" + suffix)
    path.write_bytes(compress(FIXTURE.read_bytes()))
    with open_location(str(path)) as stream:
        entries, rejected, _ = collect(OpenSanctionsSource().parse(stream))
    assert (entries, rejected) == parse_fixture()[:2]


def test_lines_are_streamed_across_chunk_boundaries():
    data = b'{"a": 1}\n\n' + b"x" * 50 + b"\nlast"
    assert list(read_lines(io.BytesIO(data), chunk=7)) == [b'{"a": 1}', b"", b"x" * 50, b"last"]
    assert list(read_lines(io.BytesIO(b""))) == []


def test_a_json_value_that_is_not_an_entity_is_rejected():
    data = b'[1, 2]\n{"schema": "CryptoWallet", "properties": {}}\n'
    _, rejected, _ = parse_bytes(data)
    assert [(r.location, r.reason) for r in rejected] == [
        ("line 1", "malformed_entity"),
        ("line 2", "malformed_entity"),
    ]


def test_a_nested_holder_object_is_used_directly():
    line = wallet_line(
        "w2",
        {"publicKey": [KIM_XBT], "currency": ["XBT"], "holder": [{"id": "p1", "caption": "Kim", "properties": {}}]},
    )
    (entry,), _, _ = parse_bytes(line.encode())
    assert entry.listing.entry_name == "Kim"


def test_whitespace_around_a_key_is_rejected_not_repaired():
    _, (rejection,), _ = parse_bytes(wallet_line("w3", {"publicKey": [KIM_XBT + " "], "currency": ["XBT"]}).encode())
    assert rejection.reason == "whitespace"


def test_category_is_the_most_severe_mapped_topic_else_the_default():
    source = OpenSanctionsSource()
    assert source.category(["crime.theft", "sanction"], []) == "sanctions"
    assert source.category(["crime.fraud"], []) == "scam"
    assert source.category(["crime.cyber"], ["ransomwhere"]) == "ransomware"  # dataset wins a tie
    assert source.category(["sanction.counter"], []) == "counter-sanctions"
    assert source.category(["role.pep"], []) == "sanctions"  # nothing mapped: default
    custom = OpenSanctionsSource(category_by_topic={"crime.theft": "scam"}, default_category="internal")
    assert custom.category(["crime.theft"], []) == "scam"
    assert custom.category(["sanction"], []) == "internal"


def test_default_category_is_used_for_wallets_without_mapped_topics():
    line = wallet_line("w4", {"publicKey": [KIM_XBT], "currency": ["XBT"]})
    (entry,), _, _ = parse_bytes(line.encode(), OpenSanctionsSource(default_category="theft"))
    assert entry.listing.category == "theft"


@pytest.mark.parametrize(
    ("currency", "expected"),
    [
        ("XBT", ("XBT", None)),
        ("eth", ("ETH", None)),
        ("bitcoin", ("bitcoin", "bitcoin")),
        ("TRC20", ("TRC20", "tron")),
        ("Tether", ("USDT", None)),
        ("ADA", ("ADA", None)),
    ],
)
def test_currency_is_a_ticker_or_a_network_name(currency, expected):
    assert chain_of_currency(currency) == expected


def test_source_fits_what_sync_constructs():
    source = OpenSanctionsSource(list_name="os-default")
    assert source.name == "os-default" and source.published_at is None
    items = list(source.parse(io.BytesIO(b"")))
    assert items == []
    assert all(isinstance(i, SourceEntry | Rejection) for i in parse_fixture()[0])


def test_a_cut_off_last_line_fails_the_whole_parse_before_any_entry():
    data = FIXTURE.read_bytes()
    cut = data[: data.rindex(b'"target"')]  # a download that stopped inside the last entity
    items = OpenSanctionsSource().parse(io.BytesIO(cut))
    with pytest.raises(SourceFormatError, match="ends in the middle of an entity"):
        while not isinstance(next(items), SourceEntry):
            pass


def test_a_complete_last_line_without_newline_and_crlf_endings_are_fine():
    data = FIXTURE.read_bytes().rstrip(b"\n").replace(b"\n", b"\r\n")
    entries, rejected, _ = parse_bytes(data)
    expected_entries, expected_rejected, _ = parse_fixture()
    assert entries == expected_entries
    assert [(r.location, r.reason) for r in rejected] == [(r.location, r.reason) for r in expected_rejected]


def test_the_older_misspelt_managing_exchange_property_is_read():
    line = wallet_line("w5", {"publicKey": ["12345678"], "mangingExchange": ["Garantex"], "currency": ["USDT"]})
    _, (rejection,), _ = parse_bytes(line.encode())
    assert "Garantex" in rejection.detail
