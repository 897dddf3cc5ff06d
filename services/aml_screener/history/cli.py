"""`aml-screener history ...`: the screening history's command line (argument parsing and printing only).

migrate    create or update the history database's schema and its monthly partitions (migrate.py)
index      the indexer: decisions (and inputs) into the history, late retroactive matches (indexer.py)
lookback   retroactive matches and delistings on every watchlist change (lookback.py)
retention  drop history partitions older than AML_HISTORY_RETENTION_DAYS (retention.py)
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aml_screener.infra.logs import configure_logging

SettingsFactory = Callable[..., Any]


def add_history_commands(parser: argparse.ArgumentParser, settings_factory: SettingsFactory) -> None:
    sub = parser.add_subparsers(dest="history_command", required=True)
    migrate = sub.add_parser("migrate", help="create or update the history database schema (idempotent)")
    migrate.set_defaults(func=lambda args: cmd_migrate(args, settings_factory))
    index = sub.add_parser("index", help="run the history indexer (a consumer group on the decision topic)")
    index.set_defaults(func=lambda args: cmd_service(args, settings_factory, "index"))
    lookback = sub.add_parser("lookback", help="run the lookback: retroactive matches and delistings per change")
    lookback.set_defaults(func=lambda args: cmd_service(args, settings_factory, "lookback"))
    retention = sub.add_parser("retention", help="drop history partitions older than AML_HISTORY_RETENTION_DAYS")
    retention.add_argument("--apply", action="store_true", help="drop them (default: only list them)")
    retention.set_defaults(func=lambda args: cmd_retention(args, settings_factory))


def _require_database(settings: Any) -> None:
    if not settings.history_database_url:
        print("aml-screener: AML_HISTORY_DATABASE_URL is not set (postgresql://user@host:5432/db)", file=sys.stderr)
        raise SystemExit(2)


def cmd_migrate(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    del args
    settings = settings_factory()
    _require_database(settings)
    configure_logging(settings.log_level, settings.log_format.value)
    from aml_screener.history.app import run_migrate

    return run_migrate(settings)


def cmd_service(args: argparse.Namespace, settings_factory: SettingsFactory, which: str) -> int:
    del args
    stop_requested = threading.Event()  # a SIGTERM during start-up is kept until the service's handler takes over
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop_requested.set())
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    settings = settings_factory()
    _require_database(settings)
    configure_logging(settings.log_level, settings.log_format.value)
    from aml_screener.history.app import run_indexer, run_lookback

    return (run_indexer if which == "index" else run_lookback)(settings, stop_requested)


def cmd_retention(args: argparse.Namespace, settings_factory: SettingsFactory) -> int:
    settings = settings_factory()
    _require_database(settings)
    from aml_screener.history.retention import drop_expired, expired_partitions
    from aml_screener.history.store import connect

    cutoff = datetime.now(UTC) - timedelta(days=settings.history_retention_days)
    with connect(settings, application_name="aml-history-retention") as conn:
        if not args.apply:
            expired = expired_partitions(conn, cutoff)
            print(f"partitions older than {cutoff:%Y-%m-%d} ({settings.history_retention_days} days):")
            for partition in expired:
                print(f"  aml_history.{partition.table}  ({partition.month:%Y-%m})")
            print("nothing dropped (add --apply)" if expired else "  none")
            return 0
        dropped, deleted = drop_expired(conn, cutoff)
    print(f"dropped {len(dropped)} partition(s), deleted {deleted} row(s) of the default partitions")
    return 0
