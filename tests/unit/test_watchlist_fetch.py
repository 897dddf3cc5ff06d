"""Fetching list files: local files and conditional HTTP downloads, the content digest the sync compares, opening
a fetched file for a parser (decompressed, counted, hashed), and what a download that breaks off does."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, cast

import pytest

from aml_screener.watchlist.errors import FetchError
from aml_screener.watchlist.fetch import Fetched, FetchedFiles, fetch, fetch_all, open_location
from aml_screener.watchlist.sources.base import ReadTap

BODY = b"0x098B716B8Aaf21512996dC57EB0615e2383E2f96\n"
ETAG = '"v1"'


@pytest.fixture
def server() -> Iterator[str]:
    """/list.txt answers with an ETag and honours If-None-Match; /cut.txt promises more bytes than it sends."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/list.txt" and self.headers.get("If-None-Match") == ETAG:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", ETAG)
            self.send_header("Content-Length", str(len(BODY) * (10 if self.path == "/cut.txt" else 1)))
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_a_download_is_conditional_on_the_validators_of_the_last_one_and_deleted_when_done(
    server, tmp_path, monkeypatch
):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with fetch_all([f"{server}/list.txt"], {}) as first:
        assert first.validators == {"etag": ETAG} and first.sha256 == hashlib.sha256(BODY).hexdigest()
        assert first.path(f"{server}/list.txt").read_bytes() == BODY
    assert list(tmp_path.iterdir()) == [], "the download is deleted once the sync is done with it"
    with fetch_all([f"{server}/list.txt"], first.validators) as again:
        assert again.not_modified and again.validators == {"etag": ETAG}, "304: nothing downloaded, validators kept"
        with pytest.raises(FetchError, match="not fetched"):
            again.path(f"{server}/list.txt")


def test_a_download_that_breaks_off_is_a_fetch_error_and_leaves_no_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(FetchError, match="broke off after 43 of 430 bytes"):
        fetch(f"{server}/cut.txt", {})
    assert list(tmp_path.iterdir()) == []


def test_fetched_files_digest_one_file_as_itself_and_several_as_the_digest_of_their_digests(tmp_path):
    one, two = tmp_path / "a.txt", tmp_path / "b.txt"
    one.write_bytes(b"a\n")
    two.write_bytes(b"b\n")
    digests = [hashlib.sha256(b"a\n").hexdigest(), hashlib.sha256(b"b\n").hexdigest()]
    with fetch_all([str(one)], {}) as single:
        assert single.sha256 == digests[0] and single.size == 2 and not single.not_modified
        assert set(single.validators) == {"mtime"}
    with fetch_all([str(one), str(two)], {}) as several:
        assert several.sha256 == hashlib.sha256("".join(digests).encode()).hexdigest()
        assert several.validators == {}, "only a source of one file is fetched conditionally"
    assert FetchedFiles({"u": Fetched(None)}).not_modified, "a 304 Not Modified leaves nothing to parse"
    with pytest.raises(FileNotFoundError):
        fetch_all([str(tmp_path / "missing.txt")], {}).__enter__()


@pytest.mark.parametrize(("suffix", "compress"), [(".bz2", bz2.compress), (".gz", gzip.compress), ("", bytes)])
def test_open_location_decompresses_by_name(tmp_path, suffix, compress):
    path = tmp_path / f"list.txt{suffix}"
    path.write_bytes(compress(b"content\n"))
    with open_location(str(path)) as stream:
        assert stream.read() == b"content\n"


def test_a_read_tap_sees_every_byte_once_and_cannot_be_rewound():
    seen: list[bytes] = []
    tap = ReadTap(io.BytesIO(b"abcdef"), seen.append)
    assert tap.read(2) == b"ab" and not tap.seekable()
    tap.drain(chunk=1)
    assert b"".join(seen) == b"abcdef" and tap.bytes_read == 6
    text = io.TextIOWrapper(cast("IO[bytes]", ReadTap(io.BytesIO("é\n".encode()), seen.append)), encoding="utf-8")
    assert text.read() == "é\n", "text layers read through it"


def test_a_file_with_a_hashing_opener_is_hashed_whole_even_when_the_parser_stops_early(tmp_path):
    path = tmp_path / "list.txt.gz"
    path.write_bytes(gzip.compress(b"first\nsecond\n"))
    content = hashlib.sha256()
    read: list[int] = []
    with fetch_all([str(path)], {}) as fetched:
        with fetched.opener(read.append, content)(str(path)) as stream:
            assert stream.readline() == b"first\n"  # and the parser stops here
        assert content.hexdigest() == hashlib.sha256(b"first\nsecond\n").hexdigest(), "the decompressed content"
        assert sum(read) == path.stat().st_size, "progress counts the file's own bytes"
