"""The `aml-screener` command line: one entry point, one subcommand per job.

aml-screener run                 the screener service (configured by AML_* environment variables)
aml-screener demo                the whole pipeline on the embedded stack with the bundled OFAC sample
aml-screener watchlist load      load address lists into a new watchlist version in Redis
aml-screener watchlist status    show the active watchlist version
aml-screener watchlist check     look one address up in the active version
aml-screener history ...         the screening history: migrate, index, lookback, retention
aml-screener report serve        record OFAC reporting obligations from the flagged topics (metrics, probes)
aml-screener report list|drafts|file   the obligations, their report drafts, mark one filed
aml-screener api                 the pre-screen HTTP API (synchronous screening of addresses and withdrawals)
aml-screener api keys            create, list and revoke its API keys (stored hashed)
aml-screener replay              re-screen a range of input against a watchlist version and policy, deterministically
aml-screener devstack            run the embedded Kafka-protocol broker + redis-server until Ctrl-C
aml-screener policy check FILE   validate an action policy file and show its version and rules
aml-screener config              document or check the AML_* settings
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

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


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate a policy file as the screener would at start-up; print its version and every rule in the order they
    are tried (the built-in ones last). Exit 2 with the problems (file, rule, field) when it is invalid."""
    from aml_screener.screener.policy_watch import load_policy
    from aml_screener.screening.policy import DEFAULT_POLICY, PolicyError

    try:
        policy = load_policy(args.file) if args.file else DEFAULT_POLICY
    except PolicyError as exc:
        print(f"aml-screener: invalid action policy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    builtin = len(policy.rules)
    rules = [
        {**rule.model_dump(mode="json", exclude_none=True), "builtin": position >= builtin}
        for position, rule in enumerate(policy.effective)
    ]
    print(json.dumps({"version": policy.version, "source": policy.source, "rules": rules}, indent=2))
    return 0


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


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _settings_or_exit()
    configure_logging(settings.log_level, settings.log_format.value)
    from aml_screener.screener.policy_watch import load_policy
    from aml_screener.screener.replay import Position, ReplayError, replay
    from aml_screener.screening.policy import DEFAULT_POLICY, PolicyError

    policy_file = args.policy or settings.policy_file
    try:
        policy = load_policy(Path(policy_file)) if policy_file else DEFAULT_POLICY
        start, stop = Position.parse(args.start), Position.parse(args.stop)
    except (PolicyError, OSError, ReplayError) as exc:
        print(f"aml-screener replay: {exc}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("aml-screener replay: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        result = replay(
            settings,
            output_topic=args.output_topic,
            version=args.watchlist_version,
            policy=policy,
            start=start,
            stop=stop,
            batch_size=args.batch_size,
        )
    except ReplayError as exc:
        print(f"aml-screener replay: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aml-screener", description="Event-driven AML screening of crypto withdrawals and deposits."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the screener service (configured by AML_* environment variables)")
    run.set_defaults(func=cmd_run)

    from aml_screener.api.cli import add_api_commands
    from aml_screener.demo.run import add_demo_arguments
    from aml_screener.devstack.cli import add_devstack_arguments
    from aml_screener.history.cli import add_history_commands
    from aml_screener.reporting.cli import add_report_commands
    from aml_screener.watchlist.cli import add_watchlist_commands

    demo = sub.add_parser("demo", help="screen a synthetic stream on the embedded stack (or given Kafka/Redis)")
    add_demo_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    watchlist = sub.add_parser("watchlist", help="load and inspect the watchlist in Redis")
    add_watchlist_commands(watchlist, _settings_or_exit)

    history = sub.add_parser("history", help="the screening history and the lookback (PostgreSQL)")
    add_history_commands(history, _settings_or_exit)
    report = sub.add_parser("report", help="OFAC reporting obligations: record them, list, draft and file reports")
    add_report_commands(report, _settings_or_exit)

    api = sub.add_parser("api", help="serve the pre-screen HTTP API (docs/api.md); `api keys` manages its keys")
    add_api_commands(api, _settings_or_exit)
    replay = sub.add_parser(
        "replay",
        help="re-screen a range of the input topics against a chosen watchlist version and policy into another topic",
        description=(
            "Deterministic: the same input range, watchlist version, policy and software version give byte-identical "
            "decisions (docs/lookback.md#replay). Prints a JSON summary; exit 0 done, 2 usage, 1 failed."
        ),
    )
    replay.add_argument("--output-topic", required=True, help="where the decisions go (not a live topic)")
    replay.add_argument("--from", dest="start", help="ISO 8601 time (record timestamps) or offset; default: the start")
    replay.add_argument("--to", dest="stop", help="exclusive end, time or offset; default: the end at start-up")
    replay.add_argument("--watchlist-version", help="a version still in Redis (default: the active one)")
    replay.add_argument("--policy", help="action policy file (default: AML_POLICY_FILE, else the built-in one)")
    replay.add_argument("--batch-size", type=int, default=500, help="records per screening batch (recorded)")
    replay.set_defaults(func=cmd_replay)

    devstack = sub.add_parser("devstack", help="run the embedded Kafka-protocol broker and redis-server")
    add_devstack_arguments(devstack)
    devstack.set_defaults(func=cmd_devstack)

    policy = sub.add_parser("policy", help="the action policy (docs/policy.md)")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file; print its version and rules (exit 2: invalid)")
    check.add_argument("file", nargs="?", type=Path, help="the policy file (default: the built-in default policy)")
    check.set_defaults(func=cmd_policy_check)

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
