"""The format registry: one entry per configuration model, and for each format the files a source reads and the
parser (with the configured options) that reads each of them. Sync, load and parse all plan through it."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, get_args

import pytest

from aml_screener.watchlist import config as cfg
from aml_screener.watchlist.fetch import open_location
from aml_screener.watchlist.sources.address_list import AddressListSource
from aml_screener.watchlist.sources.base import SourceEntry
from aml_screener.watchlist.sources.custom import CustomAllowlistSource, CustomBlocklistSource
from aml_screener.watchlist.sources.ofac_csv import OfacCsvSource
from aml_screener.watchlist.sources.ofac_xml import OfacAdvancedXmlSource
from aml_screener.watchlist.sources.opensanctions import OpenSanctionsSource
from aml_screener.watchlist.sources.registry import FORMATS, file_name, format_of

REPO = Path(__file__).resolve().parents[2]
BUNDLED_MANIFEST = REPO / "services" / "aml_screener" / "demo" / "watchlist" / "manifest.json"
LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"
TRON = "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"


def no_opener(location: str) -> IO[bytes]:
    raise AssertionError(f"planning must not open {location}")


def test_every_configuration_model_has_exactly_one_format_and_back():
    models = set(get_args(get_args(cfg.SourceConfig)[0]))
    assert {listed.config for listed in FORMATS.values()} == models
    assert all(listed.name == name for name, listed in FORMATS.items())
    assert list(FORMATS) == [
        "ofac-xml",
        "ofac-csv",
        "address-list",
        "manifest",
        "opensanctions",
        "custom",
        "custom-allow",
    ]
    assert [name for name, listed in FORMATS.items() if not listed.inspectable] == ["manifest"]


@pytest.mark.parametrize(
    ("config", "parser", "default_list"),
    [
        (cfg.OfacXmlConfig(name="s", location="/x.xml.bz2", list="sdn"), OfacAdvancedXmlSource, "ofac-sdn"),
        (cfg.OfacCsvConfig(name="s", location="/sdn.csv", list="sdn"), OfacCsvSource, "ofac-sdn"),
        (cfg.OpenSanctionsConfig(name="s", location="/e.json", list="sdn"), OpenSanctionsSource, "opensanctions"),
        (
            cfg.CustomConfig(name="s", location="/b.csv", list="sdn", category="theft"),
            CustomBlocklistSource,
            "exchange-blocklist",
        ),
        (cfg.CustomAllowConfig(name="s", location="/a.csv", list="sdn"), CustomAllowlistSource, "exchange-allowlist"),
    ],
)
def test_a_single_file_format_reads_its_location_with_its_parser(config, parser, default_list):
    listed = format_of(config)
    plan = listed.plan(config, no_opener)
    assert plan.inputs == (config.location,) and len(plan.parts) == 1
    assert isinstance(plan.parts[0].parser, parser) and plan.parts[0].parser.name == "sdn", "the configured list"
    assert listed.default_list == default_list


def test_opensanctions_gets_the_configured_category_for_unmapped_wallets():
    config = cfg.OpenSanctionsConfig(name="s", location="/e.json", category="Scam")
    (part,) = format_of(config).plan(config, no_opener).parts
    assert isinstance(part.parser, OpenSanctionsSource) and part.parser.default_category == "scam"


def test_ofac_csv_opens_sdn_comments_only_when_the_parse_starts(tmp_path):
    sdn = tmp_path / "sdn.csv"
    empty = "-0- ,"
    remarks = f"Digital Currency Address - ETH {LAZARUS[:30]}"  # the rest is in sdn_comments.csv
    sdn.write_bytes(f'36216,"N",{empty}"DPRK3",{empty * 7}"{remarks}"\r\n'.encode())
    comments = tmp_path / "sdn_comments.csv"
    comments.write_bytes(f'36216,"{LAZARUS[30:]};"\r\n'.encode())
    opened: list[str] = []

    @contextmanager
    def opener(location: str) -> Iterator[IO[bytes]]:
        opened.append(location)
        with open_location(location) as stream:
            yield stream

    config = cfg.OfacCsvConfig(name="csv", location=str(sdn), comments_location=str(comments))
    plan = format_of(config).plan(config, opener)
    assert opened == [], "planning opens nothing: an unchanged sdn.csv never fetches its comments"
    items = [item for _part, item in plan.read(opener)]
    assert opened == [str(sdn), str(comments)]
    assert [item.listing.listed_address for item in items if isinstance(item, SourceEntry)] == [LAZARUS]


def test_an_address_list_reads_one_parser_per_file_each_with_its_own_asset(tmp_path):
    (tmp_path / "sanctioned_addresses_ETH.txt").write_text(f"{LAZARUS}\n")
    (tmp_path / "sanctioned_addresses_XBT.txt.gz").write_bytes(gzip.compress(f"{TRON}\n".encode()))
    (tmp_path / "other.csv").write_text("ignored\n")
    config = cfg.AddressListConfig(
        name="l", location=str(tmp_path / "sanctioned_addresses_*"), category="sanctions", entry_name="Party",
        programs=("DPRK3",), published_at="2024-09-27",
    )  # fmt: skip
    plan = format_of(config).plan(config, no_opener)
    assert [Path(part.location).name for part in plan.parts] == [
        "sanctioned_addresses_ETH.txt",
        "sanctioned_addresses_XBT.txt.gz",
    ], "a glob's matches, sorted"
    assert [part.parser.label for part in plan.parts if isinstance(part.parser, AddressListSource)] == [
        "sanctioned_addresses_ETH.txt",
        "sanctioned_addresses_XBT.txt",
    ], "a compressed file is named (and its asset found) by its inner name"
    entries = [item for _part, item in plan.read(open_location) if isinstance(item, SourceEntry)]
    assert [(e.key, e.listing.listed_asset, e.rehomed_from) for e in entries] == [
        ("evm:" + LAZARUS.lower(), "ETH", None),
        ("trx:" + TRON, "XBT", "XBT"),
    ]
    assert {(e.listing.entry_name, e.listing.programs) for e in entries} == {("Party", ("DPRK3",))}
    assert entries[1].listing.entry_id == "sanctioned_addresses_XBT.txt:1"
    assert plan.published_at() == 1727395200000


def test_an_address_list_takes_explicit_files_a_file_named_like_a_glob_and_refuses_an_empty_glob(tmp_path):
    odd = tmp_path / "list[1].txt"
    odd.write_text(f"{LAZARUS}\n")
    as_file = cfg.AddressListConfig(name="l", location=str(odd))
    assert format_of(as_file).plan(as_file, no_opener).inputs == (str(odd),), "an existing file is not a pattern"
    explicit = cfg.AddressListConfig(name="l", location="ignored", files=(str(odd), "/b.txt"))
    assert format_of(explicit).plan(explicit, no_opener).inputs == (str(odd), "/b.txt")
    url = cfg.AddressListConfig(name="l", location="https://example.org/lists/hacked_ETH.txt?v=2")
    (part,) = format_of(url).plan(url, no_opener).parts
    assert isinstance(part.parser, AddressListSource) and part.parser.label == "hacked_ETH.txt"
    nothing = cfg.AddressListConfig(name="l", location=str(tmp_path / "*.json"))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        format_of(nothing).plan(nothing, no_opener)


def test_a_manifest_gives_each_file_its_party_and_is_hashed_with_them():
    config = cfg.ManifestConfig(name="ofac-sdn", location=str(BUNDLED_MANIFEST))
    plan = format_of(config).plan(config, no_opener)
    manifest = json.loads(BUNDLED_MANIFEST.read_text())
    assert plan.inputs[0] == str(BUNDLED_MANIFEST), "a changed manifest (a new entry name) changes the source"
    assert [Path(part.location).name for part in plan.parts] == [item["file"] for item in manifest["files"]]
    first = next(item for _part, item in plan.read(open_location) if isinstance(item, SourceEntry))
    assert (first.listing.list, first.listing.entry_id, first.listing.entry_name) == (
        "ofac-sdn",
        "27307",
        "Lazarus Group",
    )
    assert first.listing.source == manifest["source"] and first.listing.programs == ("DPRK3",)
    assert plan.published_at() == 1727308800000  # 2024-09-26, the manifest's


@pytest.mark.parametrize(
    ("location", "name"),
    [
        ("/data/sanctioned_addresses_ETH.txt.gz", "sanctioned_addresses_ETH.txt"),
        ("sdn_advanced.xml.bz2", "sdn_advanced.xml"),
        ("https://example.org/api/exports/SDN_ADVANCED.XML?format=xml", "SDN_ADVANCED.XML"),
        ("https://example.org/lists/hacked_ETH.txt.gz", "hacked_ETH.txt"),
    ],
)
def test_file_name_is_the_published_name_without_a_compression_suffix(location, name):
    assert file_name(location) == name
