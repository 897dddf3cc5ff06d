"""The compose stack's Redis, for real: a redis-server started with docker/redis/redis.conf and the ACL file the
redis-acl service writes (its script run here with its environment); the watchlist-sync service's command,
environment and sources.toml (with its bind mounts resolved to the repository) load the list as the writing user;
the screener's environment reads it as the read-only user. Catches ACL rules that are too tight for the code (a
screener that fails closed forever) or too loose (a screener that could write the list)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.redis_server import RedisServer, find_redis_server
from aml_screener.infra.redis_client import redis_client
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.lookup import WatchlistLookup
from tests.deploy.conftest import compose_document, environment_of, interpolate, settings_of
from tests.deploy.test_compose import container_to_host


def _local_redis_version() -> tuple[int, ...]:
    output = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    version = re.search(r"v=(\d+)\.(\d+)", output)
    assert version, output
    return tuple(int(part) for part in version.groups())


def _acl_file(services: dict[str, dict[str, Any]], directory: Path) -> Path:
    """Run the redis-acl service's script (the image's `aml-screener watchlist acl`) with its environment, writing
    into `directory` instead of the shared volume."""
    service = services["redis-acl"]
    volume_target = next(v.split(":")[1] for v in service["volumes"] if v.startswith("redis-acl:"))
    script = service["command"][0].replace(f"{volume_target}/", f"{directory}/")
    if _local_redis_version() < (7, 2):
        # CLIENT SETINFO exists from Redis 7.2 (the compose image is newer, test_compose checks that); an older
        # local redis-server refuses the whole file over that one rule, which only keeps a harmless refusal out
        # of ACL LOG.
        script = script.replace(" --client-setinfo", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AML_")}
    env.update(environment_of(service))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [*service["entrypoint"], script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return directory / "users.acl"


def _redis_arguments(services: dict[str, dict[str, Any]], directory: Path) -> list[str]:
    """redis-server arguments of the compose service: its config file's directives (minus `dir`, which points
    into the container's volume), then its command line with the ACL file taken from `directory`."""
    service = services["redis"]
    command: list[str] = service["command"]
    assert command[0] == "redis-server"
    conf = container_to_host(service, command[1])
    arguments: list[str] = []
    for line in conf.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, *values = shlex.split(line)
        if name != "dir":
            arguments += [f"--{name}", *values]
    acl_file = _acl_file(services, directory)
    rest = command[2:]
    assert rest[:1] == ["--aclfile"]
    return [*arguments, "--aclfile", str(acl_file), *rest[2:]]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return {name: interpolate(service) for name, service in compose_document()["services"].items()}


@pytest.fixture(scope="module")
def server(services: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        find_redis_server()
    except Exception as exc:
        pytest.fail(f"redis-server is needed (scripts/bootstrap.sh installs it): {exc}")
    arguments = _redis_arguments(services, tmp_path_factory.mktemp("redis-acl"))
    with RedisServer(extra_args=arguments) as running:
        yield running


def _sync_config_for_host(service: dict[str, Any], tmp_path: Path) -> Path:
    """The sync service's sources.toml with every container path replaced by its bind-mount source."""
    script = " ".join(service["command"])
    container_config = re.search(r"watchlist sync [^/]*(/\S+\.toml)", script)
    assert container_config, "the sync command names its TOML file"
    text = container_to_host(service, container_config.group(1)).read_text(encoding="utf-8")
    for location in re.findall(r'^\s*location\s*=\s*"(/[^"]+)"', text, flags=re.MULTILINE):
        text = text.replace(f'"{location}"', f'"{container_to_host(service, location)}"')
    host_config = tmp_path / "sources.toml"
    host_config.write_text(text, encoding="utf-8")
    return host_config


def test_sync_user_loads_the_compose_sources_and_screener_user_reads_them(
    server: RedisServer, services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    sync = services["watchlist-sync"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AML_")}
    env.update(environment_of(sync))
    env["AML_REDIS_URL"] = server.url
    result = subprocess.run(
        [sys.executable, "-m", "aml_screener.cli", "watchlist", "sync", "--no-progress",
         str(_sync_config_for_host(sync, tmp_path))],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "activated" in result.stdout

    # The screener's own read path (MULTI/GET/HLEN/HMGET), as the screener user.
    client = redis_client(settings_of(services["screener"], redis_url=server.url))
    lookup = WatchlistLookup(client, WatchlistKeys())
    listed_key, listing = sample_listings()[0]
    found = lookup.lookup([listed_key, "ethereum:0x0000000000000000000000000000000000000000"])
    assert found.size > 0
    assert set(found.matches) == {listed_key}
    assert found.matches[listed_key][0]["list"] == listing.list

    # The change channel the screener subscribes to (hot reload).
    pubsub = client.pubsub()
    pubsub.subscribe(WatchlistKeys().changes)
    assert pubsub.get_message(timeout=2.0)["type"] == "subscribe"
    pubsub.close()


def test_screener_user_cannot_change_the_watchlist(server: RedisServer, services: dict[str, dict[str, Any]]) -> None:
    client = redis_client(settings_of(services["screener"], redis_url=server.url))
    keys = WatchlistKeys()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set(keys.active, "forged")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.publish(keys.changes, "{}")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()


def test_sync_user_is_confined_to_the_watchlist_keys(server: RedisServer, services: dict[str, dict[str, Any]]) -> None:
    client = redis_client(settings_of(services["watchlist-sync"], redis_url=server.url))
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("not-the-watchlist", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.flushall()


def test_unauthenticated_clients_are_refused(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.get(WatchlistKeys().active)


def test_aof_is_written(server: RedisServer) -> None:
    """redis.conf's persistence takes effect (CONFIG GET is an admin command no application user may run, so look
    at what the server wrote: the AOF directory with its manifest)."""
    aof = server.directory / "appendonlydir"
    assert aof.is_dir(), "appendonly yes did not take effect"
    assert list(aof.glob("*.manifest"))
