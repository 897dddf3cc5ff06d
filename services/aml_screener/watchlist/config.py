"""The configuration the operator writes for the watchlist sync, as validated models.

Responsible for: the `[[source]]` tables of `sources.toml` (one pydantic model per list format, chosen by the
`format` key: `SourceConfig` is their discriminated union), its `[related]` table (which Solana mints' token
accounts of a listed wallet are stored as related addresses), the JSON manifest of the `manifest` format, and
turning every validation error into a `SyncConfigError` that names the source, the field and the expected form.
What a format does with its options lives in `sources/registry.py`; the TOML format is documented in
docs/watchlist.md.
"""

from __future__ import annotations

import tomllib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from aml_screener.screening.related import ListingRelations, SolanaMint
from aml_screener.screening.watchlist import Category
from aml_screener.watchlist.errors import SourceFormatError, SyncConfigError
from aml_screener.watchlist.sources.base import iso_millis


def is_url(location: str) -> bool:
    """An http(s) URL (fetched with conditional requests), as opposed to a local path."""
    return location.startswith(("http://", "https://"))


def location_name(location: str) -> str:
    """The name of a location's file as published: an URL's last path segment, a path's name."""
    return Path(urllib.parse.urlparse(location).path).name if is_url(location) else Path(location).name


def _timestamp_millis(value: object) -> object:
    """An ISO 8601 date or time (a string, or a TOML date/datetime) as ms since the epoch; UTC when it has no
    offset. Anything else is handed on unchanged for the strict `int` to refuse (a bare number too: seconds or
    milliseconds? A date says which)."""
    if isinstance(value, date):  # TOML dates and date-times
        value = value.isoformat()
    if isinstance(value, str):
        try:
            return iso_millis(value)
        except ValueError:
            return value
    return str(value) if isinstance(value, int | float) else value


# A publication time given by the operator, kept as ms since the epoch like every parser's `published_at`.
Timestamp = Annotated[int, Strict(), BeforeValidator(_timestamp_millis)]
_TIMESTAMP = "an ISO 8601 date or time, e.g. 2024-09-27 or 2024-09-27T14:03:00Z"
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{64}$", to_lower=True)]


class BaseSourceConfig(BaseModel):
    """The options every format has. `format` (the discriminator) is declared by each subclass."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str
    name: NonEmpty = Field(description="a non-empty string, unique among the sources")
    location: NonEmpty = Field(description="a file path or an http(s) URL")
    # The list the entries are loaded under; several sources may feed one list.
    list: str = Field("", validate_default=True, description="a list name (default: the source's name)")
    category: str = Field(
        Category.SANCTIONS.value,
        description="a category: sanctions, theft, ransomware, scam, mixer or any other label",
    )
    overridable: StrictBool = Field(
        False, description="true or false (may the exchange's allowlist downgrade this list's matches)"
    )
    sha256: Sha256 | None = Field(
        None, description="64 hexadecimal digits (the SHA-256 of the file, or of its decompressed content)"
    )
    checksum_location: NonEmpty | None = Field(
        None, description="a file path or an http(s) URL of a published SHA-256 (e.g. sdn_advanced_checksum.txt)"
    )
    max_shrink: Annotated[float, Field(strict=True, ge=0, le=1)] = Field(
        0.5, description="a number from 0 to 1 (share of the previous table's keys that may vanish)"
    )

    allowlist: ClassVar[bool] = False  # only the allowlist format may carry the reserved category `allow`

    @field_validator("list")
    @classmethod
    def _list_defaults_to_name(cls, value: str, info: ValidationInfo) -> str:
        return value or str(info.data.get("name", ""))

    @field_validator("category", mode="before")
    @classmethod
    def _category_is_lower_case(cls, value: object) -> object:
        if isinstance(value, str):  # one spelling per category: "Sanctions" must not lose its severity
            return value.strip().lower() or cls.model_fields["category"].default
        return value

    @field_validator("category")
    @classmethod
    def _allow_is_reserved(cls, value: str) -> str:
        if value == Category.ALLOW.value and not cls.allowlist:
            raise ValueError("'allow' is reserved for the allowlist: use format custom-allow")
        return value

    @model_validator(mode="after")
    def _sanctions_are_never_overridable(self) -> BaseSourceConfig:
        if self.overridable and self.category == Category.SANCTIONS.value:
            raise ValueError("a sanctions list can never be overridable by the allowlist")
        return self


class OfacXmlConfig(BaseSourceConfig):
    """OFAC's SDN Advanced XML (`sdn_advanced.xml`, also .bz2/.gz)."""

    format: Literal["ofac-xml"] = "ofac-xml"


class OfacCsvConfig(BaseSourceConfig):
    """OFAC's legacy `sdn.csv`, optionally with `sdn_comments.csv` (the rest of remarks cut at 1,000 characters)."""

    format: Literal["ofac-csv"] = "ofac-csv"
    comments_location: NonEmpty | None = Field(None, description="a file path or an http(s) URL of sdn_comments.csv")


class AddressListConfig(BaseSourceConfig):
    """Plain per-asset address lists: one file, a glob of local files, explicit local `files`, or one URL."""

    format: Literal["address-list"] = "address-list"
    location: NonEmpty = Field(description="a file path, a glob of local files, or an http(s) URL")
    asset: NonEmpty | None = Field(None, description="an asset ticker, e.g. ETH (default: from each file name)")
    files: tuple[NonEmpty, ...] = Field((), description="an array of local file paths (instead of `location`)")
    entry_id: NonEmpty | None = Field(None, description="a string (default: <file>:<line>)")
    entry_name: NonEmpty | None = Field(None, description="a string: the listed party's name")
    programs: tuple[NonEmpty, ...] = Field((), description='an array of strings, e.g. ["DPRK3"]')
    published_at: Timestamp | None = Field(None, description=_TIMESTAMP)

    @field_validator("files")
    @classmethod
    def _files_are_local(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(is_url(item) for item in value):
            raise ValueError("`files` are local paths; give a URL as `location` (one URL per source)")
        return value


class ManifestConfig(BaseSourceConfig):
    """A JSON manifest (local) naming address-list files with per-file asset, entry id, name and programs."""

    format: Literal["manifest"] = "manifest"
    location: NonEmpty = Field(description="the local path of a manifest.json")

    @field_validator("location")
    @classmethod
    def _manifest_is_local(cls, value: str) -> str:
        if is_url(value):
            raise ValueError("a manifest is read from a local path (its files are next to it), not a URL")
        return value


class OpenSanctionsConfig(BaseSourceConfig):
    """OpenSanctions FtM entities (`entities.ftm.json`): `category` is the category of wallets whose topics map
    to none."""

    format: Literal["opensanctions"] = "opensanctions"


class CustomConfig(BaseSourceConfig):
    """The exchange's blocklist CSV (each row names its own category; `category` is the list's)."""

    format: Literal["custom"] = "custom"


class CustomAllowConfig(BaseSourceConfig):
    """The exchange's allowlist CSV: category `allow`, always."""

    format: Literal["custom-allow"] = "custom-allow"
    category: Literal["allow"] = Field("allow", description="allow (the only category of an allowlist)")
    allowlist: ClassVar[bool] = True


SourceConfig = Annotated[
    OfacXmlConfig
    | OfacCsvConfig
    | AddressListConfig
    | ManifestConfig
    | OpenSanctionsConfig
    | CustomConfig
    | CustomAllowConfig,
    Field(discriminator="format"),
]
"""One `[[source]]` of the sync configuration: the model of its `format`."""

_SOURCE: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)
_FORMAT_MODELS: dict[str, type[BaseSourceConfig]] = {
    model.model_fields["format"].default: model
    for model in (
        OfacXmlConfig,
        OfacCsvConfig,
        AddressListConfig,
        ManifestConfig,
        OpenSanctionsConfig,
        CustomConfig,
        CustomAllowConfig,
    )
}
FORMAT_NAMES: tuple[str, ...] = tuple(_FORMAT_MODELS)


def source_config(raw: Mapping[str, Any], where: str) -> SourceConfig:
    """Validate one source's options (from TOML or the command line); `where` starts every error message."""
    try:
        return _SOURCE.validate_python(raw)
    except ValidationError as exc:
        raise SyncConfigError(f"{where}: {'; '.join(_messages(exc))}") from None


# --- [related] ------------------------------------------------------------------------------------------------


class SolanaMintConfig(BaseModel):
    """One `[[related.solana_mint]]`: a token whose associated token accounts of a listed wallet are related."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mint: NonEmpty = Field(description="a Base58 Solana mint address")
    name: NonEmpty | None = Field(None, description="a string for humans, e.g. USDC (default: the mint)")
    token_program: Literal["token", "token-2022"] = Field("token", description='"token" (SPL Token) or "token-2022"')

    def solana_mint(self) -> SolanaMint:
        return SolanaMint(self.name or self.mint, self.mint, self.token_program)

    @model_validator(mode="after")
    def _mint_is_an_address(self) -> SolanaMintConfig:
        self.solana_mint()  # raises ValueError naming what is wrong with the mint
        return self


class RelatedConfig(BaseModel):
    """The `[related]` table. `solana_mint` absent: the defaults (USDC, USDT, PYUSD); `solana_mint = []`: none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    solana_mint: tuple[SolanaMintConfig, ...] | None = Field(
        None, description="an array of tables ([[related.solana_mint]]) with mint, name and token_program"
    )

    def relations(self) -> ListingRelations:
        if self.solana_mint is None:
            return ListingRelations()
        return ListingRelations(tuple(mint.solana_mint() for mint in self.solana_mint))


# --- the document ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncConfig:
    """A whole sync configuration file: the sources, in order, and the load-time relations."""

    sources: tuple[SourceConfig, ...]
    relations: ListingRelations


def read_sync_config(path: Path) -> SyncConfig:
    """Read and validate a sync configuration (TOML); every problem is a `SyncConfigError` naming the file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SyncConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(document) - {"source", "related"})
    if unknown:
        raise SyncConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; known: source, related")
    raw_sources = document.get("source")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise SyncConfigError(f"{path}: expected one or more [[source]] tables")
    sources = []
    for index, raw in enumerate(raw_sources):
        if not isinstance(raw, dict):
            raise SyncConfigError(f"{path}: source #{index + 1}: expected a table ([[source]])")
        where = f"{path}: source #{index + 1}" + (f" ({raw['name']!r})" if "name" in raw else "")
        sources.append(source_config(raw, where))
    names = [source.name for source in sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SyncConfigError(f"{path}: source names must be unique; repeated: {', '.join(repeated)}")
    related = document.get("related", {})
    if not isinstance(related, dict):
        raise SyncConfigError(f"{path}: [related] must be a table")
    try:
        relations = RelatedConfig.model_validate(related).relations()
    except ValidationError as exc:
        raise SyncConfigError(f"{path}: {'; '.join(_messages(exc, RelatedConfig, 'related'))}") from None
    return SyncConfig(tuple(sources), relations)


def load_config(path: Path) -> list[SourceConfig]:
    """The sources of a sync configuration (see `read_sync_config`)."""
    return list(read_sync_config(path).sources)


# --- the manifest of the `manifest` format ------------------------------------------------------------------


class ManifestFile(BaseModel):
    """One file of a manifest, with the provenance of every address in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: NonEmpty = Field(description="a file name, relative to the manifest")
    asset: NonEmpty | None = Field(None, description="an asset ticker, e.g. XBT (default: from the file name)")
    entry_id: NonEmpty | None = Field(None, description="a string (default: <file>:<line>)")
    entry_name: NonEmpty | None = Field(None, description="a string: the listed party's name")
    programs: tuple[NonEmpty, ...] = Field((), description='an array of strings, e.g. ["DPRK3"]')


class Manifest(BaseModel):
    """A manifest (JSON): a list, its category and publication, and per file its party (demo/watchlist/)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    list: NonEmpty = Field(description="a list name")
    category: NonEmpty = Field(description="a category, e.g. sanctions")
    source: NonEmpty | None = Field(None, description="the publication's name (default: each file's name)")
    published_at: Timestamp | None = Field(None, description=_TIMESTAMP)
    files: tuple[ManifestFile, ...] = Field(min_length=1, description="an array of objects with `file`")


def manifest_config(path: Path, **options: Any) -> ManifestConfig:
    """The source of a manifest file (`watchlist load --manifest`, the demo): its name, list and category are the
    manifest's; `options` are the other source options (overridable, max_shrink)."""
    manifest = read_manifest(path)
    raw = {"format": "manifest", "name": manifest.list, "location": str(path), "category": manifest.category}
    config = source_config({**raw, **options}, str(path))
    assert isinstance(config, ManifestConfig)  # the format says so
    return config


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest; a manifest that is not one raises `SourceFormatError` naming the field."""
    text = path.read_text(encoding="utf-8")  # OSError: the sync reports it like any unreadable source
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        raise SourceFormatError(f"{path}: not a valid manifest: {'; '.join(_messages(exc, Manifest))}") from None


# --- error messages -------------------------------------------------------------------------------------------


def _messages(error: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """One message per problem: which field, what was wrong, and the form it expects. `model`: the model
    validated (None for a source, whose model is named by the format tag that starts each location)."""
    messages = []
    for problem in error.errors(include_url=False):
        kind, loc = problem["type"], tuple(problem["loc"])
        if kind == "union_tag_not_found":
            messages.append(f"'format' is required: one of {', '.join(FORMAT_NAMES)}")
            continue
        if kind == "union_tag_invalid":
            messages.append(f"format {problem['ctx']['tag']!r} is not one of {', '.join(FORMAT_NAMES)}")
            continue
        start = model
        if start is None and loc and loc[0] in _FORMAT_MODELS:
            start, loc = _FORMAT_MODELS[str(loc[0])], loc[1:]
        field = _dotted((prefix, *loc) if prefix else loc)
        info = _field_info(start, loc)
        expected = info.description if info is not None and info.description else ""
        if kind == "extra_forbidden":
            owner = _owner(start, loc[:-1])
            known = ", ".join(name for name in owner.model_fields if name != "format") if owner else ""
            fmt = owner.model_fields["format"].default if owner and "format" in owner.model_fields else None
            where = f" for format {fmt}" if fmt else ""
            messages.append(f"unknown field '{field}'{where}" + (f"; known: {known}" if known else ""))
        elif kind == "missing":
            messages.append(f"'{field}' is required" + (f": {expected}" if expected else ""))
        elif kind == "value_error":  # our own validators: their message says what is wrong
            reason = str(problem.get("ctx", {}).get("error", problem["msg"]))
            messages.append(f"'{field}': {reason}" if field else reason)
        elif expected:
            messages.append(f"'{field}' must be {expected}, not {problem.get('input')!r}")
        else:
            messages.append(f"'{field}': {problem['msg']}" if field else problem["msg"])
    return messages


def _dotted(path: Sequence[int | str]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _owner(model: type[BaseModel] | None, path: Sequence[int | str]) -> type[BaseModel] | None:
    """The model a field path leads into (the model whose fields the next path segment names)."""
    for part in path:
        if model is None:
            return None
        if isinstance(part, str):
            info = model.model_fields.get(part)
            model = _inner_model(info.annotation) if info is not None else None
    return model


def _field_info(model: type[BaseModel] | None, path: Sequence[int | str]) -> FieldInfo | None:
    """The field a location points at (its description is the expected form), if known."""
    names = [index for index, part in enumerate(path) if isinstance(part, str)]
    if not names:
        return None
    owner = _owner(model, path[: names[-1]])
    return owner.model_fields.get(str(path[names[-1]])) if owner is not None else None


def _inner_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None
