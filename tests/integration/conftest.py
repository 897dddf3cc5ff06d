"""Fixtures for integration tests: an IsolatedStack per test on the session's shared real Kafka cluster (its own
redis-server and uniquely named topics, about 0.3 s), and cleanup of every screener process a test starts, so a
failing test leaves nothing running."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from aml_screener.demo.sample import load_sample
from aml_screener.devstack.api_process import ApiProcess
from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.redis_server import RedisServer
from aml_screener.devstack.schema_registry import ApicurioRegistry
from aml_screener.watchlist.store import WatchlistStore
from tests.integration.harness import IsolatedStack, OutputReader, ScreenerProcess, isolated_stack, screener_processes

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(kafka_cluster: KafkaCluster) -> Iterator[IsolatedStack]:
    with isolated_stack(kafka_cluster) as running:
        yield running


@pytest.fixture
def stack_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., IsolatedStack]]:
    """`stack_factory(redis_args=..., broker="kafka"|"mock", brokers=1)`: more stacks (e.g. a persistent Redis),
    all stopped after the test. The shared cluster is only started when a real-Kafka stack is asked for."""
    with contextlib.ExitStack() as stacks:

        def make(**kwargs: Any) -> IsolatedStack:
            cluster = None if kwargs.get("broker") == "mock" else request.getfixturevalue("kafka_cluster")
            return stacks.enter_context(isolated_stack(cluster, **kwargs))

        yield make


@pytest.fixture
def screeners(stack: IsolatedStack) -> Iterator[Callable[..., ScreenerProcess]]:
    with screener_processes(stack, f"aml-screener-test-{uuid.uuid4().hex[:8]}") as start:
        yield start


@pytest.fixture
def reader(stack: IsolatedStack) -> Iterator[OutputReader]:
    output_reader = OutputReader(stack)
    yield output_reader
    output_reader.close()


@pytest.fixture
def reader_factory() -> Iterator[Callable[[IsolatedStack], OutputReader]]:
    readers: list[OutputReader] = []

    def make(target: IsolatedStack, repository: Any = None) -> OutputReader:
        output_reader = OutputReader(target) if repository is None else OutputReader(target, repository)
        readers.append(output_reader)
        return output_reader

    yield make
    for output_reader in readers:
        output_reader.close()


REPO = Path(__file__).resolve().parents[2]
# Users of the session's registry: (password, Apicurio role).
REGISTRY_USERS = {
    "admin": ("admin-secret", "sr-admin"),
    "reader": ("reader-secret", "sr-readonly"),
}


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApicurioRegistry]:
    """One real Apicurio Registry per test session (a JVM: about 3 s to start, ~300 MB), with basic auth, on a
    free loopback port; fetched into <repo>/.cache by the first use. Its log is copied into pytest's temporary
    directory (kept for the last runs) when the session ends, for failed tests."""
    registry = ApicurioRegistry(cache_dir=REPO / ".cache", users=REGISTRY_USERS)
    try:
        yield registry.start()
    finally:
        shutil.copy(registry.log_path, tmp_path_factory.getbasetemp() / "apicurio-registry.log")
        registry.close()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of its own, for watchlist tests that need no broker."""
    with RedisServer() as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


@pytest.fixture
def store(client: redis.Redis) -> WatchlistStore:
    return WatchlistStore(client)


@pytest.fixture
def loaded_redis(server: RedisServer) -> RedisServer:
    """A redis-server of its own with the bundled OFAC sample loaded."""
    load_sample(WatchlistStore(redis.Redis.from_url(server.url, decode_responses=True)))
    return server


@pytest.fixture
def api_factory() -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(redis_url: str, **env: Any) -> ApiProcess:
        api = ApiProcess(redis_url, env={name: str(value) for name, value in env.items()})
        started.append(api)
        return api.start()

    yield start
    for api in started:
        api.close()


@pytest.fixture
def api(loaded_redis: RedisServer, api_factory: Callable[..., ApiProcess]) -> ApiProcess:
    return api_factory(loaded_redis.url, AML_API_KEYS_RELOAD_SECONDS="0.2").wait_ready()
