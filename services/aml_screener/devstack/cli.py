"""`aml-screener devstack`: the embedded broker and redis-server, for trying the service by hand."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading

from aml_screener.devstack.stack import MOCK_SCREENER_ENV, EmbeddedStack

DEFAULT_TOPICS = {
    "withdrawals.requested": 4,
    "screening.decisions": 4,
    "withdrawals.flagged": 1,
    "withdrawals.requested.dlq": 1,
}


def add_devstack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--brokers", type=int, default=1, help="number of mock brokers (default 1)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the input topic (default 4)")
    parser.add_argument(
        "--schema-registry",
        action="store_true",
        help="also run Apicurio Registry (Confluent-compatible; fetched with Maven into the cache on first use)",
    )


def screener_settings(stack: EmbeddedStack, registry_url: str | None = None) -> dict[str, str]:
    """Every AML_* setting the project's own runs (demo, tests, benchmarks) give a screener on the embedded broker:
    the addresses plus devstack.stack.MOCK_SCREENER_ENV."""
    env = {
        "AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "AML_REDIS_URL": stack.redis_url,
        **MOCK_SCREENER_ENV,
    }
    if registry_url is not None:
        env["AML_SCHEMA_REGISTRY_URL"] = registry_url
    return env


def run_devstack(args: argparse.Namespace) -> int:
    topics = dict(DEFAULT_TOPICS, **{"withdrawals.requested": args.partitions})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedStack(brokers=args.brokers, topics=topics) as stack, contextlib.ExitStack() as extra:
        registry_url = None
        if args.schema_registry:
            from aml_screener.devstack.schema_registry import ApicurioRegistry  # noqa: PLC0415 - only when asked

            registry_url = extra.enter_context(ApicurioRegistry()).url
        print(
            json.dumps(
                {
                    "bootstrap_servers": stack.bootstrap_servers,
                    "redis_url": stack.redis_url,
                    "schema_registry_url": registry_url,
                    "topics": topics,
                    "env": screener_settings(stack, registry_url),
                },
                indent=2,
            ),
            flush=True,
        )
        print("embedded stack running; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0
