"""The embedded local stack: one Kafka-protocol cluster plus one Redis, started and stopped together.

The demo, the integration tests and the benchmarks all need "a broker and a Redis on free local ports"; this
module is responsible for bringing both up with the topics they need, exposing the addresses clients connect
to, and tearing everything down on exit, also on an exception or Ctrl-C. What each half can and cannot
simulate is documented in :mod:`aml_screener.devstack.mock_kafka` and
:mod:`aml_screener.devstack.redis_server`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from aml_screener.devstack.mock_kafka import KafkaClusterControl, MockKafkaCluster, MockKafkaClusterProcess
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.redis_server import RedisServer

__all__ = [
    "KAFKA_PYTHON_API_VERSION",
    "KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS",
    "MOCK_SCREENER_ENV",
    "EmbeddedStack",
    "free_port",
]

# kafka-python 3 clients must be given this api_version when talking to the librdkafka mock broker. The mock
# implements ApiVersions only up to v2, and kafka-python 3 cannot decode the mock's fallback answer to its v4
# ApiVersions request, so version probing times out at bootstrap. Pinning 2.3 skips the probe and keeps the
# protocol features of Kafka 2.3 (idempotent producer, KIP-320 leader epochs, KIP-345 static membership).
# Real Apache Kafka needs no pin: keep it a setting whose default is "probe", and set it only for the mock.
# Caveat: with a pinned version kafka-python ignores the broker's advertised ranges, so the mock's
# set_apiversion() cannot steer kafka-python clients.
KAFKA_PYTHON_API_VERSION: Final[tuple[int, int]] = (2, 3)

# Consumer-group settings for kafka-python consumers on the mock. The mock holds every JoinGroup of a group
# that already has members for session.timeout.ms - 1 s before it elects a leader, even when all members have
# rejoined (real Kafka answers as soon as they have), and kafka-python's default for api_version < 3.0 is
# 30 s: a second member or a metadata-triggered rejoin would stall ~29 s. 6 s keeps that stall at ~5 s while
# staying far above the heartbeat interval (kafka-python warns above a third of the session timeout).
KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS: Final[dict[str, int]] = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
}

# The screener's AML_* settings for running against the mock, in one place (demo, tests, benchmarks):
# - the pinned kafka-python API version and the short session timeout explained above;
# - a 10 ms fetch wait: the mock answers an empty Fetch only after the full fetch.max.wait.ms even when data
#   arrives meanwhile (rdkafka_mock_handlers.c says so itself), which with kafka-python's 500 ms default adds
#   up to half a second of latency to a steady stream. Real Kafka answers as soon as data is there.
MOCK_SCREENER_ENV: Final[dict[str, str]] = {
    "AML_KAFKA_API_VERSION": ".".join(map(str, KAFKA_PYTHON_API_VERSION)),
    "AML_KAFKA_SESSION_TIMEOUT_MS": str(KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS["session_timeout_ms"]),
    "AML_KAFKA_FETCH_MAX_WAIT_MS": "10",
}


class EmbeddedStack:
    """A mock Kafka cluster and a redis-server, as one context manager.

    ``topics`` maps topic name to partition count; all get ``replication_factor`` (default ``min(3,
    brokers)``). With ``broker_in_subprocess=True`` the cluster runs in a child Python process
    (:class:`MockKafkaClusterProcess`), which keeps its threads out of a benchmark's measurements.

    Nothing starts until ``__enter__`` (or :meth:`start`); the attributes raise before that.
    """

    def __init__(
        self,
        brokers: int = 1,
        topics: Mapping[str, int] | None = None,
        replication_factor: int | None = None,
        broker_in_subprocess: bool = False,
        *,
        redis_port: int | None = None,
        redis_args: Sequence[str] = (),
        group_initial_rebalance_delay_ms: int = 0,
    ) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, got {brokers}")
        if replication_factor is not None and not 1 <= replication_factor <= brokers:
            raise ValueError(f"replication_factor must be 1..{brokers}, got {replication_factor}")
        self._brokers = brokers
        self._topics = dict(topics or {})
        self._replication_factor = replication_factor
        self._broker_in_subprocess = broker_in_subprocess
        self._redis_port = redis_port
        self._redis_args = list(redis_args)
        self._rebalance_delay_ms = group_initial_rebalance_delay_ms
        self._kafka: MockKafkaCluster | MockKafkaClusterProcess | None = None
        self._redis: RedisServer | None = None
        self._exit_stack: contextlib.ExitStack | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the cluster (with its topics), then Redis. On failure, what already started is stopped."""
        if self._exit_stack is not None:
            return self
        with contextlib.ExitStack() as stack:
            kafka: MockKafkaCluster | MockKafkaClusterProcess
            if self._broker_in_subprocess:
                kafka = MockKafkaClusterProcess(
                    self._brokers,
                    topics=[(name, parts, self._replication_factor) for name, parts in self._topics.items()],
                    group_initial_rebalance_delay_ms=self._rebalance_delay_ms,
                )
                stack.callback(kafka.close)
            else:
                kafka = MockKafkaCluster(self._brokers, group_initial_rebalance_delay_ms=self._rebalance_delay_ms)
                stack.callback(kafka.close)
                for name, partitions in self._topics.items():
                    kafka.create_topic(name, partitions, self._replication_factor)
            redis_server = RedisServer(self._redis_port, extra_args=self._redis_args)
            stack.callback(redis_server.close)  # also removes its directory if start() fails
            redis_server.start()
            self._kafka, self._redis = kafka, redis_server
            # Success: keep everything running; close() unwinds in reverse order (Redis, then Kafka).
            self._exit_stack = stack.pop_all()
        return self

    def close(self) -> None:
        """Stop Redis and the cluster. Idempotent; safe after a failed start."""
        exit_stack, self._exit_stack = self._exit_stack, None
        self._kafka = self._redis = None
        if exit_stack is not None:
            exit_stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- what clients need --------------------------------------------------------------------------------

    @property
    def kafka(self) -> KafkaClusterControl:
        """The cluster, for fault injection (``broker_down``, ``fail_over``, ``push_request_errors``...)."""
        if self._kafka is None:
            raise RuntimeError("EmbeddedStack is not started (use it as a context manager or call start())")
        return self._kafka

    @property
    def redis(self) -> RedisServer:
        if self._redis is None:
            raise RuntimeError("EmbeddedStack is not started (use it as a context manager or call start())")
        return self._redis

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection settings for kafka-python 3: ``KafkaConsumer(topic, **stack.kafka_python_config())``."""
        return {"bootstrap_servers": self.bootstrap_servers, "api_version": KAFKA_PYTHON_API_VERSION}

    def confluent_config(self) -> dict[str, Any]:
        """Connection settings for confluent-kafka clients (librdkafka negotiates versions by itself)."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def __repr__(self) -> str:
        if self._kafka is None or self._redis is None:
            return f"EmbeddedStack(brokers={self._brokers}, stopped)"
        return f"EmbeddedStack(kafka={self._kafka.bootstrap_servers}, redis={self._redis.url})"
