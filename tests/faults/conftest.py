"""Fault-injection fixtures: a 3-broker Kafka-protocol cluster (replication factor 3) and a real redis-server with
an append-only file (so a killed Redis comes back with its data, like a persistent production Redis), real
screener processes, and the per-run results table (printed at the end; written to $AML_FAULTS_REPORT if set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aml_screener.devstack.stack import EmbeddedStack
from tests.faults.oracle import Row, markdown_table
from tests.integration.harness import TOPICS, OutputReader, ScreenerProcess, screener_processes

pytestmark = [pytest.mark.faults, pytest.mark.integration]

_ROWS: list[Row] = []


@pytest.fixture
def cluster() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(
        brokers=3,
        topics=TOPICS,
        replication_factor=3,
        redis_args=("--appendonly", "yes", "--appendfsync", "always"),
    ) as running:
        yield running


@pytest.fixture
def group() -> str:
    return f"aml-screener-faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def screeners(cluster: EmbeddedStack, group: str) -> Iterator[Callable[..., ScreenerProcess]]:
    with screener_processes(cluster, group) as start:
        yield start


@pytest.fixture
def reader(cluster: EmbeddedStack) -> Iterator[OutputReader]:
    output_reader = OutputReader(cluster)
    yield output_reader
    output_reader.close()


@pytest.fixture
def report() -> Callable[[Row], None]:
    return _ROWS.append


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    table = markdown_table(_ROWS)
    terminalreporter.write_sep("=", "fault injection: accounting per scenario")
    terminalreporter.write_line(table)
    target = os.environ.get("AML_FAULTS_REPORT")
    if target:
        Path(target).write_text(table + "\n")
