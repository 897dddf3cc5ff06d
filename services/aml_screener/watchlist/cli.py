"""`aml-screener watchlist ...`: the command line of the watchlist write side (argument parsing and printing only).

    sync    fetch every source of a TOML configuration into a new version and activate it (sync.py)
    load    a one-source sync of ad-hoc address lists or a manifest, keeping every other source
    parse   show what list files turn into, without Redis (inspect.py)
    status  the active version, its sources and their sync state
    check   look one address up in the active version as the screener does
    as-of   was an address listed at a past time, by which entry and version (the history's version log)
    acl     the least-privilege Redis ACL users of the screener and the sync job (acl.py)

Exit codes of sync: 0 ok, 1 nothing activated, 2 configuration error, 3 some source failed (its previous data
kept); of load: 0 ok, 1 not loaded, 2 usage or configuration error. A bug (any error but the package's own
`WatchlistError`s, `OSError` and `EOFError`, see errors.py) is not caught: the command stops with its traceback
and exit status 1, and nothing is activated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from aml_screener.infra.redis_client import redis_client
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screening.addresses import InvalidAddress, UnsupportedNetwork, normalize
from aml_screener.screening.matching import collect_matches
from aml_screener.screening.related import KEY_SCHEME_VERSION, ListingRelations, screening_keys
from aml_screener.screening.watchlist import Category
from aml_screener.watchlist.acl import DEFAULT_SCREENER_USER, DEFAULT_SYNC_USER, watchlist_users
from aml_screener.watchlist.config import SourceConfig, manifest_config, read_sync_config, source_config
from aml_screener.watchlist.errors import (
    AclError,
    SourceFormatError,
    SyncConfigError,
    SyncFailed,
    UsageError,
    WatchlistWriteError,
)
from aml_screener.watchlist.publish import kafka_publisher
from aml_screener.watchlist.store import WatchlistStore
from aml_screener.watchlist.sync import SyncResult, run_sync

SettingsFactory = Callable[..., Any]


def add_watchlist_commands(parser: argparse.ArgumentParser, settings_factory: SettingsFactory) -> None:
    sub = parser.add_subparsers(dest="watchlist_command", required=True)

    sync = sub.add_parser(
        "sync",
        help="fetch every source of a TOML configuration into a new watchlist version and activate it",
        description=(
            "Builds the new version beside the active one and swaps atomically. Unchanged sources are not "
            "re-downloaded (conditional HTTP requests) or re-written; a failing source keeps its previous data. "
            "See docs/watchlist.md for the configuration format."
        ),
    )
    sync.add_argument("config", type=Path, help="TOML file with one [[source]] table per source")
    sync.add_argument("--kafka-topic", help="also publish changed addresses to this (compacted) Kafka topic")
    sync.add_argument("--redis-url", help="override AML_REDIS_URL")
    progress = sync.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sync.add_argument("--json", action="store_true", help="print the result as JSON")
    sync.set_defaults(func=lambda args: cmd_sync(args, settings_factory))

    load = sub.add_parser(
        "load",
        help="load plain address lists (one per line or a JSON array) as one source; other sources are kept",
        description=(
            "A one-source sync: the list's files become one table; every other source of the active version is "
            "kept. Addresses are validated for their asset (from --asset or the file name, e.g. _XBT.txt); an "
            "address valid only for another chain is kept under that chain; rejected lines are reported."
        ),
    )
    load.add_argument("files", nargs="*", type=Path, help="address list files")
    load.add_argument("--manifest", type=Path, help="JSON manifest naming the list, category and files")
    load.add_argument("--list", dest="list_name", help="list (and source) name, e.g. exchange-blocklist")
    load.add_argument(
        "--category", help=f"what the addresses are tied to: {', '.join(c.value for c in Category)} (or any label)"
    )
    load.add_argument("--asset", help="asset ticker of every file (default: from the file name, e.g. _XBT.txt)")
    load.add_argument("--entry-id", help="source entry id for every address (default: file:line)")
    load.add_argument("--entry-name", help="name of the listed party")
    load.add_argument("--program", action="append", default=[], help="program/label (repeatable), e.g. DPRK3")
    load.add_argument("--published-at", help="publication date of the list (ISO 8601)")
    load.add_argument("--overridable", action="store_true", help="the allowlist may downgrade this list's matches")
    load.add_argument(
        "--max-shrink",
        type=float,
        default=0.5,
        help="refuse a reload that lost more than this share of the list's addresses (default 0.5; 1 = any)",
    )
    load.add_argument("--redis-url", help="override AML_REDIS_URL")
    load.add_argument("--show-rejected", action="store_true", help="print every rejected line")
    load.set_defaults(func=lambda args: cmd_load(args, settings_factory))

    status = sub.add_parser("status", help="show the active watchlist version, its sources and their sync state")
    status.add_argument("--redis-url", help="override AML_REDIS_URL")
    status.set_defaults(func=lambda args: cmd_status(args, settings_factory))

    check = sub.add_parser(
        "check",
        help="look an address up in the active watchlist version as the screener does (exit 4 if listed)",
    )
    check.add_argument("network", help="network of the address, e.g. ethereum, tron, bitcoin")
    check.add_argument("address")
    check.add_argument("--redis-url", help="override AML_REDIS_URL")
    check.set_defaults(func=lambda args: cmd_check(args, settings_factory))

    as_of = sub.add_parser(
        "as-of",
        help="was an address listed at a past time? (exit 4 if it was; needs the history database)",
        description=(
            "Answers from the retained history of watchlist versions the lookback keeps in the history database "
            "(AML_HISTORY_DATABASE_URL; docs/lookback.md): the version in effect at TIME, and the entries that "
            "listed the address (or an address related to it) then, each with the version that added it. Prints "
            "JSON. Exit 0 not listed, 4 listed, 1 TIME before the retained history, 3 unscreenable address, 5 the "
            "database cannot answer (unreachable, or not migrated)."
        ),
    )
    as_of.add_argument("--at", required=True, metavar="TIME", help="ISO 8601 time, e.g. 2025-03-21T12:00:00Z")
    as_of.add_argument("network", help="network of the address, e.g. ethereum, tron, bitcoin")
    as_of.add_argument("address")
    as_of.set_defaults(func=lambda args: cmd_as_of(args, settings_factory))

    acl = sub.add_parser(
        "acl",
        help="print (or apply) the least-privilege Redis ACL users of the screener and the sync job",
        description=(
            "One read-only user for `aml-screener run` and one writing user for `watchlist sync|load`, restricted "
            "to the keys under AML_WATCHLIST_KEY_PREFIX and its change channel (docs/security.md). Passwords are "
            "read from the environment variables named by --screener-password-env/--sync-password-env and only "
            "their SHA-256 is printed; without them a placeholder Redis refuses is printed instead."
        ),
    )
    acl.add_argument("--screener-user", default=DEFAULT_SCREENER_USER, help="ACL user of the screener")
    acl.add_argument("--sync-user", default=DEFAULT_SYNC_USER, help="ACL user of the sync job")
    acl.add_argument("--screener-password-env", metavar="VAR", help="variable holding the screener's password")
    acl.add_argument("--sync-password-env", metavar="VAR", help="variable holding the sync job's password")
    acl.add_argument(
        "--client-setinfo", action="store_true", help="also allow CLIENT SETINFO (Redis >= 7.2; automatic with --apply)"
    )
    acl.add_argument("--aclfile", action="store_true", help="print ACL-file lines (`user ...`) instead of commands")
    acl.add_argument(
        "--apply",
        action="store_true",
        help="run the ACL SETUSER commands on AML_REDIS_URL, logged in as AML_REDIS_USERNAME (an admin user)",
    )
    acl.add_argument("--redis-url", help="override AML_REDIS_URL")
    acl.set_defaults(func=lambda args: cmd_acl(args, settings_factory))

    from aml_screener.watchlist.inspect import add_parse_command

    add_parse_command(sub)


def _settings(args: argparse.Namespace, settings_factory: SettingsFactory) -> Any:
    overrides = {"redis_url": args.redis_url} if getattr(args, "redis_url", None) else {}
    return settings_factory(**overrides)


def _store(
    args: argparse.Namespace, settings_factory: SettingsFactory, relations: ListingRelations | None = None
) -> WatchlistStore:
    settings = _settings(args, settings_factory)
    return WatchlistStore(redis_client(settings), WatchlistKeys(settings.watchlist_key_prefix), relations)


def _tqdm_progress(enabled: bool) -> Callable[[str, int], Callable[[int], None]] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    def start(name: str, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr, leave=True)

        def tick(count: int) -> None:
            bar.update(count)

        return tick

    return start


def _print_result(result: SyncResult, as_json: bool, show_rejected: bool = False) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "version": result.version,
                    "activated": result.activated,
                    "seconds": round(result.seconds, 3),
                    "sources": [
                        {
                            "name": s.name,
                            "status": s.status,
                            "keys": s.table.keys if s.table else 0,
                            "entries": s.report.entries if s.report else None,
                            "rejected": dict(s.report.rejected) if s.report else None,
                            "error": s.error,
                        }
                        for s in result.sources
                    ],
                    "diff": {k: {f: v[f] for f in ("added", "removed", "changed")} for k, v in result.diff.items()},
                },
                indent=2,
            )
        )
        return
    for source in result.sources:
        line = f"{source.name}: {source.status}"
        if source.report is not None:
            reasons = ", ".join(f"{r}: {n}" for r, n in source.report.rejected.most_common())
            line += f", {source.report.entries} entries, rejected {sum(source.report.rejected.values())}"
            line += f" ({reasons})" if reasons else ""
            if source.report.rehomed:
                line += f", {source.report.rehomed} kept under another chain than listed"
        if source.table is not None:
            line += f", {source.table.keys} address keys"
        if source.error:
            line += f" -- {source.error}"
        print(line)
        if show_rejected:
            for item in source.rejected:
                print(f"  rejected {item.location} {item.address!r}: {item.reason} ({item.detail})")
    state = "activated" if result.activated else "unchanged, still active"
    print(f"version {result.version} {state} ({result.seconds:.1f}s)")
    for name, change in result.diff.items():
        print(f"  {name}: +{change['added']} -{change['removed']} ~{change['changed']}")


def cmd_sync(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    try:
        configured = read_sync_config(args.config)
    except SyncConfigError as exc:
        print(f"watchlist sync: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args, settings_factory)
    store = _store(args, settings_factory, configured.relations)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    publish = kafka_publisher(args.kafka_topic, settings) if args.kafka_topic else None
    try:
        result = run_sync(store, configured.sources, progress=_tqdm_progress(show), kafka_publish=publish)
    except (SyncFailed, WatchlistWriteError) as exc:
        print(f"watchlist sync: {exc}", file=sys.stderr)
        return 1
    _print_result(result, args.json)
    failed = [s for s in result.sources if s.status.startswith("failed")]
    return 3 if failed else 0


def cmd_load(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    try:
        config = _load_config(args)
    except (UsageError, SyncConfigError, SourceFormatError, OSError) as exc:  # OSError: an unreadable manifest
        print(f"watchlist load: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_sync(_store(args, settings_factory), [config], keep_other_sources=True)
    except (SyncFailed, WatchlistWriteError) as exc:
        print(f"watchlist load: {exc}", file=sys.stderr)
        return 1
    _print_result(result, False, args.show_rejected)
    return 0 if not result.sources[0].status.startswith("failed") else 1


def _load_config(args: argparse.Namespace) -> SourceConfig:
    """The one source `watchlist load` syncs: a manifest, or address-list files (validated like a sync's)."""
    options = {"overridable": args.overridable, "max_shrink": args.max_shrink}
    if args.manifest:
        return manifest_config(args.manifest, **options)
    if not args.files or not args.list_name or not args.category:
        raise UsageError("give FILE... with --list and --category, or --manifest")
    given = {
        "asset": args.asset,
        "entry_id": args.entry_id,
        "entry_name": args.entry_name,
        "published_at": args.published_at,
        "programs": args.program or None,
    }
    raw = {
        "format": "address-list",
        "name": args.list_name,
        "location": str(args.files[0]),
        "files": [str(path) for path in args.files],
        "category": args.category,
        **options,
        **{name: value for name, value in given.items() if value is not None},
    }
    return source_config(raw, f"list {args.list_name!r}")


def cmd_status(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    store = _store(args, settings_factory)
    meta = store.active_meta()
    if meta is None:
        print("no active watchlist version (screeners fail closed until one is loaded)")
        return 1
    states = {name: store.source_state(name) for name in meta.tables}
    print(json.dumps({"active": meta.version, "meta": meta.__dict__, "sync_state": states}, indent=2, default=str))
    return 0


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"aml-screener: --at {text!r} is not an ISO 8601 time (e.g. 2025-03-21T12:00:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def cmd_as_of(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    at = _parse_time(args.at)
    settings = settings_factory()
    if not settings.history_database_url:
        print("aml-screener: AML_HISTORY_DATABASE_URL is not set (postgresql://user@host:5432/db)", file=sys.stderr)
        return 2
    import psycopg

    from aml_screener.history.asof import as_of, render
    from aml_screener.history.store import connect

    try:
        with connect(settings, application_name="aml-watchlist-as-of") as conn:
            answer = as_of(conn, args.network, args.address, at)
    except (InvalidAddress, UnsupportedNetwork) as exc:
        print(f"unscreenable: {exc}")
        return 3
    except psycopg.Error as exc:
        print(f"aml-screener: the history database cannot answer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 5
    print(json.dumps(render(answer), indent=2, ensure_ascii=False))
    if answer.version is None:
        return 1
    return 4 if answer.listed else 0


def cmd_check(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    try:
        normalized = normalize(args.network, args.address)
    except (InvalidAddress, UnsupportedNetwork) as exc:
        print(f"unscreenable: {exc}")
        return 3
    store = _store(args, settings_factory)
    meta = store.active_meta()
    if meta is None:
        print("no active watchlist version")
        return 1
    outdated = meta.outdated_key_schemes(KEY_SCHEME_VERSION)
    if outdated:
        print(f"watchlist built under another key scheme ({', '.join(outdated)}): run `watchlist sync` first")
        return 1
    # The screener's own rules: the destination's key, the keys of listed addresses related to it, and the
    # matches they give (screening/related.py, screening/matching.py).
    related = [(item.key, item.relation.value) for item in screening_keys(normalized.key)]
    found = {key: store.lookup(meta.version, key) for key in (normalized.key, *(key for key, _ in related))}
    matches = collect_matches(normalized.key, related, found)
    answer = {
        "network": args.network,
        "address": args.address,
        "key": normalized.key,
        "kind": normalized.kind,
        "checked_keys": [{"key": key, "relation": relation} for key, relation in related],
        "version": meta.version,
        "matches": matches,
    }
    print(json.dumps(answer, indent=2))
    return 4 if matches else 0


def _password_from_env(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise UsageError(f"environment variable {variable} is not set or empty")
    return value


def cmd_acl(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    settings = _settings(args, settings_factory)
    client = None
    client_setinfo = args.client_setinfo
    if args.apply:
        if not (args.screener_password_env and args.sync_password_env):
            print("watchlist acl: --apply needs --screener-password-env and --sync-password-env", file=sys.stderr)
            return 2
        client = redis_client(settings)
        try:
            version = str(client.info("server").get("redis_version", "0"))
        except redis.RedisError as exc:
            print(f"watchlist acl: cannot reach Redis as admin: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        client_setinfo = client_setinfo or tuple(int(part) for part in version.split(".")[:2]) >= (7, 2)
    try:
        users = watchlist_users(
            settings.watchlist_key_prefix,
            screener_password=_password_from_env(args.screener_password_env),
            sync_password=_password_from_env(args.sync_password_env),
            screener_name=args.screener_user,
            sync_name=args.sync_user,
            client_setinfo=client_setinfo,
        )
    except (AclError, UsageError) as exc:
        print(f"watchlist acl: {exc}", file=sys.stderr)
        return 2
    for user in users:
        if client is None:
            print(user.aclfile_line() if args.aclfile else user.command_line())
            continue
        try:
            client.execute_command(*user.setuser_args())  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            print(f"watchlist acl: ACL SETUSER {user.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"applied: ACL SETUSER {user.name} (rules: {' '.join(user.rules[3:])})")
    return 0


__all__ = ["add_watchlist_commands"]
