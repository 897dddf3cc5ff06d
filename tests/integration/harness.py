"""Helpers for integration tests: run real `aml-screener run` processes against the embedded stack and read
everything they produce.

Nothing here is a mock: the screener is the installed entry point in a child process, configured only through
AML_* variables; the broker is real Apache Kafka (the session's shared 3-node cluster, tests/conftest.py) unless a
test asks for librdkafka's mock to inject request errors; Redis is a real redis-server.

Tests share the Kafka cluster, so each one works in an IsolatedStack: its own redis-server and its own topics
(unique names, passed to the screener through AML_KAFKA_*_TOPIC), deleted when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from aml_screener.demo.sample import load_sample, sample_listings
from aml_screener.devstack.generator import EventGenerator, GeneratedEvent
from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.redis_server import RedisServer
from aml_screener.devstack.screener_process import screener_env, start_screener
from aml_screener.devstack.stack import BrokerKind, Brokers, EmbeddedStack
from aml_screener.screener.codec import EventEncoder, FramedReader
from aml_screener.screener.schemas import DEPOSIT_RECEIVED, WITHDRAWAL_REQUESTED, LocalSchemaRepository, SchemaCatalog
from aml_screener.screening.records import Direction
from aml_screener.screening.watchlist import Listing
from aml_screener.watchlist.store import WatchlistStore

INPUT = "withdrawals.requested"
DECISIONS = "screening.decisions"
FLAGGED = "withdrawals.flagged"
DLQ = "withdrawals.requested.dlq"
HOLD = "withdrawals.held"
DEPOSITS = "deposits.received"
DEPOSIT_FLAGGED = "deposits.flagged"
DEPOSIT_DLQ = "deposits.received.dlq"
DEPOSIT_HOLD = "deposits.held"
TOPICS = {
    INPUT: 4,
    DECISIONS: 4,
    FLAGGED: 2,
    DLQ: 1,
    HOLD: 1,
    DEPOSITS: 2,
    DEPOSIT_FLAGGED: 1,
    DEPOSIT_DLQ: 1,
    DEPOSIT_HOLD: 1,
}
# Every input partition a screener of a test's group can be assigned (withdrawals and deposits).
INPUT_PARTITIONS = TOPICS[INPUT] + TOPICS[DEPOSITS]
_ROLES = (INPUT, DECISIONS, FLAGGED, DLQ, HOLD, DEPOSITS, DEPOSIT_FLAGGED, DEPOSIT_DLQ, DEPOSIT_HOLD)

CATALOG = SchemaCatalog()
REPOSITORY = LocalSchemaRepository(CATALOG)


@dataclass(frozen=True)
class Topics:
    """The names of one test's input and output topics (partition counts: TOPICS, by role)."""

    input: str = INPUT
    decisions: str = DECISIONS
    flagged: str = FLAGGED
    dlq: str = DLQ
    hold: str = HOLD
    deposits: str = DEPOSITS
    deposit_flagged: str = DEPOSIT_FLAGGED
    deposit_dlq: str = DEPOSIT_DLQ
    deposit_hold: str = DEPOSIT_HOLD

    @classmethod
    def unique(cls) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(*(f"{name}.{tag}" for name in _ROLES))

    def by_role(self) -> dict[str, str]:
        """Role (the default topic name) -> this test's topic name."""
        return dict(zip(_ROLES, astuple(self), strict=True))

    def partitions(self) -> dict[str, int]:
        return {name: TOPICS[role] for role, name in self.by_role().items()}

    def env(self) -> dict[str, str]:
        """The screener's AML_* topic settings."""
        return {
            "AML_KAFKA_INPUT_TOPIC": self.input,
            "AML_KAFKA_DECISIONS_TOPIC": self.decisions,
            "AML_KAFKA_FLAGGED_TOPIC": self.flagged,
            "AML_KAFKA_DEAD_LETTER_TOPIC": self.dlq,
            "AML_KAFKA_HOLD_TOPIC": self.hold,
            "AML_KAFKA_DEPOSIT_TOPIC": self.deposits,
            "AML_KAFKA_DEPOSIT_FLAGGED_TOPIC": self.deposit_flagged,
            "AML_KAFKA_DEPOSIT_DEAD_LETTER_TOPIC": self.deposit_dlq,
            "AML_KAFKA_DEPOSIT_HOLD_TOPIC": self.deposit_hold,
        }


class IsolatedStack:
    """One test's stack: a broker (the shared real cluster, or a mock of its own), a redis-server of its own and
    topics of its own. Offers what tests used from EmbeddedStack, plus the topic names."""

    def __init__(self, stack: EmbeddedStack, topics: Topics) -> None:
        self.embedded = stack
        self.topics = topics

    @property
    def bootstrap_servers(self) -> str:
        return self.embedded.bootstrap_servers

    @property
    def redis_url(self) -> str:
        return self.embedded.redis_url

    @property
    def redis(self) -> RedisServer:
        return self.embedded.redis

    @property
    def kafka(self) -> Brokers:
        return self.embedded.kafka

    @property
    def cluster(self) -> KafkaCluster:
        """The real cluster (node faults: kill -9, restart, freeze)."""
        return self.embedded.cluster

    @property
    def is_mock(self) -> bool:
        return self.embedded.is_mock

    @property
    def broker_label(self) -> str:
        """Which broker a result was measured on (the fault table's column)."""
        if self.is_mock:
            return "librdkafka mock"
        return f"Kafka {self.cluster.version} x{self.cluster.broker_count}"

    def kafka_python_config(self) -> dict[str, Any]:
        return self.embedded.kafka_python_config()


@contextlib.contextmanager
def isolated_stack(
    kafka_cluster: KafkaCluster | None,
    *,
    broker: BrokerKind = "kafka",
    brokers: int = 1,
    redis_args: Sequence[str] = (),
) -> Iterator[IsolatedStack]:
    """An IsolatedStack on the shared cluster (``kafka_cluster``), or with ``broker="mock"`` on a mock cluster of
    its own (``brokers`` brokers, default topic names). Topics created on the shared cluster are deleted after."""
    if broker == "mock":
        with EmbeddedStack(brokers=brokers, topics=Topics().partitions(), redis_args=redis_args) as stack:
            yield IsolatedStack(stack, Topics())
        return
    if kafka_cluster is None:
        raise ValueError("a real-Kafka IsolatedStack needs the shared cluster (the kafka_cluster fixture)")
    topics = Topics.unique()
    try:
        with EmbeddedStack(kafka_cluster=kafka_cluster, topics=topics.partitions(), redis_args=redis_args) as stack:
            yield IsolatedStack(stack, topics)
    finally:
        # Fire and forget: the next test does not wait for the deletion, and a failure only leaves a topic behind.
        with contextlib.suppress(Exception):
            kafka_cluster.admin().delete_topics(list(topics.partitions()), operation_timeout=0)


def encoder(name: str = WITHDRAWAL_REQUESTED) -> EventEncoder:
    entry = CATALOG.current(name)
    return EventEncoder(entry.schema, entry.schema_id)


def load_bundled_watchlist(redis_url: str) -> list[tuple[str, Listing]]:
    """Sync the bundled OFAC sample into this Redis; return its (key, listing) pairs for the generator."""
    load_sample(WatchlistStore(redis.Redis.from_url(redis_url, decode_responses=True)))
    return sample_listings()


def generate(listings: list[tuple[str, Listing]], count: int, **kwargs: Any) -> list[GeneratedEvent]:
    """Generated events; with ``deposit_share`` a mixed stream of withdrawals and deposits."""
    if kwargs.get("deposit_share"):
        kwargs.setdefault("deposit_encoder", encoder(DEPOSIT_RECEIVED))
    return list(EventGenerator(listings, encoder(), **kwargs).stream(count))


def _target(
    target: IsolatedStack | str, topic: str | None, direction: Direction = Direction.WITHDRAWAL
) -> tuple[str, str]:
    """(bootstrap servers, topic): an IsolatedStack's own input topic of the direction by default (INPUT or
    DEPOSITS for a bare address)."""
    deposit = direction is Direction.DEPOSIT
    if isinstance(target, IsolatedStack):
        return target.bootstrap_servers, topic or (target.topics.deposits if deposit else target.topics.input)
    return target, topic or (DEPOSITS if deposit else INPUT)


def produce(
    target: IsolatedStack | str,
    events: Iterable[GeneratedEvent],
    topic: str | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    partition: int | None = None,
) -> int:
    """Produce generated events with confluent-kafka's Producer (`config` adds producer settings, e.g.
    compression.type); withdrawals to the input topic and deposits to the deposit topic unless `topic` is given;
    to `partition` when given, else by key."""
    bootstrap, _ = _target(target, topic)
    topics = {direction: _target(target, topic, direction)[1] for direction in Direction}
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "log.connection.close": False, **(config or {})}
    )
    count = 0
    for event in events:
        if partition is None:
            producer.produce(topics[event.direction], event.value, event.key)
        else:
            producer.produce(topics[event.direction], event.value, event.key, partition=partition)
        producer.poll(0)
        count += 1
    assert producer.flush(30) == 0, "test input not fully delivered"
    return count


def produce_raw(
    target: IsolatedStack | str,
    values: Iterable[tuple[bytes | None, bytes | None]],
    topic: str | None = None,
    *,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    bootstrap, topic = _target(target, topic)
    producer = Producer({"bootstrap.servers": bootstrap, "log.connection.close": False})
    for key, value in values:
        producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


class ScreenerProcess:
    """One `aml-screener run` child process."""

    def __init__(self, stack: IsolatedStack, *, group: str, instance: str, env: Mapping[str, str] | None = None):
        self.port = free_port()
        self.instance = instance
        self.env = screener_env(
            stack.bootstrap_servers,
            stack.redis_url,
            self.port,
            mock_broker=stack.is_mock,
            extra={
                **stack.topics.env(),
                "AML_KAFKA_GROUP_ID": group,
                "AML_INSTANCE_ID": instance,
                "AML_LOG_FORMAT": "json",
                "AML_LOG_LEVEL": "INFO",
                # Fail closed quickly in outage tests.
                "AML_REDIS_TIMEOUT_SECONDS": "0.5",
                "AML_LOOKUP_RETRY_MAX_SECONDS": "0.5",
                **(env or {}),
            },
        )
        self.log = Path(tempfile.mkstemp(prefix=f"screener-{instance}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ScreenerProcess:
        with self.log.open("ab") as log:
            self.proc = start_screener(self.env, log, death_signal=signal.SIGKILL)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=2) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (like PromQL's ``sum(name{labels})``; 0 when
        there is none), so a query keeps its meaning when a metric gains a label."""
        wanted = {f'{key}="{value}"' for key, value in labels.items()}
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric == name and wanted <= set(label_text.rstrip("}").split(",")):
                total += float(value)
        return total

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"screener {self.instance} exited ({self.proc.returncode}) waiting for {what}:\n" + self.log_tail()
                )
            with contextlib.suppress(OSError, ValueError):
                if predicate():
                    return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n" + self.log_tail())

    def wait_assigned(self, timeout: float = 45) -> list[str]:
        def assigned() -> bool:
            status, body = self.probe("/readyz")
            return status == 200 and bool(body.get("assigned_partitions"))

        self.wait_until(assigned, timeout, "readiness with assigned partitions")
        return list(self.probe("/readyz")[1]["assigned_partitions"])

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Kill it if it still runs, first asking it for every thread's stack (SIGUSR1, written to its log): a
        test that failed shows in its teardown output where each screener was and its last log lines."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            self.proc.kill()
            self.proc.wait(10)
            tail = self.log.read_text(errors="replace").splitlines()[-60:]
            print(f"--- screener {self.instance} (killed at teardown): last log lines and its stacks ---")
            print("\n".join(tail))


@contextlib.contextmanager
def screener_processes(
    stack: IsolatedStack, group: str, env: Mapping[str, str] | None = None
) -> Iterator[Callable[..., ScreenerProcess]]:
    """`start(instance, *, target=None, **AML_env)` runs a screener of `group` (with `env`, then AML_env); every one
    started is killed on exit, so a failing test leaves nothing running."""
    started: list[ScreenerProcess] = []
    common = dict(env or {})

    def start(instance: str = "s1", *, target: IsolatedStack | None = None, **extra: Any) -> ScreenerProcess:
        process = ScreenerProcess(target or stack, group=group, instance=instance, env=common | extra).start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.close()


@dataclass
class Outputs:
    """Everything the screeners produced, decoded."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    decision_values: list[bytes] = field(default_factory=list)  # the framed bytes of each decision, as read
    flagged: list[dict[str, Any]] = field(default_factory=list)  # WithdrawalFlagged
    deposit_flagged: list[dict[str, Any]] = field(default_factory=list)  # DepositFlagged
    # Raw kafka-python records (value = original bytes) of both dead-letter topics; record.topic tells which.
    dead_letters: list[Any] = field(default_factory=list)
    held: list[Any] = field(default_factory=list)  # raw records passed on unscreened (fail-open mode), both inputs

    def decisions_by_event(self) -> dict[str, list[dict[str, Any]]]:
        by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for decision in self.decisions:
            by_event[decision["event_id"]].append(decision)
        return by_event

    def outcome_of(self) -> dict[str, str]:
        return {event: items[0]["decision"] for event, items in self.decisions_by_event().items()}

    def duplicates(self) -> int:
        return sum(len(items) - 1 for items in self.decisions_by_event().values())

    def dead_letter_reasons(self) -> Counter[str]:
        return Counter(dict(record.headers)["aml.dlq.reason"].decode() for record in self.dead_letters)


class OutputReader:
    """Reads the decision, flagged, dead-letter and hold topics from the beginning (no group: assign + seek), as
    every record written (`read_uncommitted`, the default) or as a downstream consumer of an exactly-once screener
    should (`read_committed`: records of aborted transactions never show, open ones not yet)."""

    def __init__(
        self, stack: IsolatedStack, repository: Any = REPOSITORY, *, isolation_level: str = "read_uncommitted"
    ) -> None:
        self.framed = FramedReader(repository)
        self.schema_ids: Counter[int] = Counter()  # framing ids of the decoded outputs
        self.topics = stack.topics
        self.consumer = KafkaConsumer(
            **stack.kafka_python_config(),
            enable_auto_commit=False,
            # The mock broker holds an empty fetch for the whole fetch.max.wait.ms: with the default 500 ms, a
            # reader of partitions spread over three brokers falls far behind a fast screener. (Real Kafka answers
            # as soon as data is there; 10 ms only adds idle polls.)
            fetch_max_wait_ms=10,
            max_poll_records=10_000,
            isolation_level=isolation_level,
        )
        outputs = (DECISIONS, FLAGGED, DLQ, HOLD, DEPOSIT_FLAGGED, DEPOSIT_DLQ, DEPOSIT_HOLD)
        names = self.topics.by_role()
        partitions = [TopicPartition(names[role], p) for role in outputs for p in range(TOPICS[role])]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning()
        self.outputs = Outputs()

    def poll(self, timeout_ms: int = 200) -> None:
        for tp, records in self.consumer.poll(timeout_ms=timeout_ms).items():
            for record in records:
                topics = self.topics
                if tp.topic in (topics.dlq, topics.deposit_dlq):
                    self.outputs.dead_letters.append(record)
                elif tp.topic in (topics.hold, topics.deposit_hold):
                    self.outputs.held.append(record)
                else:
                    schema_id, decoded = self.framed.decode(record.value)
                    self.schema_ids[schema_id] += 1
                    if tp.topic == topics.decisions:
                        self.outputs.decisions.append(decoded)
                        self.outputs.decision_values.append(record.value)
                    elif tp.topic == topics.deposit_flagged:
                        self.outputs.deposit_flagged.append(decoded)
                    else:
                        self.outputs.flagged.append(decoded)

    def read_until(self, predicate: Callable[[Outputs], bool], timeout: float, what: str) -> Outputs:
        deadline = time.monotonic() + timeout
        while not predicate(self.outputs):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}: {len(self.outputs.decisions)} decisions, "
                    f"{len(self.outputs.flagged)} flagged, {len(self.outputs.dead_letters)} dead letters"
                )
            self.poll()
        return self.outputs

    def settle(self, seconds: float = 1.0) -> Outputs:
        """Keep reading for a while (to catch anything extra, e.g. duplicates)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()
        return self.outputs

    def close(self) -> None:
        self.consumer.close()


def all_decided(events: list[GeneratedEvent]) -> Callable[[Outputs], bool]:
    """Every event has a decision or a dead letter."""
    expected_decided = {event.event_id for event in events if event.expected.value != "DEAD_LETTER"}
    expected_dlq = sum(1 for event in events if event.expected.value == "DEAD_LETTER")

    def done(outputs: Outputs) -> bool:
        decided = {decision["event_id"] for decision in outputs.decisions}
        return expected_decided <= decided and len(outputs.dead_letters) >= expected_dlq

    return done
