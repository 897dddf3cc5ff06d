"""`aml-screener devstack`: the embedded broker and redis-server, for trying the service by hand.

``--broker kafka`` runs real Apache Kafka (``--brokers`` nodes, 3 by default: replication factor 3 and
``min.insync.replicas`` 2, as in production); ``--broker mock`` (the default) the librdkafka mock cluster, which
starts at once. Either way the AML_* variables to point a screener at it are printed as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading

from aml_screener.devstack.stack import BROKERS, EmbeddedStack

DEFAULT_TOPICS = {
    "withdrawals.requested": 4,
    "screening.decisions": 4,
    "withdrawals.flagged": 1,
    "withdrawals.requested.dlq": 1,
}
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
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the input topic (default 4)")


def run_devstack(args: argparse.Namespace) -> int:
    topics = dict(DEFAULT_TOPICS, **{"withdrawals.requested": args.partitions})
    brokers = args.brokers or (DEFAULT_KAFKA_NODES if args.broker == "kafka" else 1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.broker == "kafka":
        print(f"starting {brokers} Kafka node(s) (10-30 s)...", flush=True)
    with EmbeddedStack(brokers=brokers, topics=topics, broker=args.broker) as stack:
        env = {"AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, **stack.screener_env()}
        env["AML_REDIS_URL"] = stack.redis_url
        details = {"broker": args.broker, "bootstrap_servers": stack.bootstrap_servers, "redis_url": stack.redis_url}
        if args.broker == "kafka":
            cluster = stack.cluster
            details |= {"kafka_version": cluster.version, "directory": str(cluster.directory)}
        print(json.dumps({**details, "topics": topics, "env": env}, indent=2), flush=True)
        print("embedded stack running; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
