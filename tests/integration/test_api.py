"""The pre-screen API as a client sees it, against a real redis-server: answers, authentication, limits, errors,
fail-closed, metrics and what the logs never contain."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from aml_screener.api.keys import read_keys
from aml_screener.devstack.api_process import ApiProcess
from aml_screener.devstack.redis_server import RedisServer
from tests.api_cases import CASES, CLEAR_EVM, LISTED_BTC, LISTED_EVM, TRON_TWIN, withdrawal_json

pytestmark = pytest.mark.integration

ADDRESSES = "/v1/screen/addresses"
WITHDRAWAL = "/v1/screen/withdrawal"


def test_a_batch_answers_each_pair_with_key_matches_provenance_and_action(api: ApiProcess) -> None:
    status, answer = api.post(
        ADDRESSES,
        {
            "addresses": [
                {"network": "ethereum", "address": LISTED_EVM.lower()},
                {"network": "tron", "address": TRON_TWIN},
                {"network": "ethereum", "address": CLEAR_EVM},
                {"network": "bitcoin", "address": "not-an-address"},
            ]
        },
    )
    assert status == 200, answer
    assert answer["watchlist_version"] and answer["watchlist_digest"] and answer["policy_version"]
    direct, twin, clear, invalid = answer["results"]
    assert direct["key"] == "evm:" + LISTED_EVM.lower()
    assert direct["listed"] is True and direct["outcome"] == "FLAGGED"
    assert direct["action"] == "reject" and direct["severity"] == "critical"
    (match,) = direct["matches"]
    assert match["list"] == "ofac-sdn" and match["entry_name"] == "Lazarus Group" and match["match_type"] == "direct"
    assert match["source"].startswith("OFAC SDN") and match["programs"] == ["DPRK3"]
    assert twin["listed"] is True and twin["matches"][0]["match_type"] == "related"
    assert twin["action"] == "reject"  # a related sanctions match: the floor still rejects
    assert clear["listed"] is False and clear["outcome"] == "CLEAR" and clear["action"] == "allow"
    assert clear["matches"] == []
    assert invalid["key"] is None and invalid["outcome"] == "UNSCREENABLE" and invalid["action"] == "hold"
    assert invalid["reason"].startswith("invalid_address")


def test_a_withdrawal_gets_the_streams_decision_with_its_decision_id(api: ApiProcess) -> None:
    from aml_screener.screening.decision import decision_id

    status, answer = api.post(WITHDRAWAL, withdrawal_json(CASES[0], "w-1"))
    assert status == 200, answer
    decision = answer["decision"]
    assert decision["decision"] == "FLAGGED" and decision["action"] == "reject"
    assert decision["decision_id"] == decision_id("w-1", decision["watchlist_version"])
    assert decision["source"] == {"topic": "aml-screener-api", "partition": -1, "offset": -1, "schema_id": 1}
    assert answer["recorded"] is False


def test_without_a_valid_key_nothing_is_screened(api: ApiProcess) -> None:
    body = {"addresses": [{"network": "bitcoin", "address": LISTED_BTC}]}
    for key in ("", "amlk_000000000000_" + "A" * 43, api.key[:-1] + ("B" if api.key[-1] != "B" else "C"), "nonsense"):
        status, answer = api.post(ADDRESSES, body, key=key)
        assert status == 401 and answer["error"] == "unauthorized", (key, answer)
    stored = api.keys_file.read_text()
    assert api.key not in stored and api.key.split("_", 2)[2] not in stored  # only the hash is kept
    assert api.post(ADDRESSES, body)[0] == 200


def test_a_revoked_key_stops_working_and_a_new_one_starts_without_restart(api: ApiProcess) -> None:
    body = {"addresses": [{"network": "bitcoin", "address": LISTED_BTC}]}
    second = api.add_key("second")
    wait_for(lambda: api.post(ADDRESSES, body, key=second)[0] == 200, "the new key to be accepted")
    from aml_screener.api.keys import write_keys

    keys = read_keys(api.keys_file)
    first_id = api.key.split("_")[1]
    write_keys(api.keys_file, {key_id: key for key_id, key in keys.items() if key_id != first_id})
    wait_for(lambda: api.post(ADDRESSES, body)[0] == 401, "the revoked key to be refused")
    assert api.post(ADDRESSES, body, key=second)[0] == 200
    api.keys_file.write_text("{not json")  # a broken file is refused: the keys in force stay
    wait_for(lambda: 'aml_screener_api_key_reloads_total{result="refused"} 1.0' in api.metrics(), "the refusal")
    assert api.post(ADDRESSES, body, key=second)[0] == 200


INVALID_ADDRESS_REQUESTS: tuple[tuple[object, int, str, str], ...] = (
    ({"addresses": [{"network": "ethereum"}]}, 422, "invalid_request", "addresses[0].address"),
        ({"addresses": [{"network": 5, "address": "x"}]}, 422, "invalid_request", "addresses[0].network"),
        ({"addresses": [{"network": "ethereum", "address": "x", "colour": "red"}]}, 422, "invalid_request",
         "addresses[0].colour"),
        ({"addresses": []}, 422, "invalid_request", "addresses"),
        ({"addresses": [{"network": "x" * 65, "address": "x"}]}, 422, "invalid_request", "addresses[0].network"),
        ({"addresses": [{"network": "ethereum", "address": "x", "usd_value": "1.234"}]}, 422, "invalid_request",
         "addresses[0].usd_value"),
        ({"addresses": [{"network": "bitcoin", "address": LISTED_BTC}] * 11}, 422, "invalid_request", "addresses"),
)  # fmt: skip


def test_an_invalid_request_names_the_field(loaded_redis: RedisServer, api_factory: Callable[..., ApiProcess]) -> None:
    api = api_factory(loaded_redis.url, AML_API_MAX_BATCH="10").wait_ready()
    for body, status, error, field in INVALID_ADDRESS_REQUESTS:
        got, answer = api.post(ADDRESSES, body)
        assert (got, answer["error"]) == (status, error), (body, answer)
        assert field in [problem["field"] for problem in answer["errors"]], (body, answer)


def test_withdrawal_fields_are_named_too(api: ApiProcess) -> None:
    body = withdrawal_json(CASES[0], "w-2")
    for name, value, field in [
        ("amount", "1.2345678901234567890", "amount"),  # 19 decimals: more than decimal(38, 18)
        ("amount", 12.5, "amount"),  # a number, not a decimal string: no float rounding of money
        ("requested_at", "2026-12-01T10:00:00", "requested_at"),  # no offset
        ("event_id", "", "event_id"),
        ("metadata", {str(i): "v" for i in range(65)}, "metadata"),
    ]:
        status, answer = api.post(WITHDRAWAL, {**body, name: value})
        assert status == 422 and field in [problem["field"] for problem in answer["errors"]], (name, answer)
    status, answer = api.post(WITHDRAWAL, {key: value for key, value in body.items() if key != "account_id"})
    assert status == 422 and answer["errors"][0]["field"] == "account_id"


def test_body_limits_media_type_and_malformed_json(api: ApiProcess) -> None:
    huge = json.dumps({"addresses": [{"network": "ethereum", "address": "x" * 1000}] * 300}).encode()
    assert len(huge) > 262_144
    status, answer = api.post(ADDRESSES, None, raw=huge)
    assert (status, answer["error"]) == (413, "payload_too_large")
    status, answer = api.post(ADDRESSES, None, raw=b'{"addresses": [', headers={})
    assert (status, answer["error"]) == (400, "invalid_json")
    status, answer = api.post(ADDRESSES, None, raw=b"{}", headers={"Content-Type": "text/plain"})
    assert (status, answer["error"]) == (415, "unsupported_media_type")


def test_no_watchlist_is_503_with_the_reason_never_not_listed(
    server: RedisServer, api_factory: Callable[..., ApiProcess]
) -> None:
    api = api_factory(server.url, AML_REDIS_TIMEOUT_SECONDS="0.5").wait_listening()
    body = {"addresses": [{"network": "ethereum", "address": CLEAR_EVM}]}
    status, answer = api.post(ADDRESSES, body)
    assert (status, answer["error"], answer["reason"]) == (503, "watchlist_unavailable", "no_active_version")
    status, answer = api.post(WITHDRAWAL, withdrawal_json(CASES[6], "w-3"))
    assert (status, answer["reason"]) == (503, "no_active_version")
    status, probe = api.probe("/readyz")
    assert (status, probe["reason"]) == (503, "no_active_version")
    assert api.probe("/healthz")[0] == 200  # waiting for a watchlist is not a reason to restart
    assert api.terminate() == 0  # SIGTERM: finishes what is in flight and exits 0


def test_redis_going_away_fails_closed_and_coming_back_recovers(
    loaded_redis: RedisServer, api_factory: Callable[..., ApiProcess]
) -> None:
    api = api_factory(loaded_redis.url, AML_REDIS_TIMEOUT_SECONDS="0.5").wait_ready()
    body = {"addresses": [{"network": "ethereum", "address": CLEAR_EVM}]}
    assert api.post(ADDRESSES, body)[0] == 200
    loaded_redis.stop()
    status, answer = api.post(ADDRESSES, body)
    assert (status, answer["error"], answer["reason"]) == (503, "watchlist_unavailable", "redis_unavailable")
    assert api.post(WITHDRAWAL, withdrawal_json(CASES[6], "w-4"))[0] == 503
    wait_for(lambda: api.probe("/readyz")[0] == 503, "not ready")
    loaded_redis.start()  # an empty Redis (no persistence): still no watchlist, still 503
    wait_for(lambda: api.post(ADDRESSES, body)[1].get("reason") == "no_active_version", "no_active_version")
    import redis

    from aml_screener.demo.sample import load_sample
    from aml_screener.watchlist.store import WatchlistStore

    load_sample(WatchlistStore(redis.Redis.from_url(loaded_redis.url, decode_responses=True)))
    wait_for(lambda: api.post(ADDRESSES, body)[0] == 200, "answers again")
    wait_for(lambda: api.probe("/readyz")[0] == 200, "ready again")
    metrics = api.metrics()
    assert 'aml_screener_api_lookup_errors_total{reason="redis_unavailable"}' in metrics
    assert 'aml_screener_api_requests_total{endpoint="addresses",outcome="watchlist_unavailable"}' in metrics


def test_metrics_per_endpoint_and_outcome_and_logs_without_addresses_or_keys(api: ApiProcess) -> None:
    api.post(ADDRESSES, {"addresses": [{"network": "ethereum", "address": LISTED_EVM}]})
    api.post(ADDRESSES, {"addresses": [{"network": "ethereum", "address": LISTED_EVM}]}, key="")
    api.post(WITHDRAWAL, withdrawal_json(CASES[0], "w-5"))
    api.post(WITHDRAWAL, {**withdrawal_json(CASES[0], "w-6"), "amount": "x"})
    metrics = api.metrics()
    for endpoint, outcome in [
        ("addresses", "ok"), ("addresses", "unauthorized"), ("withdrawal", "ok"), ("withdrawal", "invalid_request")
    ]:  # fmt: skip
        assert f'aml_screener_api_requests_total{{endpoint="{endpoint}",outcome="{outcome}"}} 1.0' in metrics
    assert 'aml_screener_api_screened_total{action="reject",endpoint="withdrawal",outcome="FLAGGED"} 1.0' in metrics
    assert 'aml_screener_api_request_duration_seconds_count{endpoint="addresses"} 2.0' in metrics
    logs = api.log_text()
    assert "pre-screened withdrawal flagged" in logs and "w-5" in logs  # ids are logged
    key_id = api.key.split("_")[1]
    assert key_id in logs
    for secret in (LISTED_EVM, LISTED_EVM.lower(), api.key, api.key.split("_", 2)[2], "account-7"):
        assert secret not in logs


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
