"""Fault-injection fixtures: the session's real 3-node Kafka cluster (RF 3, min.insync.replicas 2) with topics of the
test's own and a real redis-server with an append-only file (so a killed Redis comes back with its data, like a
persistent production Redis), real screener processes, and the per-run results table (printed at the end; written
to $AML_FAULTS_REPORT if set). Every test leaves the cluster whole: killed nodes restarted, frozen nodes thawed,
every partition fully replicated again (the `kafka` fixture of tests/conftest.py).

Every scenario on real Kafka runs once per processing guarantee (the `guarantee` fixture): at-least-once, judged on
everything written, and exactly-once, judged as a downstream read_committed consumer reads it. The reduced run of
`make test` runs the SIGKILL and rebalance scenarios under both and each other one under one guarantee (its
`reduced_to` marker), so each guarantee still meets node kills, outages and poison input there."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aml_screener.devstack.kafka_cluster import KafkaCluster
from tests.faults.oracle import AT_LEAST_ONCE, EXACTLY_ONCE, Row, markdown_table
from tests.integration.harness import (
    IsolatedStack,
    OutputReader,
    ScreenerProcess,
    isolated_stack,
    load_bundled_watchlist,
    screener_processes,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

_ROWS: list[Row] = []
PERSISTENT_REDIS = ("--appendonly", "yes", "--appendfsync", "always")
# `make faults` runs the full suite (AML_FAULTS_FULL=1); `make test` (and CI) a reduced one.
FULL = os.environ.get("AML_FAULTS_FULL") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In the reduced run, a scenario marked `reduced_to(guarantee)` runs under that guarantee only (skipped at
    collection, so no stack is set up for it); `make faults` runs every real-Kafka scenario under both."""
    if FULL:
        return
    for item in items:
        marker = item.get_closest_marker("reduced_to")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or "guarantee" not in callspec.params:
            continue
        if callspec.params["guarantee"] != marker.args[0]:
            reason = f"full fault suite only (make faults); make test runs this scenario {marker.args[0]}"
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def cluster(kafka: KafkaCluster) -> Iterator[IsolatedStack]:
    """The test's stack on the shared cluster, with the bundled watchlist loaded once (one version per test, so a
    re-read event's duplicate carries the same decision id)."""
    with isolated_stack(kafka, redis_args=PERSISTENT_REDIS) as running:
        load_bundled_watchlist(running.redis_url)
        yield running


@pytest.fixture
def group() -> str:
    return f"aml-screener-faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=[AT_LEAST_ONCE, EXACTLY_ONCE])
def guarantee(request: pytest.FixtureRequest) -> str:
    """AML_PROCESSING_GUARANTEE of every screener the scenario starts."""
    return str(request.param)


@pytest.fixture
def screeners(cluster: IsolatedStack, group: str, guarantee: str) -> Iterator[Callable[..., ScreenerProcess]]:
    with screener_processes(cluster, group, {"AML_PROCESSING_GUARANTEE": guarantee}) as start:
        yield start


@pytest.fixture
def reader(cluster: IsolatedStack, guarantee: str) -> Iterator[OutputReader]:
    """The outputs as the oracle judges them: everything written (at-least-once), or what a read_committed consumer
    sees (exactly-once)."""
    isolation = "read_committed" if guarantee == EXACTLY_ONCE else "read_uncommitted"
    output_reader = OutputReader(cluster, isolation_level=isolation)
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
