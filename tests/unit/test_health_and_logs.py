"""HTTP probes answer what the platform needs; logs are JSON and carry no secrets."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from aml_screener.infra.kafka import consumer_config, producer_config, redacted
from aml_screener.infra.logs import configure_logging
from aml_screener.infra.settings import Settings
from aml_screener.screener.health import HealthServer, ServiceState
from aml_screener.screener.metrics import Metrics


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Clock:
    """Monotonic seconds the test moves: the stall bound is checked without sleeping (a loaded machine cannot make
    a probe look stuck, or a stuck loop look alive)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


STALL_SECONDS = 60.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock):
    metrics = Metrics(CollectorRegistry())
    state = ServiceState(stall_seconds=STALL_SECONDS, clock=clock)
    running = HealthServer("127.0.0.1", 0, state, metrics).start()
    yield f"http://127.0.0.1:{running.port}", state, metrics
    running.close()


def test_readiness_follows_the_state_and_explains_itself(server):
    url, state, _ = server
    status, body = get(url + "/readyz")
    assert status == 503 and json.loads(body)["reason"] == "starting"
    state.set_ready("v1")
    status, body = get(url + "/readyz")
    assert status == 200 and json.loads(body)["watchlist_version"] == "v1"
    state.set_not_ready("redis_unavailable", fail_closed=True)
    status, body = get(url + "/readyz")
    assert status == 503 and json.loads(body)["fail_closed"] is True


def test_liveness_fails_only_when_the_loop_stops_turning(server, clock):
    url, state, _ = server
    state.heartbeat()
    clock.advance(STALL_SECONDS - 1)
    assert get(url + "/healthz")[0] == 200
    clock.advance(2)
    assert get(url + "/healthz")[0] == 503
    state.heartbeat()
    assert get(url + "/healthz")[0] == 200


def test_liveness_fails_when_errors_repeat_without_progress(server, clock):
    url, state, _ = server
    state.heartbeat()
    state.loop_failed()
    assert get(url + "/healthz")[0] == 200, "one error is not a stuck loop"
    clock.advance(STALL_SECONDS + 1)
    state.heartbeat()  # the loop still turns, but only to fail again
    status, body = get(url + "/healthz")
    assert status == 503 and json.loads(body)["problem"] == "loop_failing"
    state.loop_succeeded()
    assert get(url + "/healthz")[0] == 200


def test_unreadable_input_makes_not_ready_at_once_and_unhealthy_after_the_bound(server, clock):
    url, state, _ = server
    state.set_ready("v1")
    state.heartbeat()
    state.mark_unreadable("withdrawals.requested-0", 42, "UnsupportedCodecError: lz4")
    status, body = get(url + "/readyz")
    assert status == 503
    assert json.loads(body)["reason"] == "input_unreadable"
    assert json.loads(body)["unreadable_input"]["withdrawals.requested-0"]["offset"] == 42
    assert get(url + "/healthz")[0] == 200, "records waiting is not yet a stuck loop"
    clock.advance(STALL_SECONDS + 1)
    state.heartbeat()
    status, body = get(url + "/healthz")
    assert status == 503 and json.loads(body)["problem"] == "input_unreadable"
    state.unreadable.clear()
    assert get(url + "/readyz")[0] == 200
    assert get(url + "/healthz")[0] == 200


def test_metrics_are_exposed_in_prometheus_text_format(server):
    url, _, metrics = server
    metrics.decisions.labels("clear", "withdrawal").inc(3)
    status, body = get(url + "/metrics")
    assert status == 200
    assert 'aml_screener_decisions_total{decision="clear",direction="withdrawal"} 3.0' in body
    assert get(url + "/nope")[0] == 404


def test_json_logs_do_not_leak_secrets():
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password="kafka-secret-1",
        redis_password="redis-secret-2",
        schema_registry_basic_auth="user:registry-secret-3",
    )
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    logging.getLogger("test").info(
        "starting",
        extra={
            "settings": settings.redacted(),
            "consumer": redacted(consumer_config(settings)),
            "producer": redacted(producer_config(settings)),
        },
    )
    line = stream.getvalue()
    record = json.loads(line)
    assert record["msg"] == "starting" and record["level"] == "info"
    for secret in ("kafka-secret-1", "redis-secret-2", "registry-secret-3"):
        assert secret not in line
    assert record["settings"]["kafka_sasl_username"] == "svc"
