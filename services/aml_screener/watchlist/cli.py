"""`aml-screener watchlist ...`: load address lists into Redis and inspect the active version."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aml_screener.screening.addresses import InvalidAddress, UnsupportedNetwork, normalize
from aml_screener.screening.watchlist import Category
from aml_screener.watchlist import loader
from aml_screener.watchlist.keys import WatchlistKeys
from aml_screener.watchlist.store import WatchlistStore, WatchlistWriteError

SettingsFactory = Callable[..., Any]


def add_watchlist_commands(parser: argparse.ArgumentParser, settings_factory: SettingsFactory) -> None:
    sub = parser.add_subparsers(dest="watchlist_command", required=True)

    load = sub.add_parser(
        "load",
        help="load plain address lists (one per line or a JSON array) as one named list; replaces that list",
        description=(
            "Builds a new watchlist version = the active version with LIST's entries replaced by the given "
            "files, then activates it atomically. Addresses are validated and normalized for the asset's "
            "networks; rejected lines are reported. Redis connection from AML_REDIS_* variables or --redis-url."
        ),
    )
    load.add_argument("files", nargs="*", type=Path, help="address list files (asset from --asset or file name)")
    load.add_argument("--manifest", type=Path, help="JSON manifest naming the list, category and files")
    load.add_argument("--list", dest="list_name", help="list name, e.g. ofac-sdn, exchange-blocklist")
    load.add_argument(
        "--category",
        help=f"what the addresses are tied to: {', '.join(c.value for c in Category)} (or any label)",
    )
    load.add_argument("--asset", help="asset ticker of every file (default: from the file name, e.g. _XBT.txt)")
    load.add_argument("--entry-id", help="source entry id for every address (default: file:line)")
    load.add_argument("--entry-name", help="name of the listed party")
    load.add_argument("--program", action="append", default=[], help="program/label (repeatable), e.g. DPRK3")
    load.add_argument("--published-at", help="publication date of the list (ISO 8601)")
    load.add_argument("--redis-url", help="override AML_REDIS_URL")
    load.add_argument("--show-rejected", action="store_true", help="print every rejected line")
    load.set_defaults(func=lambda args: cmd_load(args, settings_factory))

    status = sub.add_parser("status", help="show the active watchlist version and its lists")
    status.add_argument("--redis-url", help="override AML_REDIS_URL")
    status.set_defaults(func=lambda args: cmd_status(args, settings_factory))

    check = sub.add_parser("check", help="look an address up in the active watchlist version")
    check.add_argument("network", help="network of the address, e.g. ethereum, tron, bitcoin")
    check.add_argument("address")
    check.add_argument("--redis-url", help="override AML_REDIS_URL")
    check.set_defaults(func=lambda args: cmd_check(args, settings_factory))


def _store(args: argparse.Namespace, settings_factory: SettingsFactory) -> WatchlistStore:
    from aml_screener.screener.app import redis_client

    overrides = {"redis_url": args.redis_url} if args.redis_url else {}
    settings = settings_factory(**overrides)
    return WatchlistStore(redis_client(settings), WatchlistKeys(settings.watchlist_key_prefix))


def cmd_load(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    if args.manifest:
        spec = loader.from_manifest(args.manifest)
    else:
        if not args.files or not args.list_name or not args.category:
            print("watchlist load: give FILE... with --list and --category, or --manifest", file=sys.stderr)
            return 2
        spec = loader.from_files(
            args.files,
            list_name=args.list_name,
            category=args.category,
            asset=args.asset,
            entry_id=args.entry_id,
            entry_name=args.entry_name,
            programs=args.program,
            published_at=args.published_at,
        )
    if not spec.parsed.listings:
        print(f"watchlist load: no valid address in {', '.join(spec.sources)}; nothing loaded", file=sys.stderr)
        return 1
    try:
        meta = loader.load(_store(args, settings_factory), spec)
    except WatchlistWriteError as exc:
        print(f"watchlist load: {exc}", file=sys.stderr)
        return 1
    reasons = Counter(item.reason for item in spec.parsed.rejected)
    print(
        f"loaded list {spec.name!r} ({spec.category}): {len(spec.parsed.listings)} listings from "
        f"{len(spec.sources)} file(s); rejected {len(spec.parsed.rejected)}"
        + (f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})" if reasons else "")
    )
    if args.show_rejected:
        for item in spec.parsed.rejected:
            print(f"  rejected {item.source}:{item.line} {item.address!r}: {item.reason} ({item.detail})")
    print(f"active version {meta.version}: {meta.keys} address keys, {meta.listings} listings")
    return 0


def cmd_status(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    store = _store(args, settings_factory)
    version = store.active_version()
    if version is None:
        print("no active watchlist version (screeners fail closed until one is loaded)")
        return 1
    meta = store.meta(version)
    print(json.dumps({"active": version, "meta": meta.__dict__ if meta else None}, indent=2, default=str))
    return 0


def cmd_check(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    try:
        normalized = normalize(args.network, args.address)
    except (InvalidAddress, UnsupportedNetwork) as exc:
        print(f"unscreenable: {exc}")
        return 3
    store = _store(args, settings_factory)
    version = store.active_version()
    if version is None:
        print("no active watchlist version")
        return 1
    matches = store.lookup(version, normalized.key)
    print(json.dumps({"key": normalized.key, "version": version, "matches": matches}, indent=2))
    return 4 if matches else 0
