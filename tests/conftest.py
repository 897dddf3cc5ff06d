"""Session-wide fixtures: the one real Apache Kafka cluster that the integration and fault suites share.

Three JVMs take 10-30 s to start on 2 cores, so the cluster is started once per test session, the first time a
test asks for it, and every test isolates itself with its own topic names and group ids (tests/integration/
harness.py: IsolatedStack). A test that injects node faults must leave the cluster whole (the `kafka` fixture
heals it after every test). When any test of the session failed, the nodes' logs are kept and their folder is
named at the end of the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.postgres_server import PostgresServer

_KEPT_LOGS: list[Path] = []


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    """A 3-node KRaft cluster (RF 3, min.insync.replicas 2), shared by the whole session."""
    cluster = KafkaCluster(3)
    try:
        cluster.start()
    except BaseException:
        cluster.close(keep_logs=True)
        _KEPT_LOGS.append(cluster.directory)
        raise
    yield cluster
    failed = request.session.testsfailed > 0
    cluster.close(keep_logs=failed)
    if failed:
        _KEPT_LOGS.append(cluster.directory)


@pytest.fixture
def kafka(kafka_cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The shared cluster for a test that kills, stops or freezes nodes: made whole again afterwards."""
    yield kafka_cluster
    kafka_cluster.heal()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server per session (initdb + start: a few seconds), for the history's tests; each test
    gets a database of its own (tests/history_support.py: fresh_database)."""
    with PostgresServer() as server:
        yield server


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for directory in _KEPT_LOGS:
        terminalreporter.write_line(f"Kafka node logs kept (a test failed): {directory}/node-*/server.log")
