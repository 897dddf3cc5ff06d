"""The sync configuration model: each format's options, the defaults, and errors that name the source, the field
and the expected form. The configurations the project ships (docs, docker/) must load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aml_screener.screening.related import DEFAULT_SOLANA_MINTS, ListingRelations
from aml_screener.watchlist import config as cfg
from aml_screener.watchlist.errors import SourceFormatError, SyncConfigError

REPO = Path(__file__).resolve().parents[2]
USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SyncConfigError) as raised:
        cfg.read_sync_config(toml(tmp_path, text))
    return str(raised.value)


def test_every_format_takes_its_own_options_and_gets_the_documented_defaults(tmp_path):
    configured = cfg.read_sync_config(
        toml(
            tmp_path,
            """
[[source]]
name = "ofac-sdn"
format = "ofac-xml"
location = "https://example.org/SDN_ADVANCED.XML"
checksum_location = "https://example.org/SDN_ADVANCED_CHECKSUM.TXT"
max_shrink = 0.25

[[source]]
name = "ofac-csv"
format = "ofac-csv"
location = "/data/sdn.csv"
comments_location = "/data/sdn_comments.csv"
list = "ofac-sdn"

[[source]]
name = "stolen"
format = "address-list"
location = "/data/stolen_*.txt"
category = "Theft"
overridable = true
asset = "ETH"
entry_id = "case-17"
entry_name = "Upbit hack 2019"
programs = ["HACK"]
published_at = 2024-09-27
sha256 = "673A00000000000000000000000000000000000000000000000000000000CAFE"

[[source]]
name = "sample"
format = "manifest"
location = "/data/manifest.json"

[[source]]
name = "os"
format = "opensanctions"
location = "/data/entities.ftm.json"
category = "scam"

[[source]]
name = "exchange-blocklist"
format = "custom"
location = "/data/blocklist.csv"
category = "theft"

[[source]]
name = "exchange-allowlist"
format = "custom-allow"
location = "/data/allowlist.csv"
""",
        )
    )
    xml, csv, stolen, sample, opensanctions, blocklist, allowlist = configured.sources
    assert isinstance(xml, cfg.OfacXmlConfig) and xml.list == "ofac-sdn" and xml.category == "sanctions"
    assert xml.checksum_location == "https://example.org/SDN_ADVANCED_CHECKSUM.TXT" and xml.max_shrink == 0.25
    assert isinstance(csv, cfg.OfacCsvConfig) and csv.comments_location == "/data/sdn_comments.csv"
    assert csv.list == "ofac-sdn" and csv.max_shrink == 0.5, "list as given; max_shrink defaults to half"
    assert isinstance(stolen, cfg.AddressListConfig) and stolen.list == "stolen", "the list defaults to the name"
    assert stolen.category == "theft", "one spelling per category (a capital must not cost the severity)"
    assert (stolen.asset, stolen.entry_id, stolen.entry_name, stolen.programs) == (
        "ETH",
        "case-17",
        "Upbit hack 2019",
        ("HACK",),
    )
    assert stolen.overridable is True and stolen.published_at == 1727395200000  # a TOML date, UTC midnight
    assert stolen.sha256 == "673a" + "0" * 56 + "cafe", "a digest is compared in lower case"
    assert isinstance(sample, cfg.ManifestConfig) and sample.location == "/data/manifest.json"
    assert isinstance(opensanctions, cfg.OpenSanctionsConfig) and opensanctions.category == "scam"
    assert isinstance(blocklist, cfg.CustomConfig) and blocklist.category == "theft"
    assert isinstance(allowlist, cfg.CustomAllowConfig) and allowlist.category == "allow", "an allowlist is `allow`"
    assert configured.relations == ListingRelations(), "no [related]: the default Solana mints"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('format = "xlsx"\nlocation = "/x"', "format 'xlsx' is not one of ofac-xml, ofac-csv, address-list"),
        ('location = "/x"', "'format' is required: one of ofac-xml"),
        ('format = "custom"', "'location' is required: a file path or an http(s) URL"),
        ('format = "custom"\nlocation = ""', "'location' must be a file path or an http(s) URL, not ''"),
        (
            'format = "ofac-xml"\nlocation = "/x"\nasset = "ETH"',
            "unknown field 'asset' for format ofac-xml; known: name, location, list, category",
        ),
        (
            'format = "custom"\nlocation = "/x"\ncomments_location = "/c"',
            "unknown field 'comments_location' for format custom",
        ),
        ('format = "custom"\nlocation = "/x"\nsha256 = "abc"', "'sha256' must be 64 hexadecimal digits"),
        (
            'format = "custom"\nlocation = "/x"\nmax_shrink = 5',
            "'max_shrink' must be a number from 0 to 1 (share of the previous table's keys that may vanish), not 5",
        ),
        ('format = "custom"\nlocation = "/x"\nmax_shrink = true', "'max_shrink' must be a number from 0 to 1"),
        ('format = "custom"\nlocation = "/x"\noverridable = "yes"', "'overridable' must be true or false"),
        (
            'format = "custom"\nlocation = "/x"\ncategory = "Sanctions"\noverridable = true',
            "a sanctions list can never be overridable by the allowlist",
        ),
        (
            'format = "address-list"\nlocation = "/x"\ncategory = "allow"',
            "'category': 'allow' is reserved for the allowlist: use format custom-allow",
        ),
        (
            'format = "custom-allow"\nlocation = "/x"\ncategory = "theft"',
            "'category' must be allow (the only category of an allowlist), not 'theft'",
        ),
        (
            'format = "address-list"\nlocation = "/x"\npublished_at = "last week"',
            "'published_at' must be an ISO 8601 date or time, e.g. 2024-09-27",
        ),
        ('format = "address-list"\nlocation = "/x"\npublished_at = 1727395200', "'published_at' must be an ISO 8601"),
        ('format = "address-list"\nlocation = "/x"\nfiles = "a.txt"', "'files' must be an array of local file paths"),
        ('format = "address-list"\nlocation = "/x"\nfiles = ["https://h/a.txt"]', "`files` are local paths"),
        ('format = "address-list"\nlocation = "/x"\nprograms = [1]', "'programs[0]' must be an array of strings"),
        ('format = "manifest"\nlocation = "https://h/m.json"', "a manifest is read from a local path"),
    ],
)
def test_an_invalid_source_names_the_file_the_source_the_field_and_the_expected_form(tmp_path, source, message):
    error = config_error(
        tmp_path, f'[[source]]\nname = "ok"\nformat = "custom"\nlocation = "/a"\n\n[[source]]\nname = "bad"\n{source}\n'
    )
    assert error.startswith(f"{tmp_path / 'sources.toml'}: source #2 ('bad'): "), error
    assert message in error


def test_a_source_without_a_name_is_named_by_its_position(tmp_path):
    error = config_error(tmp_path, '[[source]]\nformat = "custom"\nlocation = "/a"\n')
    assert "source #1: 'name' is required: a non-empty string, unique among the sources" in error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected one or more [[source]] tables"),
        ("[[sources]]\nname = 'x'\n", "unknown top-level key(s) sources; known: source, related"),
        ("[[source]]\nname = 'x'\nformat = \n", "Invalid value"),  # TOML syntax: tomllib's own message
        (
            "[[source]]\nname = 'x'\nformat = 'custom'\nlocation = '/a'\n" * 2,
            "source names must be unique; repeated: x",
        ),
        ("related = 1\n[[source]]\nname = 'x'\nformat = 'custom'\nlocation = '/a'\n", "[related] must be a table"),
    ],
)
def test_an_invalid_document_names_the_file(tmp_path, text, message):
    error = config_error(tmp_path, text)
    assert error.startswith(str(tmp_path / "sources.toml")) and message in error, error


def test_related_replaces_the_default_mints_and_is_validated(tmp_path):
    source = "[[source]]\nname = 'x'\nformat = 'custom'\nlocation = '/a'\n"
    configured = cfg.read_sync_config(
        toml(tmp_path, f'{source}[[related.solana_mint]]\nmint = "{USDC}"\ntoken_program = "token"\n')
    )
    (mint,) = configured.relations.solana_mints
    assert (mint.name, mint.mint, mint.token_program) == (USDC, USDC, "token"), "the name defaults to the mint"
    assert cfg.read_sync_config(toml(tmp_path, f"{source}[related]\nsolana_mint = []\n")).relations.solana_mints == ()
    assert cfg.read_sync_config(toml(tmp_path, source)).relations.solana_mints == DEFAULT_SOLANA_MINTS
    program = config_error(tmp_path, f'{source}[[related.solana_mint]]\nmint = "{USDC}"\ntoken_program = "spl"\n')
    assert "'related.solana_mint[0].token_program' must be \"token\" (SPL Token) or \"token-2022\", not 'spl'" in (
        program
    )
    bad_mint = config_error(tmp_path, f'{source}[[related.solana_mint]]\nmint = "not-base58"\n')
    assert "related.solana_mint[0]" in bad_mint
    unknown = config_error(tmp_path, f"{source}[related]\nevm_tokens = []\n")
    assert "unknown field 'related.evm_tokens'; known: solana_mint" in unknown


def test_a_command_line_source_is_validated_by_the_same_model():
    config = cfg.source_config(
        {"format": "address-list", "name": "x", "location": "a.txt", "published_at": "2024-09-27T14:03:00Z"},
        "watchlist load",
    )
    assert isinstance(config, cfg.AddressListConfig) and config.published_at == 1727445780000
    with pytest.raises(SyncConfigError, match=r"^watchlist load: 'max_shrink' must be a number from 0 to 1"):
        cfg.source_config(
            {"format": "address-list", "name": "x", "location": "a.txt", "max_shrink": 2.0}, "watchlist load"
        )


def test_the_manifest_is_validated_and_names_its_source(tmp_path):
    bundled = REPO / "services" / "aml_screener" / "demo" / "watchlist" / "manifest.json"
    config = cfg.manifest_config(bundled, max_shrink=1.0)
    assert (config.name, config.list, config.category, config.max_shrink) == ("ofac-sdn", "ofac-sdn", "sanctions", 1.0)
    manifest = cfg.read_manifest(bundled)
    assert manifest.files[0].entry_name == "Lazarus Group" and manifest.files[0].programs == ("DPRK3",)
    broken = tmp_path / "manifest.json"
    broken.write_text('{"list": "l", "files": [{"asset": "ETH"}]}')
    with pytest.raises(SourceFormatError) as raised:
        cfg.read_manifest(broken)
    assert "'category' is required: a category, e.g. sanctions" in str(raised.value)
    assert "'files[0].file' is required: a file name, relative to the manifest" in str(raised.value)
    broken.write_text("not json")
    with pytest.raises(SourceFormatError, match="not a valid manifest"):
        cfg.read_manifest(broken)
    with pytest.raises(SyncConfigError, match="a sanctions list can never be overridable"):
        cfg.manifest_config(bundled, overridable=True)


def test_the_configurations_the_project_ships_load(tmp_path):
    """docs/watchlist.md's example and docker/'s sources.toml (helm's default: tests/deploy/test_helm.py)."""
    docs = (REPO / "docs" / "watchlist.md").read_text(encoding="utf-8")
    examples = re.findall(r"```toml\n(.*?)```", docs, flags=re.S)
    sync_example = next(example for example in examples if "[[source]]" in example)
    names = [source.name for source in cfg.read_sync_config(toml(tmp_path, sync_example)).sources]
    assert names == ["ofac-sdn", "exchange-blocklist", "exchange-allowlist", "ofac-per-asset"]
    related_example = next(example for example in examples if "[[related.solana_mint]]" in example)
    cfg.read_sync_config(toml(tmp_path, sync_example + related_example))
    docker = cfg.read_sync_config(REPO / "docker" / "watchlist" / "sources.toml")
    assert [(source.name, source.format) for source in docker.sources] == [("ofac-sdn", "manifest")]
