"""`aml-screener devstack`: the embedded broker and redis-server, for trying the service by hand.

``--broker kafka`` runs real Apache Kafka (``--brokers`` nodes, 3 by default: replication factor 3 and
``min.insync.replicas`` 2, as in production); ``--broker mock`` (the default) the librdkafka mock cluster, which
starts at once; ``--schema-registry`` adds Apicurio Registry; ``--history`` a PostgreSQL server (migrated) and the
history's topics, for `aml-screener history index|lookback`. Either way every AML_* variable the project's own
runs give a screener on it is printed as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import signal
import sys
import threading

from aml_screener.devstack.stack import BROKERS, EmbeddedStack

DEFAULT_TOPICS = {
    "withdrawals.requested": 4,
    "deposits.received": 4,
    "screening.decisions": 4,
    "withdrawals.flagged": 1,
    "deposits.flagged": 1,
    "withdrawals.requested.dlq": 1,
    "deposits.received.dlq": 1,
    "withdrawals.held": 1,  # fail-open mode only
    "deposits.held": 1,  # fail-open mode only
}
INPUT_TOPICS = ("withdrawals.requested", "deposits.received")
HISTORY_TOPICS = {"screening.retroactive": 1, "screening.delisted": 1, "screening.history.dlq": 1}
# Real Kafka: three nodes is the smallest cluster with production's replication (RF 3, min ISR 2).
DEFAULT_KAFKA_NODES = 3


def add_devstack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default="mock",
        help="real Apache Kafka (one JVM per node, from Maven Central) or the librdkafka mock (default mock)",
    )
    parser.add_argument(
        "--brokers", type=int, default=None, help=f"nodes: default 1 for the mock, {DEFAULT_KAFKA_NODES} for kafka"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of each input topic (default 4)")
    parser.add_argument(
        "--schema-registry",
        action="store_true",
        help="also run Apicurio Registry (Confluent-compatible; fetched with Maven into the cache on first use)",
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="also run PostgreSQL (Debian package) with the history schema, for `aml-screener history ...`",
    )


def screener_settings(stack: EmbeddedStack, registry_url: str | None = None) -> dict[str, str]:
    """Every AML_* setting the project's own runs (demo, tests, benchmarks) give a screener on the embedded broker:
    the addresses plus the broker's own settings (EmbeddedStack.screener_env: the mock's pin and timings)."""
    env = {
        "AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "AML_REDIS_URL": stack.redis_url,
        **stack.screener_env(),
    }
    if registry_url is not None:
        env["AML_SCHEMA_REGISTRY_URL"] = registry_url
    return env


def run_devstack(args: argparse.Namespace) -> int:
    topics = DEFAULT_TOPICS | dict.fromkeys(INPUT_TOPICS, args.partitions) | (HISTORY_TOPICS if args.history else {})
    brokers = args.brokers or (DEFAULT_KAFKA_NODES if args.broker == "kafka" else 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # `kill -USR1 <pid>` writes every thread's stack to stderr, as for `aml-screener run`: where a stop hangs.
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    if args.broker == "kafka":
        print(f"starting {brokers} Kafka node(s) (10-30 s)...", flush=True)
    with EmbeddedStack(brokers=brokers, topics=topics, broker=args.broker) as stack, contextlib.ExitStack() as extra:
        registry_url = None
        if args.schema_registry:
            from aml_screener.devstack.schema_registry import ApicurioRegistry  # noqa: PLC0415 - only when asked

            registry_url = extra.enter_context(ApicurioRegistry()).url
        details = {
            "broker": args.broker,
            "bootstrap_servers": stack.bootstrap_servers,
            "redis_url": stack.redis_url,
            "schema_registry_url": registry_url,
        }
        if args.broker == "kafka":
            cluster = stack.cluster
            details |= {"kafka_version": cluster.version, "directory": str(cluster.directory)}
        env = screener_settings(stack, registry_url)
        if args.history:
            import psycopg  # noqa: PLC0415

            from aml_screener.devstack.postgres_server import PostgresServer  # noqa: PLC0415 - only when asked
            from aml_screener.history.migrate import migrate  # noqa: PLC0415

            postgres = extra.enter_context(PostgresServer())
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                migrate(conn)
            env["AML_HISTORY_DATABASE_URL"] = postgres.dsn
        print(json.dumps({**details, "topics": topics, "env": env}, indent=2), flush=True)
        print("embedded stack running; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
