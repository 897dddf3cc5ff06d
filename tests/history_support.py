"""Helpers for the history's tests: a fresh migrated database per test on the session's PostgreSQL, settings for the
history processes of an IsolatedStack, `aml-screener history index|lookback` child processes, and a reader of the
retroactive-match and delisting topics."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from aml_screener.devstack.generator import GeneratedEvent
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.postgres_server import PostgresServer
from aml_screener.devstack.process import child_process_kwargs
from aml_screener.history.migrate import migrate
from aml_screener.screener.codec import FramedReader
from aml_screener.screening.records import Direction
from tests.integration.harness import REPOSITORY, IsolatedStack


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """A new database on ``server``, migrated; its DSN. Dropped afterwards (with any connection left open)."""
    name = f"history_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.dsn_for("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = server.dsn_for(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    try:
        yield dsn
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(server.dsn_for("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass(frozen=True)
class HistoryTopics:
    retroactive: str
    delisted: str
    dead_letter: str

    @classmethod
    def unique(cls) -> HistoryTopics:
        tag = uuid.uuid4().hex[:8]
        return cls(f"screening.retroactive.{tag}", f"screening.delisted.{tag}", f"screening.history.dlq.{tag}")

    def create(self, stack: IsolatedStack) -> None:
        for topic in (self.retroactive, self.delisted, self.dead_letter):
            stack.kafka.create_topic(topic, 1)

    def env(self) -> dict[str, str]:
        return {
            "AML_HISTORY_RETROACTIVE_TOPIC": self.retroactive,
            "AML_HISTORY_DELISTED_TOPIC": self.delisted,
            "AML_HISTORY_DEAD_LETTER_TOPIC": self.dead_letter,
        }


def history_env(stack: IsolatedStack, dsn: str, topics: HistoryTopics, **extra: str) -> dict[str, str]:
    """The AML_* settings of a history process on this stack and database."""
    return {
        "AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "AML_REDIS_URL": stack.redis_url,
        "AML_HISTORY_DATABASE_URL": dsn,
        **stack.topics.env(),
        **topics.env(),
        "AML_LOG_FORMAT": "json",
        "AML_LOOKUP_RETRY_MAX_SECONDS": "1",
        **extra,
    }


class HistoryProcess:
    """One `aml-screener history index|lookback` child process, with its /healthz, /readyz and /metrics."""

    def __init__(self, command: str, env: Mapping[str, str], name: str) -> None:
        import os

        self.command = command
        self.name = name
        self.port = free_port()
        self.env = {**os.environ, **env, "AML_HTTP_HOST": "127.0.0.1", "AML_HTTP_PORT": str(self.port)}
        self.log = Path(tempfile.mkstemp(prefix=f"history-{name}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HistoryProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aml_screener.cli", "history", self.command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_process_kwargs(signal.SIGKILL),
            )
        return self

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as response:
            text = response.read().decode()
        wanted = {f'{key}="{value}"' for key, value in labels.items()}
        total = 0.0
        for line in text.splitlines():
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
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}")
            with contextlib.suppress(OSError, ValueError):
                if predicate():
                    return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} ({self.name}):\n{self.tail()}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_until(lambda: self.probe("/readyz")[0] == 200, timeout, "readiness")

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(raw))
        return found

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            self.proc.kill()
            self.proc.wait(10)
            print(f"--- {self.name} (killed at teardown): last log lines ---\n{self.tail(60)}")


@contextlib.contextmanager
def history_processes() -> Iterator[Callable[..., HistoryProcess]]:
    """`start(command, env, name)`; every process started is killed on exit."""
    started: list[HistoryProcess] = []

    def start(command: str, env: Mapping[str, str], name: str | None = None) -> HistoryProcess:
        process = HistoryProcess(command, env, name or command).start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.close()


class HistoryReader:
    """Reads the retroactive-match and delisting topics from the beginning (assign + seek, no group)."""

    def __init__(self, stack: IsolatedStack, topics: HistoryTopics) -> None:
        self.framed = FramedReader(REPOSITORY)
        self.topics = topics
        self.consumer = KafkaConsumer(**stack.kafka_python_config(), enable_auto_commit=False, fetch_max_wait_ms=10)
        self.consumer.assign([TopicPartition(topics.retroactive, 0), TopicPartition(topics.delisted, 0)])
        self.consumer.seek_to_beginning()
        self.retroactive: list[dict[str, Any]] = []
        self.delisted: list[dict[str, Any]] = []

    def poll(self, timeout_ms: int = 200) -> None:
        for tp, records in self.consumer.poll(timeout_ms=timeout_ms).items():
            for record in records:
                _schema_id, decoded = self.framed.decode(record.value)
                (self.retroactive if tp.topic == self.topics.retroactive else self.delisted).append(decoded)

    def read_until(self, predicate: Callable[[HistoryReader], bool], timeout: float, what: str) -> HistoryReader:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}: {len(self.retroactive)} retroactive matches, "
                    f"{len(self.delisted)} delisted records"
                )
            self.poll()
        return self

    def settle(self, seconds: float = 1.0) -> HistoryReader:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()
        return self

    def retroactive_events(self) -> set[tuple[str, int]]:
        """(event id, address index) of every retroactive match."""
        return {(r["decision"]["event_id"], r["decision"]["address_index"]) for r in self.retroactive}

    def close(self) -> None:
        self.consumer.close()


def listed_keys(addresses: list[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """(network, address) pairs a list adds -> (their own keys, those plus the keys the list loader derives)."""
    from aml_screener.screening.addresses import normalize_key
    from aml_screener.screening.related import ListingRelations, listing_keys

    direct = {normalize_key(network, address) for network, address in addresses}
    derived = {related.key for key in direct for related in listing_keys(key, ListingRelations())}
    return direct, direct | derived


def touched(events: Iterable[GeneratedEvent], addresses: list[tuple[str, str]]) -> set[tuple[str, int]]:
    """The oracle: (event id, address index) of every screened address of ``events`` that a listing of
    ``addresses`` applies to, from the generator's own record of what it sent: its key is a listed key (or one the
    list loader derives), or it is related to a listed address (its screening keys)."""
    from aml_screener.screening.addresses import InvalidAddress, UnsupportedNetwork, normalize_key
    from aml_screener.screening.related import screening_keys

    direct, stored = listed_keys(addresses)
    found = set()
    for event in events:
        if event.expected.value == "DEAD_LETTER":
            continue
        typed = [event.address] if event.direction is Direction.WITHDRAWAL else list(dict.fromkeys(event.sources))
        for index, address in enumerate(typed):
            try:
                key = normalize_key(event.network, address)
            except (InvalidAddress, UnsupportedNetwork):
                continue
            if key in stored or {related.key for related in screening_keys(key)} & direct:
                found.add((event.event_id, index))
    return found
