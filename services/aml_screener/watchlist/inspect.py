"""`aml-screener watchlist parse`: show what a list file turns into, without touching Redis.

For operators and auditors: parse one or more files with the same source parser `watchlist sync` uses and print
one JSON object per normalized entry to stdout (streamed as the parser yields them: the full OFAC XML is not held
in memory), then a human summary to stderr: entries per listed asset, re-homed entries, and every rejected address
with its location and reason. Compressed files (.bz2, .gz) are read directly.

Every format, its options and its parser come from the one registry `watchlist sync` and `watchlist load` use
(`sources/registry.py`): the command line's options are validated by the format's configuration model.

Exit status: 0 when at least one entry was produced, 1 when none, 2 for usage errors (bad option combination,
missing file, a file that is not in the given format). A bug in a parser
(any error but the package's own, OSError and EOFError) is not a usage error: it is not caught, so the command
stops with its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from aml_screener.screening.watchlist import Category
from aml_screener.watchlist.config import source_config
from aml_screener.watchlist.errors import SOURCE_ERRORS, SyncConfigError, UsageError
from aml_screener.watchlist.fetch import open_location
from aml_screener.watchlist.sources.base import Rejection, SourceEntry
from aml_screener.watchlist.sources.registry import FORMATS as REGISTRY
from aml_screener.watchlist.sources.registry import Plan

# `--format` choices: every registered format a file can be inspected in (a manifest is only loaded).
FORMATS = tuple(name for name, listed in REGISTRY.items() if listed.inspectable)
EXIT_OK, EXIT_EMPTY, EXIT_USAGE = 0, 1, 2


def add_parse_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `parse` on the `watchlist` subcommands."""
    parse = subparsers.add_parser(
        "parse",
        help="parse list files and print every normalized entry as JSON (stdout) and a summary (stderr)",
        description=(
            "Parses list files with the parser `watchlist sync` uses, without touching Redis: one JSON object per "
            "entry on stdout (address as published, key, chain, asset, category, source, entry_id, name, programs, "
            "published_at, rehomed_from), a summary with every rejected address on stderr. .bz2/.gz are read "
            "directly. Exit 0 with entries, 1 without, 2 on usage errors. Formats: docs/list-formats.md."
        ),
    )
    parse.add_argument("--format", required=True, choices=FORMATS, help="the files' format")
    parse.add_argument("files", nargs="+", type=Path, metavar="FILE", help="list file(s), optionally .bz2/.gz")
    parse.add_argument(
        "--list", dest="list_name", metavar="NAME", help="list name of the entries (default: per format)"
    )
    parse.add_argument(
        "--category",
        help=(
            "address-list: category of every address (required); opensanctions: category of wallets whose topics "
            f"map to none (default sanctions). Known: {', '.join(c.value for c in Category if c != Category.ALLOW)}"
        ),
    )
    parse.add_argument("--asset", help="address-list: ticker of every file (default: from the file name, _XBT.txt)")
    parse.add_argument("--comments", type=Path, help="ofac-csv: OFAC's sdn_comments.csv (remarks cut off in sdn.csv)")
    parse.set_defaults(func=run_parse)


@dataclass
class _FileResult:
    path: Path
    entries: int = 0
    rejected: int = 0
    published_at: int | None = None


@dataclass
class Summary:
    """What the parse produced, for the stderr report."""

    format: str
    list_name: str
    files: list[_FileResult] = field(default_factory=list)
    per_asset: Counter[str] = field(default_factory=Counter)
    per_chain: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    rejections: list[tuple[Path, Rejection]] = field(default_factory=list)
    rehomed: int = 0

    @property
    def entries(self) -> int:
        return sum(result.entries for result in self.files)

    def add(self, result: _FileResult, item: SourceEntry | Rejection) -> None:
        if isinstance(item, SourceEntry):
            result.entries += 1
            self.per_asset[item.listing.listed_asset or "?"] += 1
            self.per_chain[item.chain] += 1
            self.rehomed += item.rehomed_from is not None
        else:
            result.rejected += 1
            self.reasons[item.reason] += 1
            self.rejections.append((result.path, item))

    def write(self, out: TextIO) -> None:
        print(f"watchlist parse: format {self.format}, list {self.list_name}", file=out)
        for result in self.files:
            stated = f", published {_iso(result.published_at)}" if result.published_at is not None else ""
            print(f"  {result.path}: {result.entries} entries, {result.rejected} rejected{stated}", file=out)
        print(f"entries: {self.entries}", file=out)
        if self.per_asset:
            print(f"  per listed asset: {_counts(self.per_asset)}", file=out)
            print(f"  per chain (key family): {_counts(self.per_chain)}", file=out)
        if self.rehomed:
            print(f"  kept under another chain than listed (rehomed_from): {self.rehomed}", file=out)
        print(f"rejected: {len(self.rejections)}" + (f" ({_counts(self.reasons)})" if self.reasons else ""), file=out)
        several = len(self.files) > 1
        for path, item in self.rejections:
            named = not several or item.location.startswith(path.name)
            where = item.location if named else f"{path.name} {item.location}"
            asset = f" [{item.asset}]" if item.asset else ""
            print(f"  {where}: {item.address!r}{asset}: {item.reason} ({item.detail})", file=out)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common())


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def entry_json(item: SourceEntry, path: Path) -> dict[str, Any]:
    """The JSON object printed for one entry."""
    listing = item.listing
    shown: dict[str, Any] = {
        "address": listing.listed_address,
        "key": item.key,
        "chain": item.chain,
        "asset": listing.listed_asset,
        "list": listing.list,
        "category": listing.category,
        "source": listing.source,
        "entry_id": listing.entry_id,
        "name": listing.entry_name,
        "programs": list(listing.programs),
        "published_at": listing.published_at,
        "file": str(path),
    }
    if item.rehomed_from is not None:
        shown["rehomed_from"] = item.rehomed_from
    return shown


# --- the files, through the format registry --------------------------------------------------------------------


def _check_options(args: argparse.Namespace) -> None:
    fmt = args.format
    if args.category is not None and fmt not in ("address-list", "opensanctions"):
        raise UsageError(f"--category applies to address-list and opensanctions; {fmt} files state their category")
    if args.category is not None and args.category.strip().lower() == Category.ALLOW.value:
        raise UsageError("--category allow is reserved for the allowlist: use --format custom-allow")
    if fmt == "address-list" and not args.category:
        raise UsageError("address-list needs --category (e.g. sanctions, theft, scam)")
    if args.asset is not None and fmt != "address-list":
        raise UsageError(f"--asset applies to address-list only; {fmt} files state each address's asset")
    if args.comments is not None:
        if fmt != "ofac-csv":
            raise UsageError("--comments applies to ofac-csv only")
        if len(args.files) != 1:
            raise UsageError("--comments belongs to one sdn.csv: give exactly one FILE with it")
        if not args.comments.is_file():
            raise UsageError(f"no such file: {args.comments}")
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"no such file: {path}")


def _plan(args: argparse.Namespace, list_name: str, path: Path) -> Plan:
    """What the sync would read for a source of this one file (its options from the command line)."""
    options = {"category": args.category, "asset": args.asset, "comments_location": args.comments}
    raw = {"format": args.format, "name": list_name, "location": str(path), "list": list_name}
    raw.update({name: str(value) for name, value in options.items() if value is not None})
    try:
        config = source_config(raw, str(path))
    except SyncConfigError as exc:
        raise UsageError(str(exc)) from None
    return REGISTRY[args.format].plan(config, open_location)


# --- the command --------------------------------------------------------------------------------------------


def run_parse(args: argparse.Namespace) -> int:
    """Parse the files, stream entries to stdout, write the summary to stderr; return the exit status."""
    try:
        _check_options(args)
    except UsageError as exc:
        print(f"watchlist parse: {exc}", file=sys.stderr)
        return EXIT_USAGE
    summary = Summary(args.format, args.list_name or REGISTRY[args.format].default_list)
    for path in args.files:
        try:
            _parse_file(args, summary, path)
        except BrokenPipeError:  # `... | head`: the reader is gone, which is not an error
            _silence_stdout()
            return EXIT_OK
        except UsageError as exc:
            print(f"watchlist parse: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except SOURCE_ERRORS as exc:  # not in the given format, not UTF-8, corrupt .bz2/.gz; a bug is not caught
            print(f"watchlist parse: {path}: not a valid {args.format} file: {exc}", file=sys.stderr)
            return EXIT_USAGE
    summary.write(sys.stderr)
    return EXIT_OK if summary.entries else EXIT_EMPTY


def _parse_file(args: argparse.Namespace, summary: Summary, path: Path) -> None:
    result = _FileResult(path)
    summary.files.append(result)
    plan = _plan(args, summary.list_name, path)
    for _part, item in plan.read(open_location):
        summary.add(result, item)
        if isinstance(item, SourceEntry):
            _emit(entry_json(item, path), sys.stdout)
    result.published_at = plan.published_at()


def _emit(shown: dict[str, Any], out: IO[str]) -> None:
    out.write(json.dumps(shown, ensure_ascii=False) + "\n")


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


__all__ = ["FORMATS", "Summary", "add_parse_command", "entry_json", "run_parse"]
