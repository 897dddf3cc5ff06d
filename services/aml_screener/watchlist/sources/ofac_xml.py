"""OFAC's SDN "Advanced" XML (`sdn_advanced.xml`) as a watchlist source.

Responsible for: streaming the whole SDN list (about 107 MB, 18,000+ parties) in bounded memory, finding every
digital-currency address (a `Feature` of a `Digital Currency Address - <TICKER>` feature type), and turning each
one into a `SourceEntry` (normalized through `normalize_entry`, with the party's fixed reference, primary name
and sanctions programs as provenance) or a `Rejection` with a reason. Every address feature in the document ends
up as exactly one of the two. Also: the document's date of issue (`published_at`), and the SHA-256 of the bytes
read (`sha256`), which OFAC-mirror tooling publishes next to the file (`parse_checksum_file`, `sha256_of_stream`).

Traps (each handled next to the code that deals with it):

* Hostile input: the list comes from the network. It is parsed with `defusedxml`, with DTDs, entity declarations
  and external references forbidden (no billion-laughs expansion, no file or network access).
* Size: parsed with `iterparse` and every finished top-level item (party, location, sanctions entry, ...) is
  cleared and dropped from its parent, so memory does not grow with the document.
* Ids are document-local: the feature type ids of the ticker types, the sanctions type id of "Program" and the
  script id of "Latin" are read from the document's own `ReferenceValueSets`, never hard-coded (new tickers
  appear over time, and ids are not promised to be stable).
* Order: the programs of a party are in `SanctionsEntries`, which come after `DistinctParties`. Parties that
  carry addresses (about 60) are buffered as small records until the whole document is read; nothing is yielded
  before the document has been parsed to its end, so a truncated download yields nothing and raises. If the
  reference values came after the parties (they do not today), the parties' text-valued features are buffered
  and resolved at the end, so the result does not depend on section order.
* Namespaces: OFAC has changed the document namespace before; elements are matched by local name under whatever
  namespace the root element declares.
* Names: the primary alias can carry the same name in several scripts; the Latin-script one is used, its parts
  joined in the order of the identity's name part groups (e.g. "YAN Xiaobing").
* The official data has mislabelled addresses (a TRON address under XBT, a 64-hex string under XMR): those are
  `normalize_entry`'s business (re-homed or rejected with a reason), never silently dropped here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, Final
from xml.etree.ElementTree import Element, ParseError

# defusedxml ships no type hints (types-defusedxml is not a dependency): its iterparse has the stdlib's signature
# plus the forbid_* switches, and its exceptions derive from ValueError.
from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import iterparse as defused_iterparse  # type: ignore[import-untyped]

from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.errors import SourceFormatError
from aml_screener.watchlist.sources.base import ReadTap, Rejection, SourceEntry, normalize_entry

__all__ = [
    "OfacAdvancedXmlSource",
    "OfacXmlStats",
    "SourceFormatError",
    "parse_checksum_file",
    "sha256_of_stream",
]

_FEATURE_TYPE_RE: Final = re.compile(r"\s*Digital\s+Currency\s+Address\s*-\s*(\S+)\s*")
_SHA256_RE: Final = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])")
_CHUNK: Final = 1 << 20

# The depth of elements in the document: the root, its sections (ReferenceValueSets, DistinctParties, ...,
# and DateOfIssue), and the items of a section (one DistinctParty, one SanctionsEntry, one *Values set).
_ROOT, _SECTION, _ITEM = 1, 2, 3
# Small sections read as a whole when they end (their children are not items to drop one by one).
_READ_WHOLE: Final = frozenset({"DateOfIssue"})


def sha256_of_stream(stream: IO[bytes], chunk_size: int = _CHUNK) -> str:
    """Lowercase hex SHA-256 of everything left in `stream` (e.g. the decompressed XML, to check a checksum)."""
    digest = hashlib.sha256()
    while chunk := stream.read(chunk_size):
        digest.update(chunk)
    return digest.hexdigest()


def parse_checksum_file(text: str) -> tuple[str | None, str]:
    """(file name or None, lowercase hex SHA-256) from a published checksum file.

    Accepts OpenSSL/BSD style ``SHA256(sdn_advanced.xml) = 673a...`` (the format of `sdn_advanced_checksum.txt`),
    coreutils style ``673a...  sdn_advanced.xml`` and a bare digest. Raises `SourceFormatError` if there is not
    exactly one 64-hex-digit value.
    """
    line = text.strip()
    digests = _SHA256_RE.findall(line)
    if len(digests) != 1:
        raise SourceFormatError(f"checksum file: expected one SHA-256 hex digest, found {len(digests)}")
    bsd = re.fullmatch(r"SHA-?256\s*\((?P<name>[^)]*)\)\s*=\s*[0-9A-Fa-f]{64}", line, flags=re.IGNORECASE)
    if bsd:
        return bsd["name"], digests[0].lower()
    gnu = re.fullmatch(r"[0-9A-Fa-f]{64}\s+\*?(?P<name>\S.*)", line)
    return (gnu["name"] if gnu else None), digests[0].lower()


@dataclass
class OfacXmlStats:
    """What one parse saw, beyond entries and rejections. Filled while parsing; complete when parse() returns."""

    parties: int = 0
    parties_with_addresses: int = 0
    feature_types: dict[str, str] = field(default_factory=dict)  # FeatureTypeID -> ticker, as the document says
    program_type_ids: tuple[str, ...] = ()  # SanctionsTypeID(s) of "Program"
    parties_without_programs: list[str] = field(default_factory=list)  # fixed refs
    sha256: str | None = None  # of the bytes read (decompressed, if the caller decompresses)
    bytes_read: int = 0


@dataclass
class _Party:
    """The part of a DistinctParty that is needed after the document ends (buffered: parties with addresses)."""

    fixed_ref: str
    profile_ids: tuple[str, ...]
    # The primary alias's documented names, in order: (script ids of the parts, name joined in group order).
    names: list[tuple[frozenset[str], str]]
    # (FeatureTypeID, published text) per address feature (all text features while the ticker types are unknown).
    features: list[tuple[str, str]]


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _first(elements: list[Element], attribute: str) -> Element | None:
    """The first element with attribute="true", else the first element, else None."""
    for element in elements:
        if element.get(attribute) == "true":
            return element
    return elements[0] if elements else None


class OfacAdvancedXmlSource:
    """OFAC's `sdn_advanced.xml` -> entries and rejections (see the module docstring for the traps).

    `parse(stream)` takes the decompressed XML (open .bz2/.gz with `fetch.open_location` or `base.decompressing`).
    After a complete parse: `published_at` (DateOfIssue, ms since the epoch, UTC midnight), `sha256` (of the XML
    bytes read) and `stats`.
    """

    def __init__(
        self,
        list_name: str = "ofac-sdn",
        *,
        category: str = "sanctions",
        source: str = "OFAC SDN Advanced XML",
    ) -> None:
        self.name = list_name
        self.category = category
        self.source = source
        self._published_at: int | None = None
        self.stats = OfacXmlStats()

    @property
    def published_at(self) -> int | None:
        """The document's DateOfIssue (ms since the epoch, midnight UTC), known after parsing."""
        return self._published_at

    @property
    def sha256(self) -> str | None:
        """Lowercase hex SHA-256 of the XML bytes of the last complete parse (compare with the published one)."""
        return self.stats.sha256

    def parse(self, stream: IO[bytes]) -> Iterator[SourceEntry | Rejection]:
        self._published_at = None
        self.stats = OfacXmlStats()
        digest = hashlib.sha256()
        reader = ReadTap(stream, digest.update)
        state = _State(self.stats)
        try:
            state.run(reader)
        except ParseError as exc:
            raise SourceFormatError(f"sdn_advanced.xml: not well-formed XML: {exc}") from None
        except DefusedXmlException as exc:
            # Trap: DTDs, entity declarations and external references are refused (hostile or compromised source).
            raise SourceFormatError(f"sdn_advanced.xml: forbidden XML construct: {exc!r}") from None
        except (UnicodeError, LookupError) as exc:  # LookupError: an unknown encoding in the XML declaration
            raise SourceFormatError(f"sdn_advanced.xml: undecodable text: {exc}") from None
        state.finish()
        self._published_at = state.published_at
        self.stats.sha256 = digest.hexdigest()
        self.stats.bytes_read = reader.bytes_read
        yield from self._entries(state)

    def _entries(self, state: _State) -> Iterator[SourceEntry | Rejection]:
        for party in state.parties:
            programs = state.programs_of(party)
            if not programs:
                self.stats.parties_without_programs.append(party.fixed_ref)
            name = state.name_of(party)
            location = f"party {party.fixed_ref}"
            addresses = [(state.tickers[t], text) for t, text in party.features if t in state.tickers]
            if addresses:
                self.stats.parties_with_addresses += 1
            for ticker, address in addresses:
                listing = Listing(
                    list=self.name,
                    category=self.category,
                    source=self.source,
                    entry_id=party.fixed_ref,
                    listed_address=address,
                    entry_name=name,
                    programs=programs,
                    listed_asset=ticker,
                    published_at=self._published_at,
                )
                yield normalize_entry(ticker, address, listing=listing, location=location)


class _State:
    """One parse: the streaming loop and everything collected for the entries emitted at the end."""

    def __init__(self, stats: OfacXmlStats) -> None:
        self.stats = stats
        self.ns = ""
        self.tickers: dict[str, str] = {}  # FeatureTypeID -> ticker
        self.references_seen = False
        self.program_types: set[str] = set()
        self.latin_scripts: set[str] = set()
        self.published_at: int | None = None
        self.parties: list[_Party] = []
        self.wanted_profiles: set[str] = set()  # profiles of buffered parties
        self.parties_done = False  # the DistinctParties section has ended
        self.measures: dict[str, list[tuple[str, str]]] = {}  # ProfileID -> [(SanctionsTypeID, comment)]

    # -- the streaming loop ------------------------------------------------------------------------------------

    def run(self, reader: ReadTap) -> None:
        depth = 0
        open_: list[Element] = []  # the root and the current section: where finished items get dropped from
        events: Iterator[tuple[str, Any]] = defused_iterparse(
            reader, events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        for event, element in events:
            if event == "start":
                depth += 1
                if depth <= _SECTION:
                    open_.append(element)
                if depth == _ROOT:
                    self._root(element)
                continue
            if depth == _ITEM:
                section = _local(open_[-1].tag)
                if section not in _READ_WHOLE:
                    self._item(section, element)
                    # Bounded memory: drop the finished item (and its siblings, all finished) from its section.
                    open_[-1].clear()
            elif depth == _SECTION:
                self._section(_local(element.tag), element)
                open_.pop()
                open_[0].clear()
            elif depth == _ROOT:
                open_.pop()
            depth -= 1

    def _root(self, element: Element) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if _local(tag) != "Sanctions":
            raise SourceFormatError(f"sdn_advanced.xml: root element is {tag[:80]!r}, expected Sanctions")
        # Trap: the namespace has changed between OFAC publications; take whatever the root uses.
        self.ns = tag[: tag.index("}") + 1] if tag.startswith("{") else ""

    def _section(self, name: str, element: Element) -> None:
        if name == "DateOfIssue":
            self.published_at = self._date(element)
        elif name == "ReferenceValueSets":
            self.references_seen = True
        elif name == "DistinctParties":
            self.parties_done = True
            # Filter features buffered before the ticker types were known (only if references came late).
            if self.references_seen:
                for party in self.parties:
                    party.features = [f for f in party.features if f[0] in self.tickers]
                self.parties = [party for party in self.parties if party.features]
                self.wanted_profiles = {p for party in self.parties for p in party.profile_ids}

    def _item(self, section: str, element: Element) -> None:
        name = _local(element.tag)
        if section == "ReferenceValueSets":
            self._reference_values(name, element)
        elif section == "DistinctParties" and name == "DistinctParty":
            self.stats.parties += 1
            self._party(element)
        elif section == "SanctionsEntries" and name == "SanctionsEntry":
            self._sanctions_entry(element)

    # -- sections ----------------------------------------------------------------------------------------------

    def _date(self, element: Element) -> int:
        ns = self.ns
        try:
            day = datetime(
                int(_text(element.find(ns + "Year"))),
                int(_text(element.find(ns + "Month"))),
                int(_text(element.find(ns + "Day"))),
                tzinfo=UTC,
            )
        except ValueError:
            raise SourceFormatError("sdn_advanced.xml: DateOfIssue is not a valid Year/Month/Day") from None
        return int(day.timestamp()) * 1000

    def _reference_values(self, name: str, element: Element) -> None:
        ns = self.ns
        if name == "FeatureTypeValues":
            # Trap: never hard-code ids or tickers: "Digital Currency Address - <TICKER>" types come and go.
            for feature_type in element.iter(ns + "FeatureType"):
                match = _FEATURE_TYPE_RE.fullmatch(feature_type.text or "")
                type_id = feature_type.get("ID")
                if match and type_id:
                    self.tickers[type_id] = match[1]
            self.stats.feature_types = dict(self.tickers)
        elif name == "SanctionsTypeValues":
            # The "Program" measure type (id 1 today) is looked up, not assumed.
            self.program_types = {
                type_id
                for sanctions_type in element.iter(ns + "SanctionsType")
                if _text(sanctions_type).casefold() == "program" and (type_id := sanctions_type.get("ID"))
            }
            self.stats.program_type_ids = tuple(sorted(self.program_types))
        elif name == "ScriptValues":
            self.latin_scripts = {
                script_id
                for script in element.iter(ns + "Script")
                if (_text(script) == "Latin" or script.get("ScriptCode") in ("Latin", "Latn"))
                and (script_id := script.get("ID"))
            }

    def _party(self, element: Element) -> None:
        ns = self.ns
        profiles = element.findall(ns + "Profile")
        features: list[tuple[str, str]] = []
        for profile in profiles:
            for feature in profile.iter(ns + "Feature"):
                type_id = feature.get("FeatureTypeID") or ""
                # Once the ticker types are known only address features are kept. Before that (reference values
                # after the parties: not the case in OFAC's publications so far) every feature is, as a short
                # tuple, and the ones that are not addresses are dropped when the types are known.
                if self.references_seen and type_id not in self.tickers:
                    continue
                # Whitespace around element text is XML layout, not part of the address. An address feature
                # without a value is kept too: it is rejected as empty, not lost.
                values = [_text(detail) for detail in feature.iter(ns + "VersionDetail")] or [""]
                features.extend((type_id, value) for value in values)
        if not features:
            return
        fixed_ref = element.get("FixedRef") or next((p.get("ID") or "" for p in profiles), "") or "?"
        profile_ids = tuple(p.get("ID") or "" for p in profiles if p.get("ID"))
        self.parties.append(_Party(fixed_ref, profile_ids, self._names(profiles), features))
        self.wanted_profiles.update(profile_ids)

    def _names(self, profiles: list[Element]) -> list[tuple[frozenset[str], str]]:
        """The primary alias's documented names: (script ids, parts joined in name-part-group order)."""
        ns = self.ns
        identities = [identity for profile in profiles for identity in profile.findall(ns + "Identity")]
        identity = _first(identities, "Primary")
        if identity is None:
            return []
        alias = _first(identity.findall(ns + "Alias"), "Primary")
        if alias is None:
            return []
        # Trap: parts are ordered by the identity's NamePartGroups (e.g. last name group, then first name group),
        # not necessarily by their order inside the DocumentedName.
        order = {group.get("ID"): index for index, group in enumerate(identity.iter(ns + "NamePartGroup"))}
        names: list[tuple[frozenset[str], str]] = []
        for documented in alias.findall(ns + "DocumentedName"):
            parts = [
                (order.get(value.get("NamePartGroupID"), len(order)), value.get("ScriptID") or "", _text(value))
                for value in documented.iter(ns + "NamePartValue")
            ]
            parts.sort(key=lambda part: part[0])
            text = " ".join(part[2] for part in parts if part[2])
            if text:
                names.append((frozenset(part[1] for part in parts), text))
        return names

    def _sanctions_entry(self, element: Element) -> None:
        profile_id = element.get("ProfileID") or ""
        # Bounded memory: once the parties are known, keep measures of buffered parties only. (If sanctions
        # entries came first, every entry's measures are kept: comments only, ~16,000 short strings.)
        if self.parties_done and profile_id not in self.wanted_profiles:
            return
        ns = self.ns
        for measure in element.iter(ns + "SanctionsMeasure"):
            comment = _text(measure.find(ns + "Comment"))
            if comment:
                self.measures.setdefault(profile_id, []).append((measure.get("SanctionsTypeID") or "", comment))

    # -- after the document --------------------------------------------------------------------------------------

    def finish(self) -> None:
        if not self.tickers:
            raise SourceFormatError(
                "sdn_advanced.xml: no 'Digital Currency Address - <TICKER>' feature types in ReferenceValueSets"
            )
        if not self.stats.parties:
            # Trap: an empty or cut-down document must not load as an empty sanctions list.
            raise SourceFormatError("sdn_advanced.xml: no DistinctParty elements")
        # Reference values after the parties: drop the buffered features that turned out not to be addresses.
        for party in self.parties:
            party.features = [f for f in party.features if f[0] in self.tickers]
        self.parties = [party for party in self.parties if party.features]

    def programs_of(self, party: _Party) -> tuple[str, ...]:
        programs = [
            comment
            for profile_id in party.profile_ids
            for type_id, comment in self.measures.get(profile_id, ())
            if type_id in self.program_types
        ]
        return tuple(dict.fromkeys(programs))

    def name_of(self, party: _Party) -> str | None:
        for scripts, text in party.names:
            if scripts and scripts <= self.latin_scripts:
                return text
        return party.names[0][1] if party.names else None
