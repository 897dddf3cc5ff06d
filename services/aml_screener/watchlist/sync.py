"""`aml-screener watchlist sync`: fetch every configured source, build the new version beside the active one, swap
atomically, publish what changed.

Per source: fetch (a file, or an HTTP(S) URL with a conditional request so an unchanged list is not downloaded
again) -> parse -> write its table. A source that fails (unreachable, unparsable, empty) keeps the table it had in
the active version; if it never had one, it is missing from the version and reported. If no source has data
(the first load failed), nothing is activated and screeners stay not-ready. The diff per source is published on
the Redis change channel (and, when configured, as records on a compacted Kafka topic keyed by address key).

Integrity guards (a refused source keeps its previous table, exactly like a failed one):
- checksum: the content's SHA-256 must equal the one configured (`sha256`) or published beside it
  (`checksum_location`, e.g. OFAC's sdn_advanced_checksum.txt, which hashes the decompressed XML);
- shrink: a source whose new table has lost more than `max_shrink` of the previous table's keys (default half;
  an empty result always fails) is refused: a truncated download or a broken publication is not a delisting;
- counts: the table written must hold exactly the keys parsed (TableWriter), and a previous table that no longer
  holds the keys its version recorded (Redis lost or altered data) is rebuilt from the source, not trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any, Protocol

from aml_screener.screening.related import ListingRelations, SolanaMint
from aml_screener.screening.watchlist import Category
from aml_screener.watchlist.errors import (
    SOURCE_ERRORS,
    IntegrityError,
    SyncConfigError,
    SyncFailed,
    WatchlistWriteError,
)
from aml_screener.watchlist.sources.address_list import AddressListSource, ManifestSource
from aml_screener.watchlist.sources.base import ParseReport, Rejection, Source, SourceEntry, decompressing
from aml_screener.watchlist.sources.custom import CustomAllowlistSource, CustomBlocklistSource
from aml_screener.watchlist.sources.ofac_csv import OfacCsvSource
from aml_screener.watchlist.sources.ofac_xml import OfacAdvancedXmlSource, parse_checksum_file
from aml_screener.watchlist.sources.opensanctions import OpenSanctionsSource
from aml_screener.watchlist.store import TableInfo, WatchlistStore

log = logging.getLogger(__name__)

# Diffs are enumerated (keys listed in the notification and on Kafka) only for tables up to this size; larger
# ones are reported as counts, because listing millions of keys in one message helps nobody.
DIFF_ENUMERATE_MAX = 200_000
# Keys listed in one pub/sub notification (the full diff goes to Kafka when configured).
NOTIFY_KEYS_MAX = 1_000
_HTTP_TIMEOUT_SECONDS = 60
_DOWNLOAD_CHUNK = 1 << 20
FORMATS = ("ofac-xml", "ofac-csv", "address-list", "manifest", "opensanctions", "custom", "custom-allow")


@dataclass(frozen=True)
class SourceConfig:
    """One `[[source]]` of the sync configuration (TOML)."""

    name: str
    format: str
    location: str  # file path or http(s) URL
    list: str
    category: str
    overridable: bool = False  # may the exchange's allowlist downgrade this list's matches (never sanctions)
    asset: str | None = None  # address-list: the ticker of every address, if not in the file name
    comments_location: str | None = None  # ofac-csv: sdn_comments.csv
    files: tuple[str, ...] = ()  # address-list: explicit files (else `location` is a file or a glob)
    entry_id: str | None = None  # address-list: one source entry id for every address
    entry_name: str | None = None
    programs: tuple[str, ...] = ()
    published_at: str | None = None  # address-list: publication date (ISO 8601) when the file has none
    sha256: str | None = None  # expected SHA-256 (hex) of the file, or of its decompressed content
    checksum_location: str | None = None  # file or URL publishing that SHA-256 (e.g. sdn_advanced_checksum.txt)
    max_shrink: float = 0.5  # refuse a new table that lost more than this share of the previous table's keys

    @classmethod
    def from_dict(cls, raw: dict[str, Any], index: int) -> SourceConfig:
        where = f"source #{index + 1}" + (f" ({raw['name']!r})" if "name" in raw else "")
        for required in ("name", "format", "location"):
            if not isinstance(raw.get(required), str) or not raw[required]:
                raise SyncConfigError(f"{where}: '{required}' is required (a non-empty string)")
        if raw["format"] not in FORMATS:
            raise SyncConfigError(f"{where}: format {raw['format']!r} is not one of {', '.join(FORMATS)}")
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise SyncConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        category = raw.get("category") or ("allow" if raw["format"] == "custom-allow" else Category.SANCTIONS.value)
        overridable = raw.get("overridable", False)
        if not isinstance(overridable, bool):
            raise SyncConfigError(f"{where}: 'overridable' must be true or false")
        if overridable and category == Category.SANCTIONS.value:
            raise SyncConfigError(f"{where}: a sanctions list can never be overridable by the allowlist")
        max_shrink = raw.get("max_shrink", 0.5)
        if isinstance(max_shrink, bool) or not isinstance(max_shrink, int | float) or not 0 <= max_shrink <= 1:
            raise SyncConfigError(f"{where}: 'max_shrink' must be a number from 0 to 1 (share of keys that may vanish)")
        sha256 = raw.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9A-Fa-f]{64}", sha256)):
            raise SyncConfigError(f"{where}: 'sha256' must be 64 hexadecimal digits")
        return cls(
            name=raw["name"],
            format=raw["format"],
            location=raw["location"],
            list=raw.get("list") or raw["name"],
            category=category,
            overridable=overridable,
            asset=raw.get("asset"),
            comments_location=raw.get("comments_location"),
            files=tuple(raw.get("files") or ()),
            entry_id=raw.get("entry_id"),
            entry_name=raw.get("entry_name"),
            programs=tuple(raw.get("programs") or ()),
            published_at=raw.get("published_at"),
            sha256=sha256.lower() if sha256 else None,
            checksum_location=raw.get("checksum_location"),
            max_shrink=float(max_shrink),
        )

    @property
    def local_files(self) -> bool:
        """address-list (from files, not a URL) and manifest sources read local files themselves."""
        return self.format == "manifest" or (self.format == "address-list" and not _is_url(self.location))


def load_config(path: Path) -> list[SourceConfig]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SyncConfigError(f"{path}: {exc}") from None
    raw_sources = document.get("source")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise SyncConfigError(f"{path}: expected one or more [[source]] tables")
    sources = [SourceConfig.from_dict(raw, index) for index, raw in enumerate(raw_sources)]
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise SyncConfigError(f"{path}: source names must be unique")
    return sources


def load_relations(path: Path) -> ListingRelations:
    """The `[related]` table of a sync configuration: which Solana mints' associated token accounts of a listed
    wallet are stored as related addresses. Absent: the defaults (USDC, USDT, PYUSD); `solana_mint = []`: none.

        [[related.solana_mint]]
        name = "USDC"
        mint = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
        token_program = "token"          # or "token-2022"
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SyncConfigError(f"{path}: {exc}") from None
    related = document.get("related", {})
    if not isinstance(related, dict):
        raise SyncConfigError(f"{path}: [related] must be a table")
    unknown = set(related) - {"solana_mint"}
    if unknown:
        raise SyncConfigError(f"{path}: [related] has unknown keys {sorted(unknown)}; known: solana_mint")
    if "solana_mint" not in related:
        return ListingRelations()
    raw_mints = related["solana_mint"]
    if not isinstance(raw_mints, list):
        raise SyncConfigError(f"{path}: related.solana_mint must be an array of tables ([[related.solana_mint]])")
    mints = []
    for index, raw in enumerate(raw_mints):
        where = f"{path}: related.solana_mint[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("mint"), str):
            raise SyncConfigError(f"{where}: expected a table with 'mint' (a Base58 Solana address)")
        try:
            mints.append(
                SolanaMint(str(raw.get("name", raw["mint"])), raw["mint"], str(raw.get("token_program", "token")))
            )
        except ValueError as exc:
            raise SyncConfigError(f"{where}: {exc}") from None
    return ListingRelations(tuple(mints))


def make_source(config: SourceConfig) -> Source:
    """The parser for a source's format."""
    if config.format == "ofac-xml":
        return OfacAdvancedXmlSource(list_name=config.list)
    if config.format == "ofac-csv":
        return OfacCsvSource(list_name=config.list)
    if config.format == "opensanctions":
        return OpenSanctionsSource(list_name=config.list, default_category=config.category)
    if config.format == "custom":
        return CustomBlocklistSource(list_name=config.list)
    if config.format == "custom-allow":
        return CustomAllowlistSource(list_name=config.list)
    raise SyncConfigError(f"{config.name}: format {config.format!r} reads local files (see make_local_source)")


def make_local_source(config: SourceConfig) -> LocalFilesSource:
    if config.format == "manifest":
        return ManifestSource(Path(config.location))
    if config.files:
        paths = [Path(p) for p in config.files]
    elif _is_glob(config.location):
        location = Path(config.location)
        paths = sorted(location.parent.glob(location.name))
        if not paths:
            raise FileNotFoundError(f"{config.location}: no file matches")
    else:
        paths = [Path(config.location)]
    published = _iso_to_millis(config.published_at) if config.published_at else None
    return AddressListSource(
        list_name=config.list,
        category=config.category,
        paths=paths,
        asset=config.asset,
        entry_id=config.entry_id,
        entry_name=config.entry_name,
        programs=config.programs,
        published_at=published,
    )


class LocalFilesSource(Protocol):
    name: str

    @property
    def published_at(self) -> int | None: ...

    def files(self) -> list[Path]: ...

    def entries(self) -> Iterator[SourceEntry | Rejection]: ...


def _is_glob(location: str) -> bool:
    return any(char in location for char in "*?[")


def _iso_to_millis(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SyncConfigError(f"published_at {value!r} is not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


# --- fetching ------------------------------------------------------------------------------------------------
@dataclass
class Fetched:
    path: Path | None  # local file to parse; None when the source did not change (HTTP 304)
    validators: dict[str, str] = field(default_factory=dict)  # etag / last_modified to send next time
    sha256: str = ""
    size: int = 0
    temporary: bool = False


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def fetch(location: str, previous: dict[str, str]) -> Fetched:
    """A local file as is; a URL downloaded to a temporary file with If-None-Match / If-Modified-Since."""
    if not _is_url(location):
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"{location}: no such file")
        return Fetched(path, {"mtime": str(path.stat().st_mtime)}, _sha256_file(path), path.stat().st_size)
    headers = {"User-Agent": "aml-screener-watchlist-sync"}
    if previous.get("etag"):
        headers["If-None-Match"] = previous["etag"]
    if previous.get("last_modified"):
        headers["If-Modified-Since"] = previous["last_modified"]
    request = urllib.request.Request(location, headers=headers)  # noqa: S310 - http(s) only (checked above)
    try:
        response = urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_SECONDS)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(None, {k: previous[k] for k in ("etag", "last_modified") if previous.get(k)})
        raise
    suffix = "".join(Path(urllib.parse.urlparse(location).path).suffixes[-2:])
    digest = hashlib.sha256()
    size = 0
    with response, tempfile.NamedTemporaryFile(prefix="aml-sync-", suffix=suffix, delete=False) as out:
        while chunk := response.read(_DOWNLOAD_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        validators = {
            "etag": response.headers.get("ETag") or "",
            "last_modified": response.headers.get("Last-Modified") or "",
        }
    return Fetched(Path(out.name), {k: v for k, v in validators.items() if v}, digest.hexdigest(), size, True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_DOWNLOAD_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _CountingReader:
    """Counts bytes read (for the progress bar) from a binary stream."""

    def __init__(self, stream: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._stream = stream
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._on_read(len(data))
        return data

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _HashingReader(_CountingReader):
    """SHA-256 of everything read through it (the decompressed content, for a published checksum)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.digest = hashlib.sha256()
        super().__init__(stream, lambda _size: None)

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        return data

    def read_rest(self) -> None:
        """Parsers may stop before EOF (e.g. after the closing tag): hash what they left."""
        while self.read(_DOWNLOAD_CHUNK):
            pass


@contextlib.contextmanager
def _open_source(
    path: Path, name: str, progress: Callable[[int], None] | None, hasher: list[_HashingReader] | None = None
) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        counted: IO[bytes] = _CountingReader(raw, progress) if progress else raw  # type: ignore[assignment]
        stream = decompressing(counted, name)
        if hasher is not None:
            hashing = _HashingReader(stream)
            hasher.append(hashing)
            yield hashing  # type: ignore[misc]
        else:
            yield stream


# --- the sync ----------------------------------------------------------------------------------------------
@dataclass
class SourceResult:
    name: str
    status: str  # updated | unchanged | failed-kept-previous | failed-missing
    table: TableInfo | None
    report: ParseReport | None = None
    error: str | None = None
    rejected: list[Rejection] = field(default_factory=list)


@dataclass
class SyncResult:
    version: str | None
    activated: bool
    sources: list[SourceResult]
    diff: dict[str, dict[str, Any]]
    seconds: float


ProgressFactory = Callable[[str, int], Callable[[int], None]]


def run_sync(
    store: WatchlistStore,
    configs: list[SourceConfig],
    *,
    progress: ProgressFactory | None = None,
    kafka_publish: Callable[[dict[str, str | None]], None] | None = None,
    keep_rejected: int = 1_000,
    keep_other_sources: bool = False,
) -> SyncResult:
    """Sync every configured source into a new version (or keep the active one when nothing changed).

    The configuration is the complete set of sources: a source the active version has but the configuration no
    longer names is dropped — unless `keep_other_sources` (used by `watchlist load`, which updates one list).
    """
    started = time.monotonic()
    with store.writer_lock():
        active = store.active_meta()
        previous = active.tables if active else {}
        recorded = {name: int(info.get("keys", 0)) for name, info in (active.sources if active else {}).items()}
        results = [
            _sync_source(
                store,
                config,
                previous_tables=previous,
                recorded_keys=recorded,
                progress=progress,
                keep_rejected=keep_rejected,
            )
            for config in configs
        ]
        tables = {r.name: r.table for r in results if r.table is not None}
        now = time.time()
        stats = {r.name: _source_stats(r, configs, now) for r in results if r.table is not None}
        lists = _lists(configs, tables)
        if keep_other_sources and active is not None:
            configured = {config.name for config in configs}
            for name, kept_table in active.tables.items():
                if name not in configured and store.redis.exists(kept_table):
                    tables[name] = _existing_table(store, kept_table, active.sources.get(name, {}).get("key_scheme"))
                    stats[name] = active.sources.get(name, {})
            for list_name, info in active.lists.items():
                kept = [name for name in info.get("sources", []) if name in tables and name not in configured]
                if kept and list_name not in lists:
                    lists[list_name] = {**info, "sources": kept}
        if not tables:
            raise SyncFailed("no source produced data and there is no previous version: nothing activated", results)
        meta, created = store.activate(tables, stats, lists)
        diff: dict[str, dict[str, Any]] = {}
        if created:
            for name, table in tables.items():
                table_diff = store.diff(previous.get(name), table.key, enumerate_up_to=DIFF_ENUMERATE_MAX)
                diff[name] = {
                    "added": table_diff.added,
                    "removed": table_diff.removed,
                    "changed": table_diff.changed,
                    "added_keys": table_diff.added_keys,
                    "removed_keys": table_diff.removed_keys,
                }
            for name in set(previous) - set(tables):  # dropped sources: every key removed
                size = int(store.redis.hlen(previous[name]))
                keys = [key for key, _ in store.iter_table(previous[name])] if size <= DIFF_ENUMERATE_MAX else None
                diff[name] = {"added": 0, "removed": size, "changed": 0, "added_keys": [], "removed_keys": keys}
            _notify(store, meta.version, meta.parent, diff)
            if kafka_publish is not None:
                _publish_to_kafka(store, meta.tables, diff, kafka_publish)
            store.collect_garbage()
        for result in results:
            _record_state(store, result, meta.version if result.table is not None else None)
    return SyncResult(meta.version, created, results, diff, time.monotonic() - started)


def _sync_source(
    store: WatchlistStore,
    config: SourceConfig,
    *,
    previous_tables: dict[str, str],
    recorded_keys: dict[str, int],
    progress: ProgressFactory | None,
    keep_rejected: int,
) -> SourceResult:
    state = store.source_state(config.name)
    previous_table = previous_tables.get(config.name)
    damaged = False
    scheme = store.relations.fingerprint()
    built_under = state.get("key_scheme") or None  # of the previous table; None: built by an older release
    if previous_table is not None and built_under != scheme:
        # Keys are computed differently now (a new release, other Solana mints): the previous table may lack keys
        # this release looks up, so the source is fetched unconditionally and rebuilt.
        log.info(
            "key scheme changed: rebuilding the source's table",
            extra={"source": config.name, "built_under": built_under, "now": scheme},
        )
        state = {name: value for name, value in state.items() if name not in ("etag", "last_modified")}
    if previous_table is not None and int(store.redis.hlen(previous_table)) != recorded_keys.get(config.name):
        # Redis lost or altered the table (restart without persistence, eviction, tampering): rebuild it from
        # the source, fetched unconditionally, rather than trusting what is left.
        log.error(
            "previous table does not hold the keys its version recorded: rebuilding it",
            extra={"source": config.name, "table": previous_table, "recorded": recorded_keys.get(config.name)},
        )
        state, previous_table, damaged = {}, None, True
    store.set_source_state(config.name, {"last_attempt_at": f"{time.time():.3f}", "location": config.location})
    fetched: Fetched | None = None
    try:
        local: LocalFilesSource | None = None
        if config.local_files:
            local = make_local_source(config)
            fetched = Fetched(None, {}, _sha256_files(local.files()), sum(p.stat().st_size for p in local.files()))
        else:
            fetched = fetch(config.location, state)
        unchanged = (fetched.path is None and local is None) or (
            previous_table is not None
            and state.get("content_sha256") == fetched.sha256
            and state.get("table") == previous_table
            and built_under == scheme
        )
        if unchanged:
            if previous_table is None:
                raise WatchlistWriteError("the server says unchanged, but there is no previous table")
            store.set_source_state(config.name, {**fetched.validators, "status": "unchanged"})
            return SourceResult(config.name, "unchanged", _existing_table(store, previous_table, built_under))
        table, report, rejected = _build_table(
            store, config, local=local, fetched=fetched, progress=progress, keep_rejected=keep_rejected
        )
        _check_shrink(config, recorded_keys.get(config.name) if previous_table else None, table)
        store.set_source_state(
            config.name,
            {
                **fetched.validators,
                "content_sha256": fetched.sha256,
                "status": "updated",
                "table": table.key,
                "key_scheme": table.key_scheme,
            },
        )
        return SourceResult(config.name, "updated", table, report, rejected=rejected)
    except SOURCE_ERRORS as exc:  # what a list or the network can do wrong; anything else is a bug: not caught
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, IntegrityError):
            store.set_source_state(config.name, {"content_sha256": ""})  # refused content is checked again next time
        log.error(  # noqa: TRY400 - the message carries the error; a traceback would only repeat it
            "source failed", extra={"source": config.name, "error": error, "kept_previous": bool(previous_table)}
        )
        if previous_table is not None and store.redis.exists(previous_table):
            return SourceResult(
                config.name,
                "failed-kept-previous",
                _existing_table(store, previous_table, built_under),
                error=error,
            )
        if damaged:
            raise SyncFailed(
                f"source {config.name!r}: its table in Redis is damaged and could not be rebuilt ({error}); the "
                "active version is left as is, so screeners keep failing closed on it"
            ) from exc
        return SourceResult(config.name, "failed-missing", None, error=error)
    finally:
        if fetched is not None and fetched.temporary and fetched.path is not None:
            fetched.path.unlink(missing_ok=True)


def _build_table(
    store: WatchlistStore,
    config: SourceConfig,
    *,
    local: LocalFilesSource | None,
    fetched: Fetched,
    progress: ProgressFactory | None,
    keep_rejected: int,
) -> tuple[TableInfo, ParseReport, list[Rejection]]:
    """Parse the source into a new table (checked against its published checksum, if any)."""
    expected_sha256 = _expected_sha256(config)
    writer = store.table_writer(config.name)
    report = ParseReport()
    rejected: list[Rejection] = []
    hasher: list[_HashingReader] | None = [] if expected_sha256 else None
    try:
        with _items(config, local, fetched, progress, hasher) as (items, published_at):
            for item in items:
                report.count(item)
                if isinstance(item, SourceEntry):
                    writer.add(item)
                elif len(rejected) < keep_rejected:
                    rejected.append(item)
            report.published_at = published_at()
            if expected_sha256:
                one_file = local.files() if local is not None else []
                file_sha256 = _sha256_file(one_file[0]) if len(one_file) == 1 else fetched.sha256
                _check_checksum(expected_sha256, file_sha256, hasher or [])
        return writer.finish(), report, rejected
    except BaseException:
        writer.abort()
        raise


def _expected_sha256(config: SourceConfig) -> str | None:
    if config.sha256:
        return config.sha256
    if not config.checksum_location:
        return None
    published = fetch(config.checksum_location, {})
    try:
        assert published.path is not None
        _name, digest = parse_checksum_file(published.path.read_text(encoding="utf-8", errors="replace"))
    finally:
        if published.temporary and published.path is not None:
            published.path.unlink(missing_ok=True)
    return digest


def _check_checksum(expected: str, file_sha256: str, hasher: list[_HashingReader]) -> None:
    """The published digest may be of the file as fetched or of its decompressed content (OFAC's is)."""
    for reader in hasher:
        reader.read_rest()
    content = {reader.digest.hexdigest() for reader in hasher}
    if expected != file_sha256 and expected not in content:
        raise IntegrityError(
            f"checksum mismatch: expected SHA-256 {expected}, file has {file_sha256}"
            + (f", content has {', '.join(sorted(content))}" if content else "")
        )


def _check_shrink(config: SourceConfig, previous_keys: int | None, table: TableInfo) -> None:
    if not previous_keys or config.max_shrink >= 1:
        return
    lost = 1 - table.keys / previous_keys
    if lost > config.max_shrink:
        raise IntegrityError(
            f"refusing a shrink from {previous_keys} to {table.keys} keys ({lost:.0%} gone, max_shrink "
            f"{config.max_shrink:.0%}): a truncated or broken publication is not a delisting; raise max_shrink "
            "for this source to accept it"
        )


@contextlib.contextmanager
def _items(
    config: SourceConfig,
    local: LocalFilesSource | None,
    fetched: Fetched,
    progress: ProgressFactory | None,
    hasher: list[_HashingReader] | None = None,
) -> Iterator[tuple[Iterator[SourceEntry | Rejection], Callable[[], int | None]]]:
    """The source's entries and rejections, and how to read its publication time once they are consumed."""
    if local is not None:
        yield local.entries(), lambda: local.published_at
        return
    assert fetched.path is not None
    if config.format == "address-list":  # downloaded: the asset and source name come from the URL's file name
        url_name = Path(urllib.parse.urlparse(config.location).path).name
        listed = AddressListSource(
            list_name=config.list,
            category=config.category,
            paths=[fetched.path],
            asset=config.asset,
            label=url_name,
            published_at=_iso_to_millis(config.published_at) if config.published_at else None,
        )
        yield listed.entries(), lambda: listed.published_at
        return
    source = make_source(config)
    tick = progress(config.name, fetched.size) if progress else None
    with _open_source(fetched.path, fetched.path.name, tick, hasher) as stream:
        if isinstance(source, OfacCsvSource) and config.comments_location:
            # OFAC cuts sdn.csv remarks at 1,000 characters; sdn_comments.csv carries the rest (more addresses).
            comments = fetch(config.comments_location, {})
            try:
                assert comments.path is not None
                with _open_source(comments.path, comments.path.name, None) as extra:
                    yield source.parse(stream, comments=extra), lambda: source.published_at
            finally:
                if comments.temporary and comments.path is not None:
                    comments.path.unlink(missing_ok=True)
        else:
            yield source.parse(stream), lambda: source.published_at


def _sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(_sha256_file(path).encode())
    return digest.hexdigest()


def _existing_table(store: WatchlistStore, table: str, key_scheme: str | None) -> TableInfo:
    keys = int(store.redis.hlen(table))
    if keys == 0:
        raise WatchlistWriteError(f"previous table {table} is missing")
    digest = table.rsplit(":", 1)[1]
    return TableInfo(table, digest, keys, keys, key_scheme)


def _source_stats(result: SourceResult, configs: list[SourceConfig], now: float) -> dict[str, Any]:
    config = next(c for c in configs if c.name == result.name)
    stats: dict[str, Any] = {
        "format": config.format,
        "list": config.list,
        "status": result.status,
        "keys": result.table.keys if result.table else 0,
        "table": result.table.key if result.table else None,
    }
    if result.report is not None:
        stats.update(
            entries=result.report.entries,
            rejected=dict(result.report.rejected),
            rehomed=result.report.rehomed,
            per_asset=dict(result.report.per_asset),
            published_at=result.report.published_at,
            fetched_at=round(now, 3),
        )
    if result.error:
        stats["error"] = result.error
    return stats


def _lists(configs: list[SourceConfig], tables: dict[str, TableInfo]) -> dict[str, dict[str, Any]]:
    lists: dict[str, dict[str, Any]] = {}
    for config in configs:
        if config.name not in tables:
            continue
        info = lists.setdefault(config.list, {"category": config.category, "overridable": False, "sources": []})
        info["sources"].append(config.name)
        info["overridable"] = info["overridable"] or config.overridable
    return lists


def _record_state(store: WatchlistStore, result: SourceResult, version: str | None) -> None:
    now = f"{time.time():.3f}"
    fields: dict[str, Any] = {"status": result.status, "version": version or ""}
    if result.error is None:
        fields["last_success_at"] = now
        fields["last_error"] = ""
    else:
        fields["last_error"] = result.error
        fields["last_failure_at"] = now
    if result.report is not None:
        fields["entries"] = result.report.entries
        fields["rejected"] = sum(result.report.rejected.values())
        if result.report.published_at is not None:
            fields["published_at"] = f"{result.report.published_at / 1000:.3f}"
    store.set_source_state(result.name, fields)


def _notify(store: WatchlistStore, version: str, previous: str | None, diff: dict[str, dict[str, Any]]) -> None:
    message: dict[str, Any] = {"version": version, "previous": previous, "at": formatdate(usegmt=True), "sources": {}}
    for name, change in diff.items():
        entry = {k: change[k] for k in ("added", "removed", "changed")}
        for field_name in ("added_keys", "removed_keys"):
            keys = change[field_name]
            if keys is not None and len(keys) <= NOTIFY_KEYS_MAX:
                entry[field_name] = keys
        message["sources"][name] = entry
    store.redis.publish(store.keys.changes, json.dumps(message))


def _publish_to_kafka(
    store: WatchlistStore,
    tables: dict[str, str],
    diff: dict[str, dict[str, Any]],
    publish: Callable[[dict[str, str | None]], None],
) -> None:
    """Changed keys as records of a compacted topic: value = all current listings, None (tombstone) = removed."""
    changed: set[str] = set()
    for change in diff.values():
        for field_name in ("added_keys", "removed_keys"):
            if change[field_name] is not None:
                changed.update(change[field_name])
    records: dict[str, str | None] = {}
    for key in sorted(changed):
        matches: list[Any] = []
        for table in tables.values():
            value = store.redis.hget(table, key)
            if value is not None:
                matches.extend(json.loads(str(value)))
        records[key] = json.dumps(matches) if matches else None
    if records:
        publish(records)
