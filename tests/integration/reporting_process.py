"""`aml-screener report` as the tests run it: `report serve` as a child process (a ScreenerProcess with another
command: same environment, probes, metrics and log handling) and the one-shot commands, on an IsolatedStack's
broker and flagged topics, with an obligations topic of its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from aml_screener.devstack.process import child_process_kwargs
from aml_screener.reporting.obligations import Obligation
from tests.integration.harness import IsolatedStack, ScreenerProcess

REPORT_SERVE = [sys.executable, "-m", "aml_screener.cli", "report", "serve"]


def reporting_env(obligations_topic: str, group: str) -> dict[str, str]:
    """The reporter's own settings; the flagged topics are the stack's (ScreenerProcess sets them)."""
    return {"AML_KAFKA_OBLIGATIONS_TOPIC": obligations_topic, "AML_REPORTING_GROUP_ID": group}


def unique_obligations_topic() -> str:
    return f"compliance.obligations.{uuid.uuid4().hex[:8]}"


class ReporterProcess(ScreenerProcess):
    """One `aml-screener report serve` child process."""

    def start(self) -> ReporterProcess:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                REPORT_SERVE,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_process_kwargs(signal.SIGKILL),
            )
        return self

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        self.wait_until(lambda: self.probe("/readyz")[0] == 200, timeout, "reporter ready (state rebuilt)")
        return self.probe("/readyz")[1]


def run_report(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A one-shot `aml-screener report ...` command (list, drafts, file)."""
    return subprocess.run(
        [sys.executable, "-m", "aml_screener.cli", "report", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def produce_values(bootstrap_servers: str, topic: str, values: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap_servers, "log.connection.close": False})
    for key, value in values:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0, "test input not fully delivered"


def read_topic(stack: IsolatedStack, topic: str) -> list[tuple[str, Obligation | None]]:
    """Every record of the obligations topic, in order: (key, obligation or None for a tombstone)."""
    consumer = KafkaConsumer(**stack.kafka_python_config(), enable_auto_commit=False, fetch_max_wait_ms=10)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[tuple[str, Obligation | None]] = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=200).values():
                records += [(r.key.decode(), None if r.value is None else Obligation.from_json(r.value)) for r in batch]
        return records
    finally:
        consumer.close()


def committed(stack: IsolatedStack, group: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offsets (-1: none)."""
    consumer = KafkaConsumer(**stack.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        return {tp: consumer.committed(tp) or -1 for tp in partitions}
    finally:
        consumer.close()


def list_json(env: Mapping[str, str], status: str = "all") -> list[Obligation]:
    result = run_report(env, "list", "--status", status, "--json")
    assert result.returncode == 0, result.stderr
    return [Obligation.model_validate(json.loads(line)) for line in result.stdout.splitlines() if line.strip()]
