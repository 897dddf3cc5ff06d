"""The `aml-screener` command line: one entry point, one subcommand per job.

aml-screener run                 the screener service (configured by AML_* environment variables)
aml-screener demo                the whole pipeline on the embedded stack with the bundled OFAC sample
aml-screener watchlist load      load address lists into a new watchlist version in Redis
aml-screener watchlist status    show the active watchlist version
aml-screener watchlist check     look one address up in the active version
aml-screener history ...         the screening history: migrate, index, lookback, retention
aml-screener devstack            run the embedded Kafka-protocol broker + redis-server until Ctrl-C
aml-screener config              document or check the AML_* settings
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import sys
import threading
from collections.abc import Sequence

from aml_screener.infra.logs import configure_logging
from aml_screener.infra.settings import ENV_PREFIX, ConfigError, Settings, load_settings

EXIT_CONFIG = 2


def _settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        print(f"aml-screener: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    del args
    # A SIGTERM while the service is still importing and connecting (a scale-down right after a scale-up) must
    # end it cleanly too: remember it until the screener's own handler takes over.
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop_requested.set())
    # `kill -USR1 <pid>` writes every thread's stack to stderr: how to see where a stuck loop is (docs/runbook.md).
    # The process's own stderr (a file descriptor), also when sys.stderr was replaced (an embedding, a test).
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format.value)
    from aml_screener.screener.app import run

    return run(settings, stop_requested)


def cmd_demo(args: argparse.Namespace) -> int:
    from aml_screener.demo.run import run_demo

    return run_demo(args)


def cmd_devstack(args: argparse.Namespace) -> int:
    from aml_screener.devstack.cli import run_devstack

    return run_devstack(args)


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    settings = _settings_or_exit()
    print(json.dumps(settings.redacted(), indent=2, default=str))
    return 0


def settings_markdown() -> str:
    """The README's configuration table, generated from the Settings class (single source of truth)."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=False)
        if field.default_factory is not None:
            shown = "(host name)"
        elif isinstance(default, tuple):
            shown = f"`{','.join(default)}`"
        elif default is None:
            shown = ""
        else:
            shown = f"`{getattr(default, 'value', default)}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {description} |")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aml-screener", description="Event-driven AML screening of crypto withdrawals."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the screener service (configured by AML_* environment variables)")
    run.set_defaults(func=cmd_run)

    from aml_screener.demo.run import add_demo_arguments
    from aml_screener.devstack.cli import add_devstack_arguments
    from aml_screener.history.cli import add_history_commands
    from aml_screener.watchlist.cli import add_watchlist_commands

    demo = sub.add_parser("demo", help="screen a synthetic stream on the embedded stack (or given Kafka/Redis)")
    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    watchlist = sub.add_parser("watchlist", help="load and inspect the watchlist in Redis")
    add_watchlist_commands(watchlist, _settings_or_exit)

    history = sub.add_parser("history", help="the screening history and the lookback (PostgreSQL)")
    add_history_commands(history, _settings_or_exit)

    devstack = sub.add_parser("devstack", help="run the embedded Kafka-protocol broker and redis-server")
    add_devstack_arguments(devstack)
    devstack.set_defaults(func=cmd_devstack)

    config = sub.add_parser("config", help="print the effective settings (secrets masked) or their documentation")
    config.add_argument("--markdown", action="store_true", help="print the settings table for the README")
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
