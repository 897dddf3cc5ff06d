"""helm/aml-screener rendered by helm inside pytest with several value sets; every object validated by
kubernetes-validate --strict (oldest supported and newest known Kubernetes), and the properties operators rely on
asserted on the objects: probes, security context, grace period vs drain bound, selectors, secrets, dashboards,
alert rules, the sync CronJob, the autoscaler bound and the values schema."""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aml_screener.screening.policy import DEFAULT_POLICY, parse_policy
from aml_screener.watchlist.sync import load_config
from tests.deploy.conftest import (
    CHART,
    SECRET_VARIABLES,
    SETTINGS_VARIABLES,
    helm_binary,
    load_yaml,
    load_yaml_all,
    run,
    tool,
)

RELEASE = "prod"
NAMESPACE = "screening"
# Oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# A keys file as `aml-screener api keys create` writes it (a hash, never a key).
API_KEYS_FILE = '{"keys": [{"id": "3fa91c0b7d2e", "name": "withdrawal-form", "sha256": "' + "0" * 64 + '"}]}'

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {
        "image": {"digest": "sha256:" + "ab" * 32},
        "config": {
            "AML_KAFKA_BOOTSTRAP_SERVERS": "kafka-0.kafka:9092,kafka-1.kafka:9092",
            "AML_REDIS_URL": "rediss://redis:6380/0",
            "AML_REDIS_USERNAME": "aml-screener",
            "AML_KAFKA_MAX_POLL_RECORDS": 1000,
            "AML_HISTORY_DATABASE_URL": "postgresql://aml@history-db:5432/aml?sslmode=verify-full",
        },
        "secret": {"values": {"AML_REDIS_PASSWORD": "reader-password", "AML_HISTORY_DATABASE_PASSWORD": "pg"}},
        "history": {"enabled": True, "indexer": {"replicas": 3}, "env": {"AML_HISTORY_LOOKBACK_DAYS": 730}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        "kafka": {"inputPartitions": 6},
        "reporting": {"env": {"AML_REPORTING_INSTITUTION_NAME": "Example Exchange LLC"}},
        "api": {
            "enabled": True,
            "keys": {"file": API_KEYS_FILE},
            "clientsFrom": [{"podSelector": {"matchLabels": {"app": "withdrawal-service"}}}],
            "env": {"AML_API_MAX_BATCH": 500},
        },
        "watchlistSync": {
            "timeZone": "Etc/UTC",
            "env": {"AML_REDIS_USERNAME": "aml-sync"},
            "secretValues": {"AML_REDIS_PASSWORD": "writer-password"},
            "extraVolumes": [{"name": "lists", "secret": {"secretName": "exchange-lists"}}],
            "extraVolumeMounts": [{"name": "lists", "mountPath": "/etc/aml-screener/lists", "readOnly": True}],
        },
    },
    "existing-secret": {
        "secret": {"existingSecret": "aml-screener-credentials"},
        "watchlistSync": {"existingSecret": "aml-sync-credentials", "env": {"AML_REDIS_USERNAME": "aml-sync"}},
        "config": {"AML_REDIS_USERNAME": "aml-screener", "AML_REDIS_URL": "redis://redis:6379/0"},
        "api": {"enabled": True, "keys": {"existingSecret": "aml-api-keys"}},
    },
    "hpa": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}, "kafka": {"inputPartitions": 4}},
    "minimal": {
        "watchlistSync": {"enabled": False},
        "reporting": {"enabled": False},
        "dashboards": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "serviceAccount": {"create": False},
    },
}


class HelmError(Exception):
    pass


def helm_template(values: dict[str, Any], tmp_dir: Path, name: str = "values") -> str:
    values_file = tmp_dir / f"{name}.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    result = run([
        helm_binary(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSIONS[0], "-f", str(values_file),
    ])  # fmt: skip
    if result.returncode != 0:
        raise HelmError(result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def rendered_text(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp_dir = tmp_path_factory.mktemp("helm")
    return {name: helm_template(values, tmp_dir, name) for name, values in VALUE_SETS.items()}


@pytest.fixture(scope="module")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    # The loader rejects duplicate keys (e.g. a label emitted twice), which kubectl would reject or mangle.
    return {name: load_yaml_all(text) for name, text in rendered_text.items()}


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    """The one object of `kind` (of `component`: the screener's and the reporter's Deployment and Service)."""
    found = objects(docs, kind)
    if component is not None:
        found = [doc for doc in found if doc["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod template) of every workload."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in {"Deployment", "Job"}:
            yield name, doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield name, doc["spec"]["jobTemplate"]["spec"]["template"]


def screener_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment", "screener")["spec"]["template"]["spec"]["containers"]
    return next(container for container in containers if container["name"] == "screener")


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- tooling: lint, schema validation of every object ------------------------------------------------------


@pytest.mark.parametrize("value_set", ["defaults", "everything"])
def test_helm_lint_strict(value_set: str, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(VALUE_SETS[value_set]), encoding="utf-8")
    result = run([helm_binary(), "lint", "--strict", str(CHART), "-f", str(values_file)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_object_passes_kubernetes_validate_strict(
    value_set: str, kube_version: str, rendered_text: dict[str, str], rendered: dict[str, Any], tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(rendered_text[value_set], encoding="utf-8")
    result = run([tool("kubernetes-validate"), "--strict", "-k", kube_version, str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr
    # Every built-in object was checked against a schema (none skipped); CRDs have none in the tool.
    core = [doc for doc in rendered[value_set] if doc["kind"] not in CRD_KINDS]
    assert result.stdout.count(" passed for resource ") == len(core)


# --- the screener Deployment --------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_pod_is_locked_down(value_set: str, rendered: dict[str, Any]) -> None:
    specs = list(pod_specs(rendered[value_set]))
    assert specs
    for name, template in specs:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in security["capabilities"], name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
            # A read-only root needs a writable /tmp for the sync's downloads and any library's scratch files.
            assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"]), name


def test_probes_use_healthz_for_liveness_and_readyz_for_readiness(rendered: dict[str, Any]) -> None:
    container = screener_container(rendered["defaults"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {item["name"]: item.get("value") for item in container["env"]}
    # The probed port is the port the screener serves on.
    assert str(ports["http"]) == env["AML_HTTP_PORT"]


@pytest.mark.parametrize("drain_seconds", [20, 45])
def test_grace_period_exceeds_the_drain_bound(drain_seconds: int, tmp_path: Path) -> None:
    docs = load_yaml_all(helm_template({"shutdownTimeoutSeconds": drain_seconds}, tmp_path))
    pod = one(docs, "Deployment", "screener")["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in screener_container(docs)["env"]}
    assert env["AML_SHUTDOWN_TIMEOUT_SECONDS"] == str(drain_seconds)
    # SIGTERM -> drain (<= AML_SHUTDOWN_TIMEOUT_SECONDS) -> commit, leave the group, flush: all before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] == drain_seconds + 10


def test_instance_id_is_the_pod_name(rendered: dict[str, Any]) -> None:
    env = {item["name"]: item for item in screener_container(rendered["defaults"])["env"]}
    assert env["AML_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_image_digest_pins_what_runs(rendered: dict[str, Any]) -> None:
    assert screener_container(rendered["everything"])["image"].endswith("@sha256:" + "ab" * 32)
    assert screener_container(rendered["defaults"])["image"] == "aml-screener:0.1.0"


def test_rolling_update_never_drops_below_the_requested_members(rendered: dict[str, Any]) -> None:
    strategy = one(rendered["defaults"], "Deployment", "screener")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


# --- selectors: Service, PDB, ServiceMonitor, NetworkPolicy find the right pods ----------------------------


@pytest.mark.parametrize("value_set", ["defaults", "everything"])
def test_selectors_pick_the_screener_pods_and_only_them(value_set: str, rendered: dict[str, Any]) -> None:
    docs = rendered[value_set]
    deployment = one(docs, "Deployment", "screener")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert matches(selector, pod_labels)
    other_labels = [
        template["metadata"]["labels"]
        for name, template in pod_specs(docs)
        if name != f"Deployment/{RELEASE}-aml-screener"
    ]
    service = one(docs, "Service", "screener")
    assert matches(service["spec"]["selector"], pod_labels)
    # The screeners' Service must not also pick the sync job's pods (they serve no /metrics) or the reporter's.
    assert other_labels and not any(matches(service["spec"]["selector"], labels) for labels in other_labels)
    assert matches(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)


def test_pdb_still_lets_nodes_drain_when_screeners_fail_closed(rendered: dict[str, Any]) -> None:
    pdb = one(rendered["defaults"], "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_service_monitor_scrapes_the_service_as_job_aml_screener(rendered: dict[str, Any]) -> None:
    docs = rendered["everything"]
    service = one(docs, "Service", "screener")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The job label comes from this Service label: job="aml-screener" whatever the release is called.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "aml-screener"


def test_network_policies_cover_screeners_and_sync_jobs(rendered: dict[str, Any]) -> None:
    docs = rendered["everything"]
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in objects(docs, "NetworkPolicy")}
    screener = policies[f"{RELEASE}-aml-screener"]
    sync = policies[f"{RELEASE}-aml-screener-sync"]
    pod_labels = one(docs, "Deployment", "screener")["spec"]["template"]["metadata"]["labels"]
    assert matches(screener["podSelector"]["matchLabels"], pod_labels)
    assert screener["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert screener["ingress"][0]["from"] == VALUE_SETS["everything"]["networkPolicy"]["metricsFrom"]
    for name, template in pod_specs(docs):
        if name.startswith(("CronJob", "Job")) and "history" not in name:
            assert matches(sync["podSelector"]["matchLabels"], template["metadata"]["labels"])

    def egress_ports(spec: dict[str, Any]) -> set[int]:
        return {port["port"] for rule in spec["egress"] for port in rule.get("ports", [])}

    assert {53, 9092, 6379} <= egress_ports(screener)
    assert 443 not in egress_ports(screener), "screeners download nothing"
    assert {53, 6379, 443} <= egress_ports(sync)
    assert "ingress" not in sync, "nothing connects to a sync job"


# --- the OFAC reporter ----------------------------------------------------------------------------------------


def test_the_reporter_runs_report_serve_once_with_the_screeners_settings(rendered: dict[str, Any]) -> None:
    docs = rendered["everything"]
    deployment = one(docs, "Deployment", "reporting")
    spec = deployment["spec"]
    # One writer of the obligations topic at any time: one replica, replaced rather than rolled.
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["report", "serve"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {item["name"]: item.get("value") for item in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert str(ports["http"]) == env["AML_HTTP_PORT"]
    assert env["AML_REPORTING_INSTITUTION_NAME"] == "Example Exchange LLC"
    # The same Kafka settings and secrets as the screeners (the flagged topics are theirs).
    assert container["envFrom"] == screener_container(docs)["envFrom"]
    # Its writes wait at most the producer's delivery timeout (30 s by default) before SIGKILL may come.
    assert pod["terminationGracePeriodSeconds"] > 30
    # Scraped like the screeners (job="aml-screener"), and let in and out like them.
    pod_labels = spec["template"]["metadata"]["labels"]
    service = one(docs, "Service", "reporting")
    assert matches(service["spec"]["selector"], pod_labels)
    assert not matches(one(docs, "Service", "screener")["spec"]["selector"], pod_labels)
    monitor = one(docs, "ServiceMonitor")["spec"]["selector"]
    (expression,) = monitor["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/component" and set(expression["values"]) == {
        "screener",
        "reporting",
        "api",
        "history-indexer",
        "history-lookback",
    }
    assert matches(monitor["matchLabels"], service["metadata"]["labels"])
    policy = next(d["spec"] for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-reporting"))
    assert matches(policy["podSelector"]["matchLabels"], pod_labels)
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert 9092 in {port["port"] for rule in policy["egress"] for port in rule.get("ports", [])}


def test_the_reporter_can_be_switched_off(rendered: dict[str, Any]) -> None:
    docs = rendered["minimal"]
    assert [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "reporting"] == []
    assert one(rendered["defaults"], "Deployment", "reporting")


# --- the pre-screen API -------------------------------------------------------------------------------------


def test_the_api_runs_with_probes_its_keys_and_the_policy(rendered: dict[str, Any]) -> None:
    docs = rendered["everything"]
    deployment = one(docs, "Deployment", "api")
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["api"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {item["name"]: item.get("value") for item in container["env"]}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert (str(ports["api"]), str(ports["http"])) == (env["AML_API_PORT"], env["AML_HTTP_PORT"])
    assert env["AML_API_MAX_BATCH"] == "500"
    assert container["envFrom"] == screener_container(docs)["envFrom"]  # the screeners' settings and secrets
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    # Directory mounts (no subPath): a changed keys Secret or policy reaches the running API, which re-reads them.
    assert env["AML_API_KEYS_FILE"] == mounts["api-keys"]["mountPath"] + "/keys.json"
    assert env["AML_POLICY_FILE"] == mounts["policy"]["mountPath"] + "/policy.toml"
    assert not any("subPath" in mount for mount in mounts.values())
    secret_name = volumes["api-keys"]["secret"]["secretName"]
    secret = next(doc for doc in objects(docs, "Secret") if doc["metadata"]["name"] == secret_name)
    assert base64.b64decode(secret["data"]["keys.json"]).decode() == API_KEYS_FILE
    service = one(docs, "Service", "api")
    pod_labels = spec["template"]["metadata"]["labels"]
    assert matches(service["spec"]["selector"], pod_labels)
    assert {port["name"] for port in service["spec"]["ports"]} == {"api", "http"}
    for other in ("screener", "reporting"):
        assert not matches(one(docs, "Service", other)["spec"]["selector"], pod_labels)
    policy = next(d["spec"] for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-api"))
    assert matches(policy["podSelector"]["matchLabels"], pod_labels)
    api_rule, metrics_rule = policy["ingress"]
    assert api_rule["ports"] == [{"port": "api", "protocol": "TCP"}]
    assert api_rule["from"] == VALUE_SETS["everything"]["api"]["clientsFrom"]
    assert metrics_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert 6379 in {port["port"] for rule in policy["egress"] for port in rule.get("ports", [])}


def test_the_api_is_off_by_default_and_refuses_to_start_without_keys(rendered: dict[str, Any], tmp_path: Path) -> None:
    assert [
        d for d in rendered["defaults"] if d["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    ] == []
    deployment = one(rendered["existing-secret"], "Deployment", "api")
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "aml-api-keys"
    with pytest.raises(HelmError, match=r"api\.keys"):
        helm_template({"api": {"enabled": True}}, tmp_path)


# --- the screening history -----------------------------------------------------------------------------------


def test_the_history_runs_indexer_and_lookback_each_migrating_first(rendered: dict[str, Any]) -> None:
    docs = rendered["everything"]
    screener_env = screener_container(docs)["envFrom"]
    for role, args, replicas in (("indexer", ["history", "index"], 3), ("lookback", ["history", "lookback"], 1)):
        deployment = one(docs, "Deployment", f"history-{role}")
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == replicas
        (migrate,) = pod["initContainers"]
        (container,) = pod["containers"]
        assert migrate["args"] == ["history", "migrate"] and container["args"] == args
        # The screeners' settings and secrets (the database URL and password among them), plus history.env.
        assert container["envFrom"] == migrate["envFrom"] == screener_env
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["AML_HISTORY_LOOKBACK_DAYS"] == "730"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(one(docs, "Service", f"history-{role}")["spec"]["selector"], labels)
        assert not matches(one(docs, "Service", "screener")["spec"]["selector"], labels)
        policy = next(d["spec"] for d in objects(docs, "NetworkPolicy") if d["metadata"]["name"].endswith(role))
        assert matches(policy["podSelector"]["matchLabels"], labels)
        assert {9092, 6379, 5432} <= {port["port"] for rule in policy["egress"] for port in rule.get("ports", [])}
    (cronjob,) = [d for d in objects(docs, "CronJob") if d["metadata"]["name"].endswith("history-retention")]
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["history", "retention", "--apply"]


def test_the_history_is_off_by_default(rendered: dict[str, Any]) -> None:
    components = {d["metadata"]["labels"].get("app.kubernetes.io/component") for d in rendered["defaults"]}
    assert not any(str(component).startswith("history") for component in components)


# --- settings and secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_settings_are_known_and_secrets_stay_out_of_configmaps(value_set: str, rendered: dict[str, Any]) -> None:
    docs = rendered[value_set]
    config = next(doc for doc in objects(docs, "ConfigMap") if doc["metadata"]["name"].endswith("-config"))
    for variable in config["data"]:
        assert variable in SETTINGS_VARIABLES, f"{variable} is not a setting"
        assert variable not in SECRET_VARIABLES, f"{variable} is a secret, it belongs in a Secret"
    for _, template in pod_specs(docs):
        for container in template["spec"]["containers"]:
            for item in container.get("env", []):
                assert item["name"] in SETTINGS_VARIABLES, item["name"]


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_referenced_configmap_and_secret_exists(value_set: str, rendered: dict[str, Any]) -> None:
    docs = rendered[value_set]
    values = VALUE_SETS[value_set]
    external = {values.get("secret", {}).get("existingSecret"), values.get("watchlistSync", {}).get("existingSecret")}
    external |= {values.get("api", {}).get("keys", {}).get("existingSecret")}
    external |= {"exchange-lists"}  # the extraVolumes secret of the "everything" set
    available = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    for name, template in pod_specs(docs):
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in available, name
                else:
                    ref = source["secretRef"]["name"]
                    assert ("Secret", ref) in available or ref in external, f"{name}: secret {ref} is nowhere"
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in available, name
            if "secret" in volume:
                secret = volume["secret"]["secretName"]
                assert secret in external or ("Secret", secret) in available, name


def test_existing_secret_is_used_and_no_secret_is_created(rendered: dict[str, Any]) -> None:
    docs = rendered["existing-secret"]
    assert objects(docs, "Secret") == []
    refs = [source["secretRef"]["name"] for source in screener_container(docs)["envFrom"] if "secretRef" in source]
    assert refs == ["aml-screener-credentials"]
    cron = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    sync_refs = [source["secretRef"]["name"] for source in cron["envFrom"] if "secretRef" in source]
    # Later envFrom sources win: the writer's password overrides the screener's.
    assert sync_refs == ["aml-screener-credentials", "aml-sync-credentials"]
    assert {"name": "AML_REDIS_USERNAME", "value": "aml-sync"} in cron["env"]


def test_chart_created_secret_holds_the_values(rendered: dict[str, Any]) -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in objects(rendered["everything"], "Secret")}
    assert secrets[f"{RELEASE}-aml-screener"]["stringData"] == {
        "AML_REDIS_PASSWORD": "reader-password",
        "AML_HISTORY_DATABASE_PASSWORD": "pg",
    }
    assert secrets[f"{RELEASE}-aml-screener-sync"]["stringData"] == {"AML_REDIS_PASSWORD": "writer-password"}
    assert objects(rendered["defaults"], "Secret") == []
    assert all("secretRef" not in source for source in screener_container(rendered["defaults"])["envFrom"])


# --- watchlist sync -----------------------------------------------------------------------------------------


def test_sync_cronjob_runs_the_configured_sources(rendered: dict[str, Any], tmp_path: Path) -> None:
    docs = rendered["defaults"]
    cron = one(docs, "CronJob")["spec"]
    assert cron["schedule"] == "17 * * * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:2] == ["watchlist", "sync"]
    config_path = Path(container["args"][-1])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = next(d for d in objects(docs, "ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"])
    toml_text = config_map["data"][config_path.name]
    # The shipped default is a configuration the sync job accepts (parsed by the project's own loader).
    local = tmp_path / "sources.toml"
    local.write_text(toml_text, encoding="utf-8")
    sources = load_config(local)
    assert [source.format for source in sources] == ["ofac-xml"]
    assert tomllib.loads(toml_text)["source"][0]["location"].startswith("https://")


def test_sync_also_runs_once_per_release_revision(rendered: dict[str, Any]) -> None:
    jobs = objects(rendered["defaults"], "Job")
    assert [job["metadata"]["name"] for job in jobs] == [f"{RELEASE}-aml-screener-sync-r1"]
    assert objects(rendered["minimal"], "Job") == objects(rendered["minimal"], "CronJob") == []


# --- dashboards and alert rules: one source of truth with docker/compose.yaml -------------------------------


def test_every_dashboard_ships_as_a_sidecar_configmap(rendered: dict[str, Any]) -> None:
    files = sorted((CHART / "files" / "grafana").glob("*.json"))
    assert files
    shipped = {}
    for doc in objects(rendered["defaults"], "ConfigMap"):
        if doc["metadata"]["labels"].get("grafana_dashboard") == "1":
            (key, content), *rest = doc["data"].items()
            assert not rest
            shipped[key] = json.loads(content)
    assert shipped == {path.name: json.loads(path.read_text(encoding="utf-8")) for path in files}
    assert not any("grafana_dashboard" in d["metadata"]["labels"] for d in objects(rendered["minimal"], "ConfigMap"))


def test_prometheus_rule_is_the_alerts_file(rendered: dict[str, Any]) -> None:
    rules_file = load_yaml((CHART / "files" / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    rule = one(rendered["everything"], "PrometheusRule")
    assert rule["spec"]["groups"] == rules_file["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert all("alert" in r or "record" in r for group in rule["spec"]["groups"] for r in group["rules"])


def test_optional_objects_are_off_by_default(rendered: dict[str, Any]) -> None:
    kinds = {doc["kind"] for doc in rendered["defaults"]}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "NetworkPolicy"}
    everything = {doc["kind"] for doc in rendered["everything"]}
    assert {"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "NetworkPolicy"} <= everything


# --- autoscaling: bounded by the input partitions -----------------------------------------------------------


def test_hpa_scales_the_deployment_within_the_partition_count(rendered: dict[str, Any]) -> None:
    docs = rendered["hpa"]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    deployment = one(docs, "Deployment", "screener")
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 4)
    # The autoscaler owns the replica count; a fixed one would fight it on every upgrade.
    assert "replicas" not in deployment["spec"]


def test_autoscaler_beyond_the_partitions_is_refused(tmp_path: Path) -> None:
    values = {"autoscaling": {"enabled": True, "maxReplicas": 8}, "kafka": {"inputPartitions": 6}}
    with pytest.raises(HelmError, match=r"maxReplicas \(8\) exceeds kafka.inputPartitions \(6\)"):
        helm_template(values, tmp_path)


# --- values.schema.json -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCont": 3}, "replicaCont"),  # a typo at the top level
        ({"config": {"AML_KAFKA_BOOTSRAP_SERVERS": "kafka:9092"}}, "AML_KAFKA_BOOTSRAP_SERVERS"),  # unknown setting
        ({"config": {"AML_REDIS_PASSWORD": "hunter2"}}, "AML_REDIS_PASSWORD"),  # a secret in the ConfigMap
        ({"config": {"AML_HTTP_PORT": 9500}}, "AML_HTTP_PORT"),  # set by the chart (probes follow httpPort)
        ({"replicaCount": "two"}, "replicaCount"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"shutdownTimeoutSeconds": 0}, "shutdownTimeoutSeconds"),
        ({"watchlistSync": {"schedul": "0 * * * *"}}, "schedul"),
        ({"secret": {"values": {"AML_REDIS_PASWORD": "x"}}}, "AML_REDIS_PASWORD"),
    ],
)
def test_values_schema_rejects_mistakes(values: dict[str, Any], complaint: str, tmp_path: Path) -> None:
    with pytest.raises(HelmError, match="schema") as raised:
        helm_template(values, tmp_path)
    assert complaint in str(raised.value)


def test_values_schema_knows_exactly_the_settings() -> None:
    """config/env accept every non-secret setting except the four the chart sets, secrets accept every secret:
    a setting added to the code without updating the schema fails here, not in a user's `helm install`."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    plain = set(schema["definitions"]["settingName"]["enum"])
    secret = set(schema["definitions"]["secretName"]["enum"])
    chart_managed = {"AML_HTTP_PORT", "AML_SHUTDOWN_TIMEOUT_SECONDS", "AML_INSTANCE_ID", "AML_POLICY_FILE"}
    chart_managed |= {"AML_API_PORT", "AML_API_KEYS_FILE"}  # api.port, the mounted keys Secret
    assert secret == SECRET_VARIABLES
    assert plain == SETTINGS_VARIABLES - SECRET_VARIABLES - chart_managed
    assert schema["additionalProperties"] is False
    defaults = load_yaml((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert set(defaults) == set(schema["properties"]), "values.yaml and the schema list different keys"


def test_the_action_policy_is_mounted_as_a_directory_so_changes_reach_running_screeners(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    """The kubelet updates a ConfigMap volume in place, but never a subPath mount; and no checksum annotation rolls
    the pods on a policy change: the screener reloads the file itself (docs/policy.md)."""
    docs = rendered["defaults"]
    configmap = next(doc for doc in objects(docs, "ConfigMap") if doc["metadata"]["name"].endswith("-policy"))
    assert parse_policy(configmap["data"]["policy.toml"]).version == DEFAULT_POLICY.version, "the shipped default"
    container = screener_container(docs)
    env = {item["name"]: item.get("value") for item in container["env"]}
    mount = next(item for item in container["volumeMounts"] if item["name"] == "policy")
    assert "subPath" not in mount and mount["readOnly"] is True
    assert env["AML_POLICY_FILE"] == f"{mount['mountPath']}/policy.toml"
    volumes = one(docs, "Deployment", "screener")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "policy")["configMap"]["name"] == configmap["metadata"]["name"]
    annotations = one(docs, "Deployment", "screener")["spec"]["template"]["metadata"]["annotations"]
    assert not any("policy" in key for key in annotations)

    own = 'version = "exchange-1"\n[[rule]]\nid = "mixers"\ndirection = "deposit"\n'
    own += 'category = "mixer"\naction = "freeze"\n'
    custom = load_yaml_all(helm_template({"policy": {"content": own}}, tmp_path))
    data = next(doc for doc in objects(custom, "ConfigMap") if doc["metadata"]["name"].endswith("-policy"))["data"]
    assert parse_policy(data["policy.toml"]).version == parse_policy(own).version
