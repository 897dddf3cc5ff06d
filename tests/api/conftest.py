"""Fixtures of the pre-screen API tests: a real redis-server with the bundled OFAC sample, and `aml-screener api`
processes (the installed entry point, configured by AML_* variables) against it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from aml_screener.demo.sample import load_sample
from aml_screener.devstack.api_process import ApiProcess
from aml_screener.devstack.redis_server import RedisServer
from aml_screener.watchlist.store import WatchlistStore

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def loaded_redis(redis_server: RedisServer) -> RedisServer:
    load_sample(WatchlistStore(redis.Redis.from_url(redis_server.url, decode_responses=True)))
    return redis_server


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
