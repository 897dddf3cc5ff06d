"""The one registry of list formats: what each `format` of the sync configuration means.

For every format: its configuration model (`watchlist/config.py`), the list name `watchlist parse` uses when none
is given, and its `plan`: which files a source of that format reads, each with the parser (a `Source`: the bytes
of one file in, entries and rejections out) that reads it. `watchlist sync`, `watchlist load` and `watchlist
parse` all go through `FORMATS`, so a format means the same thing in every command; adding one is a parser
module, a model in config.py and a row here.

Planning reads nothing but local metadata (a manifest, the matches of a glob); the files themselves are fetched
and opened by the caller (the sync: `watchlist/fetch.py`, with conditional downloads and checksums; `parse`: the
local files named on its command line). A second file a parser needs (OFAC's sdn_comments.csv) is opened through
the `Opener` the caller passes, when the parse starts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from aml_screener.watchlist.config import (
    AddressListConfig,
    BaseSourceConfig,
    CustomAllowConfig,
    CustomConfig,
    ManifestConfig,
    OfacCsvConfig,
    OfacXmlConfig,
    OpenSanctionsConfig,
    SourceConfig,
    is_url,
    location_name,
    read_manifest,
)
from aml_screener.watchlist.sources.address_list import AddressListSource
from aml_screener.watchlist.sources.base import Rejection, Source, SourceEntry
from aml_screener.watchlist.sources.custom import CustomAllowlistSource, CustomBlocklistSource
from aml_screener.watchlist.sources.ofac_csv import OfacCsvSource
from aml_screener.watchlist.sources.ofac_xml import OfacAdvancedXmlSource
from aml_screener.watchlist.sources.opensanctions import OpenSanctionsSource

Opener = Callable[[str], AbstractContextManager[IO[bytes]]]
"""Opens a location (a file path or an http(s) URL) as the bytes of its content, decompressed by its name."""

_COMPRESSED = (".bz2", ".gz")
_GLOB = frozenset("*?[")


def file_name(location: str) -> str:
    """The name of a location's file without a compression suffix: what an address list takes its asset from
    (`sanctioned_addresses_ETH.txt.gz` -> `sanctioned_addresses_ETH.txt`)."""
    name = location_name(location)
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Part:
    """One file of a source and the parser that reads it."""

    location: str  # a file path or an http(s) URL
    parser: Source


@dataclass(frozen=True)
class Plan:
    """What one source reads: its parts, parsed in order, and the files planning read (a manifest), which shape the
    result as much as the parts do (they are hashed with them to tell whether the source changed)."""

    parts: tuple[Part, ...]
    planned_from: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every file the source's table depends on, in a stable order."""
        return (*self.planned_from, *(part.location for part in self.parts))

    def read(self, open_location: Opener) -> Generator[tuple[Part, SourceEntry | Rejection], None, None]:
        """Every part's entries and rejections, in order, as its parser yields them (nothing is held), each file
        opened with `open_location`."""
        for part in self.parts:
            with open_location(part.location) as stream:
                for item in part.parser.parse(stream):
                    yield part, item

    def published_at(self) -> int | None:
        """The newest publication time the parsers stated (known once they have parsed)."""
        stated = [part.parser.published_at for part in self.parts if part.parser.published_at is not None]
        return max(stated, default=None)


ConfigT = TypeVar("ConfigT", bound=BaseSourceConfig)


@dataclass(frozen=True)
class ListFormat(Generic[ConfigT]):
    """One format: its configuration model, its default list name, and how a source of it is read."""

    config: type[ConfigT]
    default_list: str  # the list `watchlist parse` puts entries in when no --list is given
    plan: Callable[[ConfigT, Opener], Plan]  # the files a source of this format reads and their parsers
    inspectable: bool = True  # `watchlist parse --format` offers it (a manifest is only loaded, never inspected)

    @property
    def name(self) -> str:
        return str(self.config.model_fields["format"].default)


def _one_file(parser: Callable[[ConfigT, Opener], Source]) -> Callable[[ConfigT, Opener], Plan]:
    """The plan of a format whose source is one file (local or a URL) read by one parser."""

    def plan(config: ConfigT, open_location: Opener) -> Plan:
        return Plan((Part(config.location, parser(config, open_location)),))

    return plan


def _ofac_xml(config: OfacXmlConfig, open_location: Opener) -> Source:
    return OfacAdvancedXmlSource(list_name=config.list)


def _ofac_csv(config: OfacCsvConfig, open_location: Opener) -> Source:
    comments = config.comments_location
    if comments is None:
        return OfacCsvSource(list_name=config.list)
    # OFAC cuts sdn.csv remarks at 1,000 characters; sdn_comments.csv carries the rest (more addresses).
    return OfacCsvSource(list_name=config.list, comments=lambda: open_location(comments))


def _opensanctions(config: OpenSanctionsConfig, open_location: Opener) -> Source:
    return OpenSanctionsSource(list_name=config.list, default_category=config.category)


def _custom(config: CustomConfig, open_location: Opener) -> Source:
    return CustomBlocklistSource(list_name=config.list)


def _custom_allow(config: CustomAllowConfig, open_location: Opener) -> Source:
    return CustomAllowlistSource(list_name=config.list)


def _address_lists(config: AddressListConfig, open_location: Opener) -> Plan:
    """One URL, one local file, a glob of local files, or explicit local `files`: one parser per file, each taking
    its asset from its own name unless `asset` is given."""
    return Plan(
        tuple(
            Part(
                location,
                AddressListSource(
                    list_name=config.list,
                    category=config.category,
                    label=file_name(location),
                    asset=config.asset,
                    entry_id=config.entry_id,
                    entry_name=config.entry_name,
                    programs=config.programs,
                    published_at=config.published_at,
                ),
            )
            for location in _address_list_files(config)
        )
    )


def _address_list_files(config: AddressListConfig) -> list[str]:
    if config.files:
        return list(config.files)
    location = config.location
    if is_url(location) or not _GLOB.intersection(location) or Path(location).is_file():
        return [location]
    pattern = Path(location)
    matches = sorted(str(path) for path in pattern.parent.glob(pattern.name))
    if not matches:
        raise FileNotFoundError(f"{location}: no file matches")
    return matches


def _manifest(config: ManifestConfig, open_location: Opener) -> Plan:
    """A local JSON manifest naming address-list files, each with its own asset, entry id, name and programs; the
    list, category, source and publication time come from the manifest."""
    path = Path(config.location)
    manifest = read_manifest(path)
    return Plan(
        tuple(
            Part(
                str(path.parent / item.file),
                AddressListSource(
                    list_name=manifest.list,
                    category=manifest.category,
                    label=file_name(item.file),
                    asset=item.asset,
                    entry_id=item.entry_id,
                    entry_name=item.entry_name,
                    programs=item.programs,
                    source=manifest.source,
                    published_at=manifest.published_at,
                ),
            )
            for item in manifest.files
        ),
        planned_from=(config.location,),
    )


_REGISTERED: tuple[ListFormat[Any], ...] = (
    ListFormat(OfacXmlConfig, "ofac-sdn", _one_file(_ofac_xml)),
    ListFormat(OfacCsvConfig, "ofac-sdn", _one_file(_ofac_csv)),
    ListFormat(AddressListConfig, "address-list", _address_lists),
    ListFormat(ManifestConfig, "address-list", _manifest, inspectable=False),
    ListFormat(OpenSanctionsConfig, "opensanctions", _one_file(_opensanctions)),
    ListFormat(CustomConfig, "exchange-blocklist", _one_file(_custom)),
    ListFormat(CustomAllowConfig, "exchange-allowlist", _one_file(_custom_allow)),
)
FORMATS: Mapping[str, ListFormat[Any]] = {listed.name: listed for listed in _REGISTERED}
"""Every format, by its `format` name (the order docs/list-formats.md lists them in)."""


def format_of(config: SourceConfig) -> ListFormat[Any]:
    """The registered format of a validated source configuration."""
    return FORMATS[config.format]


__all__ = ["FORMATS", "ListFormat", "Opener", "Part", "Plan", "file_name", "format_of"]
