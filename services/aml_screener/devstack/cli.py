"""`aml-screener devstack`: the embedded broker and redis-server, for trying the service by hand."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading

from aml_screener.devstack.stack import KAFKA_PYTHON_API_VERSION, EmbeddedStack

DEFAULT_TOPICS = {
    "withdrawals.requested": 4,
    "screening.decisions": 4,
    "withdrawals.flagged": 1,
    "withdrawals.requested.dlq": 1,
}


def add_devstack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brokers", type=int, default=1, help="number of mock brokers (default 1)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the input topic (default 4)")


def run_devstack(args: argparse.Namespace) -> int:
    topics = dict(DEFAULT_TOPICS, **{"withdrawals.requested": args.partitions})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedStack(brokers=args.brokers, topics=topics) as stack:
        api_version = ".".join(str(part) for part in KAFKA_PYTHON_API_VERSION)
        print(
            json.dumps(
                {
                    "bootstrap_servers": stack.bootstrap_servers,
                    "redis_url": stack.redis_url,
                    "topics": topics,
                    "env": {
                        "AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
                        "AML_KAFKA_API_VERSION": api_version,
                        "AML_REDIS_URL": stack.redis_url,
                    },
                },
                indent=2,
            ),
            flush=True,
        )
        print("embedded stack running; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
