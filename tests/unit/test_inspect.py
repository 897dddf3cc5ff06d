"""`aml-screener watchlist parse`: JSON lines on stdout, summary on stderr, exit codes, streaming, compression."""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
from pathlib import Path

import pytest

from aml_screener.cli import main
from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist import inspect
from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.sources import registry
from aml_screener.watchlist.sources.base import SourceEntry
from tests.shared_data import watchlist_data_dir

DATA = Path(__file__).resolve().parents[1] / "data" / "sources"
OPENSANCTIONS = DATA / "opensanctions_entities.ftm.json"
BLOCKLIST = DATA / "custom_blocklist.csv"
ALLOWLIST = DATA / "custom_allowlist.csv"
REQUIRED_FIELDS = {
    "address",
    "key",
    "chain",
    "asset",
    "category",
    "source",
    "entry_id",
    "name",
    "programs",
    "published_at",
}


def run(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["watchlist", "parse", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_opensanctions_entries_are_json_lines_with_provenance(capsys):
    code, entries, err = run(capsys, "--format", "opensanctions", str(OPENSANCTIONS))
    assert code == 0
    assert len(entries) == 7
    assert all(set(entry) >= REQUIRED_FIELDS for entry in entries)
    kim = entries[0]
    assert kim["address"] == "0x97b1043abd9e6fc31681635166d430a458d14f9c"
    assert kim["key"] == "evm:0x97b1043abd9e6fc31681635166d430a458d14f9c" and kim["chain"] == "evm"
    assert kim["asset"] == "ETH" and kim["category"] == "sanctions" and kim["name"] == "Kim Sang Man"
    assert kim["programs"] == ["sanction", "us_ofac_sdn"] and kim["published_at"] == 1727416963000
    assert "rehomed_from" not in kim
    rehomed = [entry for entry in entries if "rehomed_from" in entry]
    assert [(e["rehomed_from"], e["chain"]) for e in rehomed] == [("XBT", "evm")]
    assert "entries: 7" in err and "rejected: 4" in err
    assert "ETH 2" in err and "kept under another chain than listed (rehomed_from): 1" in err
    assert "line 9: " in err and "malformed_json" in err
    assert "'1D6gG9iKEhPitTcWRJiniuj1jYM2hNeAfK' [XBT]: bad_checksum" in err
    assert "published 2024-09-27T06:02:43Z" in err


def test_custom_blocklist_lists_every_rejected_row_with_line_and_reason(capsys):
    code, entries, err = run(capsys, "--format", "custom", str(BLOCKLIST))
    assert code == 0 and len(entries) == 6
    assert {e["list"] for e in entries} == {"exchange-blocklist"}
    for line, reason in [
        (11, "missing_category"),
        (12, "unknown_chain"),
        (16, "extra_fields"),
        (21, "missing_address"),
    ]:
        assert f"line {line}: " in err and reason in err
    assert "rejected: 10" in err


def test_custom_allow_and_list_name(capsys):
    code, entries, err = run(capsys, "--format", "custom-allow", "--list", "ops-allow", str(ALLOWLIST))
    assert code == 0 and len(entries) == 4
    assert {(e["category"], e["list"]) for e in entries} == {("allow", "ops-allow")}
    assert "list ops-allow" in err


def test_a_blocklist_given_as_allowlist_is_a_usage_error(capsys):
    code, entries, err = run(capsys, "--format", "custom-allow", str(BLOCKLIST))
    assert code == 2 and entries == []
    assert "this looks like a blocklist" in err


def test_no_entries_exits_1(capsys, tmp_path):
    empty = tmp_path / "blocklist.csv"
    empty.write_text("address,chain,category,reason,reference\n# nothing yet\n")
    code, entries, err = run(capsys, "--format", "custom", str(empty))
    assert code == 1 and entries == [] and "entries: 0" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "address-list", str(BLOCKLIST)], "needs --category"),
        (["--format", "custom", "--asset", "ETH", str(BLOCKLIST)], "--asset applies to address-list only"),
        (["--format", "custom", "--category", "theft", str(BLOCKLIST)], "--category applies to"),
        (["--format", "opensanctions", "--category", "allow", str(OPENSANCTIONS)], "reserved for the allowlist"),
        (["--format", "custom", "--comments", str(BLOCKLIST), str(BLOCKLIST)], "--comments applies to ofac-csv only"),
        (["--format", "custom", "does-not-exist.csv"], "no such file"),
        (["--format", "custom", str(DATA / "custom_blocklist_no_header.csv")], "lacks the required column"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, entries, err = run(capsys, *argv)
    assert code == 2 and entries == []
    assert message in err


def test_unknown_format_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["watchlist", "parse", "--format", "xlsx", str(BLOCKLIST)])
    assert exc.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_files_are_read_directly(capsys, tmp_path, suffix, compress):
    _, plain, _ = run(capsys, "--format", "opensanctions", str(OPENSANCTIONS))
    packed = tmp_path / (OPENSANCTIONS.name + suffix)
    packed.write_bytes(compress(OPENSANCTIONS.read_bytes()))
    code, entries, _ = run(capsys, "--format", "opensanctions", str(packed))
    assert code == 0
    assert [{**e, "file": None} for e in entries] == [{**e, "file": None} for e in plain]


def test_opensanctions_category_option_sets_the_default_category(capsys, tmp_path):
    wallet = {"id": "w1", "schema": "CryptoWallet", "properties": {"publicKey": ["1D6gG9iKEhPitTcWRJiniuj1jYM2hNeAfJ"]}}
    path = tmp_path / "entities.ftm.json"
    path.write_text(json.dumps(wallet) + "\n")
    code, (entry,), _ = run(capsys, "--format", "opensanctions", "--category", "Theft", str(path))
    assert code == 0 and entry["category"] == "theft"


def test_entries_are_printed_as_they_are_parsed(capsys, monkeypatch):
    """A parser failing half-way has already streamed what it produced (nothing is buffered to the end)."""
    listing = Listing("l", "theft", "s", "1", "1D6gG9iKEhPitTcWRJiniuj1jYM2hNeAfJ")
    entry = SourceEntry("btc:1D6gG9iKEhPitTcWRJiniuj1jYM2hNeAfJ", "btc", listing)

    class HalfWay:
        published_at = None

        def parse(self, stream):
            yield entry
            raise SourceFormatError("broken after the first entry")

    monkeypatch.setattr(registry, "CustomBlocklistSource", lambda **options: HalfWay())
    code, entries, err = run(capsys, "--format", "custom", str(BLOCKLIST))
    assert code == 2 and "broken after the first entry" in err
    assert [e["key"] for e in entries] == [entry.key]


def test_a_parser_bug_is_not_reported_as_a_file_in_the_wrong_format(capsys, monkeypatch):
    """A ValueError from a parser is a bug, not bad input: it surfaces with its traceback (exit 1), it is not
    reported as "not a valid ... file" with exit 2."""

    class Buggy:
        published_at = None

        def parse(self, stream):
            yield from ()
            raise ValueError("invalid literal for int() with base 10: 'x'")

    monkeypatch.setattr(registry, "CustomBlocklistSource", lambda **options: Buggy())
    with pytest.raises(ValueError, match="invalid literal"):
        main(["watchlist", "parse", "--format", "custom", str(BLOCKLIST)])
    assert "not a valid" not in capsys.readouterr().err


def test_add_parse_command_registers_run_parse():
    parser = argparse.ArgumentParser()
    inspect.add_parse_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["parse", "--format", "custom", "a.csv", "b.csv"])
    assert args.func is inspect.run_parse and args.files == [Path("a.csv"), Path("b.csv")]
    assert args.list_name is None and args.comments is None


# --- shared real data ------------------------------------------------------------------------------------------

OFAC_LISTS = watchlist_data_dir() / "ofac_0xB10C_lists_2024-09-27"
OFAC_XML = watchlist_data_dir() / "ofac_sdn_advanced_xml_2024-09-26" / "sdn_advanced.xml.bz2"
OFAC_CSV = watchlist_data_dir() / "ofac_sdn_csv_2024-05-03" / "sdn.csv"
needs_lists = pytest.mark.skipif(not OFAC_LISTS.is_dir(), reason=f"shared watchlist data not found: {OFAC_LISTS}")


@needs_lists
def test_real_ofac_eth_list_as_address_list(capsys):
    path = OFAC_LISTS / "sanctioned_addresses_ETH.txt"
    code, entries, err = run(capsys, "--format", "address-list", "--category", "sanctions", str(path))
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert code == 0 and len(entries) == len(lines) == 152
    assert {e["chain"] for e in entries} == {"evm"} and {e["asset"] for e in entries} == {"ETH"}
    assert [e["address"] for e in entries] == lines
    assert entries[0]["entry_id"] == "sanctioned_addresses_ETH.txt:1"
    assert "rejected: 0" in err


@needs_lists
def test_a_compressed_address_list_keeps_the_asset_of_its_inner_name(capsys, tmp_path):
    source = OFAC_LISTS / "sanctioned_addresses_ETH.txt"
    packed = tmp_path / "sanctioned_addresses_ETH.txt.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    code, entries, _ = run(capsys, "--format", "address-list", "--category", "sanctions", str(packed))
    assert code == 0 and len(entries) == 152 and {e["asset"] for e in entries} == {"ETH"}


@needs_lists
def test_real_ofac_xbt_list_reports_the_tron_address_filed_under_xbt(capsys):
    path = OFAC_LISTS / "sanctioned_addresses_XBT.txt"
    code, entries, _ = run(capsys, "--format", "address-list", "--category", "sanctions", str(path))
    assert code == 0
    (tron,) = [e for e in entries if "rehomed_from" in e]
    assert tron["address"] == "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq" and tron["chain"] == "trx"


@pytest.mark.skipif(not OFAC_XML.is_file(), reason=f"shared watchlist data not found: {OFAC_XML}")
def test_real_ofac_advanced_xml_bz2(capsys):
    code, entries, err = run(capsys, "--format", "ofac-xml", str(OFAC_XML))
    assert code == 0 and len(entries) > 600
    assert {e["list"] for e in entries} == {"ofac-sdn"} and {e["category"] for e in entries} == {"sanctions"}
    assert "entries: " in err


@pytest.mark.skipif(not OFAC_CSV.is_file(), reason=f"shared watchlist data not found: {OFAC_CSV}")
def test_real_ofac_sdn_csv(capsys):
    code, entries, err = run(capsys, "--format", "ofac-csv", str(OFAC_CSV))
    assert code == 0 and len(entries) > 200
    assert "rejected: " in err


def test_comments_file_is_passed_to_the_ofac_csv_parser(capsys, monkeypatch, tmp_path):
    comments = tmp_path / "sdn_comments.csv"
    comments.write_bytes(b'36216,"... 1B11Ezqg3AXjKLPYiWWMCbfcd4hqZdZqE8"\r\n')
    seen = {}

    class FakeCsv:
        published_at = None

        def __init__(self, list_name, comments=None):
            self.comments = comments

        def parse(self, stream):
            with self.comments() as opened:
                seen["comments"] = opened.read()
            return iter(())

    monkeypatch.setattr(registry, "OfacCsvSource", FakeCsv)
    code, _, _ = run(capsys, "--format", "ofac-csv", "--comments", str(comments), str(BLOCKLIST))
    assert code == 1 and seen["comments"] == comments.read_bytes()
    code, _, err = run(capsys, "--format", "ofac-csv", "--comments", str(comments), str(BLOCKLIST), str(BLOCKLIST))
    assert code == 2 and "exactly one FILE" in err


@needs_lists
def test_a_plain_evm_list_needs_no_asset(capsys, tmp_path):
    """An exchange's file of 0x addresses, named without an asset: one key per address on every EVM chain."""
    lines = (OFAC_LISTS / "sanctioned_addresses_ETH.txt").read_text().split()
    path = tmp_path / "stolen-funds.txt"
    path.write_text("\n".join(lines) + "\n")
    code, entries, err = run(capsys, "--format", "address-list", "--category", "theft", str(path))
    assert code == 0, err
    assert len(entries) == len(lines) == 152 and "rejected: 0" in err
    assert {e["chain"] for e in entries} == {"evm"} and {e["asset"] for e in entries} == {None}
    assert [e["key"] for e in entries] == ["evm:" + line.lower() for line in lines]


def test_an_asset_less_list_keeps_what_names_its_chain_and_rejects_what_several_chains_share(capsys, tmp_path):
    path = tmp_path / "mixed.txt"
    tron = "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"
    segwit = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    legacy = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"  # Bitcoin, Bitcoin Cash and Bitcoin SV alike
    bad_eip55 = "0x098B716B8Aaf21512996dC57EB0615e2383E2F96"
    path.write_text("\n".join([tron, segwit, legacy, bad_eip55]) + "\n")
    code, entries, err = run(capsys, "--format", "address-list", "--category", "theft", str(path))
    assert code == 0
    assert [(e["address"], e["chain"]) for e in entries] == [(tron, "trx"), (segwit, "btc")]
    assert "ambiguous_network" in err and "bad_eip55_checksum" in err
