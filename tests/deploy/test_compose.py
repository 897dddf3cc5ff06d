"""docker/compose.yaml: valid against the compose specification, sets only settings the code knows, mounts only
files that exist, and wires Kafka, Redis, Prometheus and Grafana the way the screener and the chart expect."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from aml_screener.devstack.kafka_cluster import production_broker_config
from aml_screener.devstack.kafka_dist import KAFKA_VERSION
from aml_screener.infra.settings import Settings
from tests.deploy.conftest import (
    COMPOSE_FILE,
    DOCKER,
    REPO,
    SETTINGS_VARIABLES,
    compose_document,
    environment_of,
    interpolate,
    load_yaml,
    run,
    settings_of,
    tool,
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_document()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: interpolate(service) for name, service in compose["services"].items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path resolved against docker/, container path) of every bind mount (short and long syntax)."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((DOCKER / volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DOCKER / source).resolve(), target))
    return mounts


def container_to_host(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host, through the service's bind mounts."""
    for host, target in sorted(bind_mounts(service), key=lambda mount: -len(mount[1])):
        relative = PurePosixPath(container_path).relative_to(target) if container_path.startswith(target) else None
        if relative is not None:
            return host / relative
    raise AssertionError(f"{container_path} is not inside a bind mount")


def test_compose_file_follows_the_compose_specification() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_aml_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    set_anywhere: set[str] = set()
    for name, service in services.items():
        for variable in environment_of(service):
            if variable.startswith("AML_"):
                assert variable in SETTINGS_VARIABLES, f"{name}: {variable} is not a field of Settings (typo?)"
                set_anywhere.add(variable)
    assert {"AML_KAFKA_BOOTSTRAP_SERVERS", "AML_REDIS_URL", "AML_REDIS_USERNAME", "AML_REDIS_PASSWORD"} <= set_anywhere


def test_settings_in_compose_validate(services: dict[str, dict[str, Any]]) -> None:
    """The values compose passes are accepted by the settings object (the process would exit 2 otherwise)."""
    for name in ("screener", "watchlist-sync"):
        settings = settings_of(services[name])
        assert settings.redis_username, f"{name}: logs in to Redis as its own ACL user"


def test_every_bind_mount_exists_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    mounted = 0
    for name, service in services.items():
        for host, target in bind_mounts(service):
            assert host.exists(), f"{name}: bind mount source {host.relative_to(REPO)} (-> {target}) is missing"
            assert REPO in host.parents, f"{name}: {host} is outside the repository"
            mounted += 1
    assert mounted >= 6


def test_dashboards_and_alert_rules_come_from_the_helm_chart(services: dict[str, dict[str, Any]]) -> None:
    """One source of truth: compose mounts the chart's files, it does not keep copies."""
    chart_files = REPO / "helm" / "aml-screener" / "files"
    prometheus_sources = {host for host, _ in bind_mounts(services["prometheus"])}
    assert chart_files / "prometheus" / "alerts.yml" in prometheus_sources
    grafana_sources = {host for host, _ in bind_mounts(services["grafana"])}
    assert chart_files / "grafana" in grafana_sources
    assert not list(DOCKER.rglob("*.json")), "dashboards belong in helm/aml-screener/files/grafana/"


def test_screener_is_scalable_and_drains_within_its_stop_grace(services: dict[str, dict[str, Any]]) -> None:
    screener = services["screener"]
    # Several replicas of one service: no fixed name, no host port to collide on.
    assert "container_name" not in screener
    assert "ports" not in screener
    assert int(screener["deploy"]["replicas"]) >= 2
    env = environment_of(screener)
    drain = float(env.get("AML_SHUTDOWN_TIMEOUT_SECONDS", Settings.model_fields["shutdown_timeout_seconds"].default))
    grace = screener["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace[:-1]) > drain, "docker would SIGKILL a screener that is still draining"
    assert screener.get("read_only") is True
    assert screener.get("cap_drop") == ["ALL"]


def test_containers_without_http_disable_the_images_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    """The image's HEALTHCHECK probes /healthz; the sync job, the migration and the load generator serve no HTTP
    (the screener, the reporter and the history's indexer and lookback, and the pre-screen API do)."""
    image = services["screener"]["image"]
    for name, service in services.items():
        serving = {"screener", "reporter", "history-indexer", "history-lookback", "api"}
        if service.get("image") == image and name not in serving:
            assert service.get("healthcheck") == {"disable": True}, name


KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")


def test_kafka_runs_kraft_and_init_creates_every_topic_the_screener_uses(services: dict[str, dict[str, Any]]) -> None:
    for node in KAFKA_NODES:
        kafka = environment_of(services[node])
        assert services[node]["image"].startswith("apache/kafka:")
        assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert not any("ZOOKEEPER" in key for key in kafka)
        # KRaft cluster ids are base64url-encoded UUIDs (16 bytes -> 22 characters); anything else fails formatting.
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["CLUSTER_ID"])
        assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    assert len({environment_of(services[node])["KAFKA_NODE_ID"] for node in KAFKA_NODES}) == len(KAFKA_NODES)
    script = " ".join(services["kafka-init"]["command"])
    created = set(re.findall(r"^\s*create ([\w.-]+) ", script, flags=re.MULTILINE))
    topics = {
        str(field.default)
        for name, field in Settings.model_fields.items()
        if name.startswith(("kafka_", "history_")) and name.endswith("_topic")
    }
    assert topics <= created, f"topics the screener uses but kafka-init does not create: {topics - created}"
    obligations = re.escape(Settings.model_fields["kafka_obligations_topic"].default)
    compacted = rf"^\s*create {obligations} 1 --config cleanup.policy=compact$"
    assert re.search(compacted, script, re.MULTILINE), "the reporter's state topic must be compacted"
    assert services["screener"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    bootstrap = settings_of(services["screener"]).kafka_bootstrap_servers.split(",")
    assert sorted(server.split(":")[0] for server in bootstrap) == list(KAFKA_NODES), "the screener knows every node"


def test_compose_runs_the_tested_kafka_version_and_broker_settings(services: dict[str, dict[str, Any]]) -> None:
    """What compose recommends is what the suites ran on: the broker version the embedded cluster resolves from
    Maven Central, and the production settings of the test cluster (replication, min.insync.replicas, no unclean
    election, no auto-created topics)."""
    images = {name: service["image"] for name, service in services.items() if "apache/kafka" in service["image"]}
    assert set(images) == {*KAFKA_NODES, "kafka-init"}
    assert set(images.values()) == {f"apache/kafka:{KAFKA_VERSION}"}, (
        f"tested: Kafka {KAFKA_VERSION}; compose: {images}"
    )
    tested = production_broker_config(len(KAFKA_NODES))
    for node in KAFKA_NODES:
        env = environment_of(services[node])
        compose = {key: str(env.get("KAFKA_" + key.upper().replace(".", "_"))) for key in tested}
        assert compose == tested, f"{node}: broker settings differ from the tested cluster's"


def test_every_topic_is_created_replicated_like_the_tested_cluster(services: dict[str, dict[str, Any]]) -> None:
    script = " ".join(services["kafka-init"]["command"])
    create = re.search(r"create\(\) \{(.*?)\}", script, flags=re.DOTALL)
    assert create is not None
    tested = production_broker_config(len(KAFKA_NODES))
    assert f"--replication-factor {tested['default.replication.factor']}" in create[1]
    assert f"--config min.insync.replicas={tested['min.insync.replicas']}" in create[1]
    audit = ("screening.decisions", "withdrawals.flagged", "withdrawals.requested.dlq", "withdrawals.held")
    operations = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    for topic in audit:
        retention = re.search(rf"create {re.escape(topic)} .*--config retention\.ms=(\d+)", script)
        assert retention is not None, f"{topic}: no retention set"
        assert f"retention.ms={retention[1]}" in operations, "docs/operations.md states the retention compose sets"


def test_redis_acl_rules_come_from_the_code_and_fit_the_redis_version(services: dict[str, dict[str, Any]]) -> None:
    script = services["redis-acl"]["command"][0]
    assert "aml-screener watchlist acl --aclfile" in script
    assert "user default off" in script, "the default user must not stay open"
    assert services["redis"]["depends_on"]["redis-acl"]["condition"] == "service_completed_successfully"
    if "--client-setinfo" in script:
        # The CLIENT SETINFO rule exists from Redis 7.2; an older server rejects the whole ACL file.
        version = re.match(r"redis:(\d+)\.(\d+)", services["redis"]["image"])
        assert version and (int(version[1]), int(version[2])) >= (7, 2)
    screener, sync = environment_of(services["screener"]), environment_of(services["watchlist-sync"])
    assert screener["AML_REDIS_USERNAME"] != sync["AML_REDIS_USERNAME"]
    assert screener["AML_REDIS_PASSWORD"] != sync["AML_REDIS_PASSWORD"]


def test_redis_persists_with_aof() -> None:
    conf = (DOCKER / "redis" / "redis.conf").read_text(encoding="utf-8")
    directives = dict(
        line.split(None, 1) for line in conf.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    assert directives["appendonly"] == "yes"
    assert directives["appendfsync"] in {"everysec", "always"}
    assert directives["maxmemory-policy"] == "noeviction", "an evicted watchlist key is a missed hit"


def test_prometheus_config_is_valid_and_scrapes_every_screener(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config_path = container_to_host(prometheus, "/etc/prometheus/prometheus.yml")
    config = load_yaml(config_path.read_text(encoding="utf-8"))
    # The rule file the compose stack mounts matches the rule_files glob.
    rule_targets = [target for _, target in bind_mounts(prometheus) if target.startswith("/etc/prometheus/rules/")]
    assert rule_targets
    assert all(any(fnmatch.fnmatch(t, pattern) for pattern in config["rule_files"]) for t in rule_targets)
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "aml-screener")
    dns = job["dns_sd_configs"][0]
    assert dns["names"] == ["screener"]
    assert str(dns["port"]) == environment_of(services["screener"])["AML_HTTP_PORT"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run scripts/bootstrap.sh (Debian package prometheus)")
    result = run([promtool, "check", "config", "--syntax-only", str(config_path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_prometheus_datasource_and_the_mounted_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    provisioning = container_to_host(grafana, "/etc/grafana/provisioning")
    datasources = load_yaml((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    prometheus = next(ds for ds in datasources["datasources"] if ds["type"] == "prometheus")
    assert prometheus["url"] == "http://prometheus:9090"
    assert prometheus["isDefault"] is True
    providers = load_yaml((provisioning / "dashboards" / "aml-screener.yml").read_text(encoding="utf-8"))
    path = providers["providers"][0]["options"]["path"]
    dashboards = sorted(container_to_host(grafana, path).glob("*.json"))
    assert dashboards, f"no dashboard JSON reaches {path}"
    for dashboard in dashboards:
        assert json.loads(dashboard.read_text(encoding="utf-8"))["title"]


def test_demo_load_generator_is_behind_a_profile(services: dict[str, dict[str, Any]]) -> None:
    loadgen = services["loadgen"]
    assert loadgen["profiles"] == ["demo"]
    script = container_to_host(loadgen, loadgen["entrypoint"][-1])
    assert script.is_file()
    # It produces to the topic the screener reads.
    assert str(Settings.model_fields["kafka_input_topic"].default) in script.read_text(encoding="utf-8")
