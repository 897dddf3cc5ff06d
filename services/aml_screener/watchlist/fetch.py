"""Fetching list files for the sync: local paths as they are, http(s) URLs downloaded with conditional requests.

Responsible for: downloading a URL to a temporary file (sending the `ETag`/`Last-Modified` of the last download
as `If-None-Match`/`If-Modified-Since`, so an unchanged list is not downloaded again: HTTP 304), the SHA-256 and
size of every file fetched (the content digest the sync compares to tell whether a source changed, and to check a
published checksum), deleting temporary files, and opening a fetched file for a parser (decompressed by its
name's suffix, with the bytes read counted for a progress bar).

Errors: `OSError` for what the file system or the network refuses (a missing file, `URLError`, `HTTPError`, a
timeout), `FetchError` for an HTTP response that breaks off; the sync reports both as the source's failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from aml_screener.watchlist.config import is_url, location_name
from aml_screener.watchlist.errors import FetchError
from aml_screener.watchlist.sources.base import ReadTap, decompressing
from aml_screener.watchlist.sources.registry import Opener

# A download that sends nothing for this long is abandoned (the source fails and keeps its previous data); the
# full OFAC XML (~107 MB) streams far faster than that between two reads.
HTTP_TIMEOUT_SECONDS = 60
# Read and hash in chunks of this size: bounded memory for any file size, few system calls.
CHUNK = 1 << 20
_USER_AGENT = "aml-screener-watchlist-sync"


@dataclass
class Fetched:
    """One file, fetched."""

    path: Path | None  # local file to parse; None when the server said it did not change (HTTP 304)
    validators: dict[str, str] = field(default_factory=dict)  # etag / last_modified / mtime, to send next time
    sha256: str = ""
    size: int = 0
    temporary: bool = False  # a download: deleted once the sync is done with it

    def discard(self) -> None:
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class FetchedFiles:
    """Every file of one source, fetched (in the order of its plan)."""

    files: dict[str, Fetched]  # location -> fetched

    @property
    def not_modified(self) -> bool:
        """The server answered 304 Not Modified (possible only for a source that is one URL)."""
        return len(self.files) == 1 and next(iter(self.files.values())).path is None

    @property
    def sha256(self) -> str:
        """The content digest: a file's SHA-256, or for several files the SHA-256 of theirs, in order."""
        if len(self.files) == 1:
            return next(iter(self.files.values())).sha256
        return sha256_of_digests(fetched.sha256 for fetched in self.files.values())

    @property
    def size(self) -> int:
        return sum(fetched.size for fetched in self.files.values())

    @property
    def validators(self) -> dict[str, str]:
        """What to send with the next request: only a source of one file is fetched conditionally."""
        return dict(next(iter(self.files.values())).validators) if len(self.files) == 1 else {}

    def path(self, location: str) -> Path:
        fetched = self.files[location].path
        if fetched is None:
            raise FetchError(f"{location}: not fetched (the server said unchanged)")
        return fetched

    def opener(self, progress: Callable[[int], object] | None = None, content: hashlib._Hash | None = None) -> Opener:
        """Opens a fetched file for its parser: decompressed by name, the file's bytes counted for `progress`,
        and every decompressed byte hashed into `content` (read to the end: a parser may stop before EOF, e.g.
        after the closing tag, and the published digest is of the whole)."""
        return functools.partial(self._open, progress, content)

    @contextlib.contextmanager
    def _open(
        self, progress: Callable[[int], object] | None, content: hashlib._Hash | None, location: str
    ) -> Iterator[IO[bytes]]:
        with open_fetched(self.path(location), location_name(location), progress) as stream:
            if content is None:
                yield stream
                return
            hashing = ReadTap(stream, content.update)
            yield cast("IO[bytes]", hashing)  # a ReadTap is a readable binary stream
            hashing.drain()


def fetch(location: str, previous: Mapping[str, str]) -> Fetched:
    """A local file as it is; a URL downloaded to a temporary file, conditionally on `previous` validators."""
    if not is_url(location):
        path = Path(location)
        if not path.is_file():
            raise FileNotFoundError(f"{location}: no such file")
        return Fetched(path, {"mtime": str(path.stat().st_mtime)}, sha256_file(path), path.stat().st_size)
    headers = {"User-Agent": _USER_AGENT}
    if previous.get("etag"):
        headers["If-None-Match"] = previous["etag"]
    if previous.get("last_modified"):
        headers["If-Modified-Since"] = previous["last_modified"]
    request = urllib.request.Request(location, headers=headers)  # noqa: S310 - http(s) only (checked above)
    try:
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(None, {k: previous[k] for k in ("etag", "last_modified") if previous.get(k)})
        raise
    suffix = "".join(Path(urllib.parse.urlparse(location).path).suffixes[-2:])
    digest = hashlib.sha256()
    size = 0
    with response, tempfile.NamedTemporaryFile(prefix="aml-sync-", suffix=suffix, delete=False) as out:
        fetched = Fetched(Path(out.name), temporary=True)
        try:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        except http.client.HTTPException as exc:  # e.g. IncompleteRead: the body ended before Content-Length
            fetched.discard()
            raise FetchError(f"{location}: the download broke off after {size} bytes: {exc!r}") from exc
        except BaseException:
            fetched.discard()
            raise
        promised = response.headers.get("Content-Length")
        if promised is not None and promised.isdigit() and size != int(promised):
            # http.client ends a short body quietly when read in chunks: a cut download must not pass for a list.
            fetched.discard()
            raise FetchError(f"{location}: the download broke off after {size} of {promised} bytes")
        validators = {
            "etag": response.headers.get("ETag") or "",
            "last_modified": response.headers.get("Last-Modified") or "",
        }
    fetched.validators = {k: v for k, v in validators.items() if v}
    fetched.sha256, fetched.size = digest.hexdigest(), size
    return fetched


@contextlib.contextmanager
def fetch_all(locations: Sequence[str], previous: Mapping[str, str]) -> Iterator[FetchedFiles]:
    """Every file of a source; a source of one file is fetched conditionally on `previous` (its sync state).
    Downloads are deleted on exit."""
    files: dict[str, Fetched] = {}
    try:
        for location in locations:
            files[location] = fetch(location, previous if len(locations) == 1 else {})
        yield FetchedFiles(files)
    finally:
        for fetched in files.values():
            fetched.discard()


@contextlib.contextmanager
def open_fetched(path: Path, name: str, on_read: Callable[[int], object] | None = None) -> Iterator[IO[bytes]]:
    """A fetched file's content for a parser, decompressed by `name` (.bz2, .gz); `on_read` gets the number of
    bytes of the file read so far, chunk by chunk (a progress bar)."""
    with path.open("rb") as raw:
        stream: IO[bytes] = raw
        if on_read is not None:
            stream = ReadTap(raw, lambda data: on_read(len(data)))  # type: ignore[assignment]
        content = decompressing(stream, name)
        try:
            yield content
        finally:
            if content is not stream:
                content.close()  # the decompressor only: `raw` is closed by its own `with`


@contextlib.contextmanager
def open_location(location: str) -> Iterator[IO[bytes]]:
    """The content of a file path or an http(s) URL (downloaded unconditionally, deleted on exit), decompressed by
    its name: the `Opener` of `watchlist parse`, and of the sync for a second file a parser needs (OFAC's
    sdn_comments.csv) and for a published checksum."""
    if not is_url(location):
        with open_fetched(Path(location), location_name(location)) as stream:
            yield stream
        return
    with fetch_all([location], {}) as fetched, open_fetched(fetched.path(location), location_name(location)) as stream:
        yield stream


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_digests(digests: Iterator[str] | Sequence[str]) -> str:
    digest = hashlib.sha256()
    for item in digests:
        digest.update(item.encode())
    return digest.hexdigest()


__all__ = [
    "HTTP_TIMEOUT_SECONDS",
    "Fetched",
    "FetchedFiles",
    "fetch",
    "fetch_all",
    "open_fetched",
    "open_location",
    "sha256_file",
]
