"""The embedded local stack: one Kafka cluster plus one Redis, started and stopped together.

The demo, the integration tests and the benchmarks all need "a broker and a Redis on free local ports"; this
module is responsible for bringing both up with the topics they need, exposing the addresses clients connect
to, and tearing everything down on exit, also on an exception or Ctrl-C.

Two brokers are on offer (``broker=``): ``"kafka"``, a real Apache Kafka cluster with one JVM per node
(:mod:`aml_screener.devstack.kafka_cluster`), which the integration and fault suites run on; and ``"mock"``,
librdkafka's mock cluster inside the confluent-kafka wheel (:mod:`aml_screener.devstack.mock_kafka`), which starts
in milliseconds and can inject protocol errors, for the quick demo and request-error tests. A real cluster can
also be shared (``kafka_cluster=``): the stack then creates its topics on it and leaves it running on close, so a
test session starts the JVMs once. What the Redis half can simulate is in :mod:`aml_screener.devstack.redis_server`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Protocol, Self

from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.mock_kafka import KafkaClusterControl, MockKafkaCluster, MockKafkaClusterProcess
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.redis_server import RedisServer

__all__ = [
    "BROKERS",
    "KAFKA_PYTHON_API_VERSION",
    "KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS",
    "MOCK_SCREENER_ENV",
    "BrokerKind",
    "Brokers",
    "EmbeddedStack",
    "free_port",
]

BrokerKind = Literal["mock", "kafka"]
BROKERS: Final[tuple[BrokerKind, ...]] = ("mock", "kafka")

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


class Brokers(Protocol):
    """What both brokers offer (the type of ``EmbeddedStack.kafka``); fault injection is broker-specific, see
    :attr:`EmbeddedStack.mock` and :attr:`EmbeddedStack.cluster`."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def broker_count(self) -> int: ...
    def create_topic(self, name: str, partitions: int, replication_factor: int | None = None) -> None: ...
    def partition_leader(self, topic: str, partition: int) -> int: ...
    def group_coordinator(self, group: str) -> int: ...


class EmbeddedStack:
    """A Kafka cluster (real or mock, see the module docstring) and a redis-server, as one context manager.

    ``topics`` maps topic name to partition count; all get ``replication_factor`` (default ``min(3,
    brokers)``). ``broker`` picks the broker (default ``"mock"``, the demo's); with ``kafka_cluster`` a running
    real cluster is used instead of starting one (``brokers`` is then its node count). With
    ``broker_in_subprocess=True`` the mock runs in a child Python process (:class:`MockKafkaClusterProcess`), which
    keeps its threads out of a benchmark's measurements (a real cluster always runs in its own processes).

    Nothing starts until ``__enter__`` (or :meth:`start`); the attributes raise before that.
    """

    def __init__(
        self,
        brokers: int = 1,
        topics: Mapping[str, int] | None = None,
        replication_factor: int | None = None,
        broker_in_subprocess: bool = False,
        *,
        broker: BrokerKind = "mock",
        kafka_cluster: KafkaCluster | None = None,
        redis_port: int | None = None,
        redis_args: Sequence[str] = (),
        group_initial_rebalance_delay_ms: int = 0,
    ) -> None:
        if broker not in BROKERS:
            raise ValueError(f"broker must be one of {', '.join(BROKERS)}, got {broker!r}")
        if kafka_cluster is not None:
            broker, brokers = "kafka", kafka_cluster.broker_count
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, got {brokers}")
        if replication_factor is not None and not 1 <= replication_factor <= brokers:
            raise ValueError(f"replication_factor must be 1..{brokers}, got {replication_factor}")
        if broker == "kafka" and group_initial_rebalance_delay_ms != 0:
            raise ValueError("group_initial_rebalance_delay_ms is a mock setting (the real cluster uses 0)")
        self._broker: BrokerKind = broker
        self._shared_cluster = kafka_cluster
        self._brokers = brokers
        self._topics = dict(topics or {})
        self._replication_factor = replication_factor
        self._broker_in_subprocess = broker_in_subprocess
        self._redis_port = redis_port
        self._redis_args = list(redis_args)
        self._rebalance_delay_ms = group_initial_rebalance_delay_ms
        self._kafka: MockKafkaCluster | MockKafkaClusterProcess | KafkaCluster | None = None
        self._redis: RedisServer | None = None
        self._exit_stack: contextlib.ExitStack | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the cluster (with its topics), then Redis. On failure, what already started is stopped."""
        if self._exit_stack is not None:
            return self
        with contextlib.ExitStack() as stack:
            kafka: MockKafkaCluster | MockKafkaClusterProcess | KafkaCluster
            if self._broker == "kafka":
                if self._shared_cluster is not None:
                    kafka = self._shared_cluster  # not ours: left running on close
                else:
                    kafka = KafkaCluster(self._brokers)
                    stack.callback(kafka.close)
                    kafka.start()
                for name, partitions in self._topics.items():
                    kafka.create_topic(name, partitions, self._replication_factor)
            elif self._broker_in_subprocess:
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
    def broker(self) -> BrokerKind:
        return self._broker

    @property
    def is_mock(self) -> bool:
        return self._broker == "mock"

    @property
    def kafka(self) -> Brokers:
        """The cluster, whichever it is (addresses, topics, who leads what)."""
        if self._kafka is None:
            raise RuntimeError("EmbeddedStack is not started (use it as a context manager or call start())")
        return self._kafka

    @property
    def mock(self) -> KafkaClusterControl:
        """The mock cluster, for its fault injection (``fail_over``, ``push_request_errors``, request tracking)."""
        self.kafka  # noqa: B018  (raises when not started)
        kafka = self._kafka
        if not isinstance(kafka, MockKafkaCluster | MockKafkaClusterProcess):
            raise TypeError(f"{self!r} runs no mock cluster; request-error injection needs broker='mock'")
        return kafka

    @property
    def cluster(self) -> KafkaCluster:
        """The real cluster, for its fault injection (kill -9, restart, SIGSTOP/SIGCONT of a node)."""
        self.kafka  # noqa: B018  (raises when not started)
        kafka = self._kafka
        if not isinstance(kafka, KafkaCluster):
            raise TypeError(f"{self!r} runs no real Kafka cluster; node faults need broker='kafka'")
        return kafka

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
        """Connection settings for kafka-python 3: ``KafkaConsumer(topic, **stack.kafka_python_config())``. Only
        the mock needs a pinned ``api_version``; against real Kafka kafka-python negotiates (a pin would cap the
        protocol, and Kafka 4 removed the old versions)."""
        config: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.is_mock:
            config["api_version"] = KAFKA_PYTHON_API_VERSION
        return config

    def screener_env(self) -> dict[str, str]:
        """The AML_* settings a screener needs for this broker beyond the addresses (the mock's pin and timings)."""
        return dict(MOCK_SCREENER_ENV) if self.is_mock else {}

    def confluent_config(self) -> dict[str, Any]:
        """Connection settings for confluent-kafka clients (librdkafka negotiates versions by itself)."""
        return {"bootstrap.servers": self.bootstrap_servers}

    def __repr__(self) -> str:
        if self._kafka is None or self._redis is None:
            return f"EmbeddedStack({self._broker}, brokers={self._brokers}, stopped)"
        return f"EmbeddedStack({self._broker}={self._kafka.bootstrap_servers}, redis={self._redis.url})"
