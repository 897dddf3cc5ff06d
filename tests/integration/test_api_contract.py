"""The API and the stream give the same answer for the same input (tests/api_cases.py, the shared test set).

A real `aml-screener run` screens the withdrawals from Kafka (the session's real 3-node cluster) while a real
`aml-screener api` screens the same withdrawals over HTTP, both against one redis-server holding the bundled OFAC
sample and both under one action policy file (with asset, amount and shadow rules, so the policy's evaluation is part
of the contract). Every decision must be equal field by field, decision id included, except where and when it was
made (source, timings, screener). The address endpoint must agree with the same decisions. With
AML_API_RECORD_DECISIONS the API's decision is on the decisions topic too, next to the stream's, with the same id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from aml_screener.devstack.api_process import ApiProcess
from aml_screener.screener.codec import FramedReader
from tests.api_cases import CASES, what_was_decided, withdrawal_event, withdrawal_json
from tests.integration.harness import REPOSITORY, IsolatedStack, OutputReader, encoder, load_bundled_watchlist

pytestmark = pytest.mark.integration

POLICY = """
version = "contract-1"

[[rule]]
id = "usdt-large-unscreenable"
direction = "withdrawal"
outcome = ["unscreenable"]
asset = ["USDT"]
usd_min = 1000
action = "reject"
severity = "high"

[[rule]]
id = "watch-clear-eth"
direction = "withdrawal"
outcome = ["clear"]
asset = ["ETH"]
action = "hold"
shadow = true
"""


def _raw_reader(stack: IsolatedStack) -> OutputReader:
    reader = OutputReader(stack)
    reader.framed = FramedReader(REPOSITORY, logical_types=False)  # integers, as the API's JSON carries them
    return reader


def _produce(stack: IsolatedStack, events: list[tuple[str, dict[str, Any]]]) -> None:
    encode = encoder()
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "log.connection.close": False})
    for event_id, event in events:
        producer.produce(stack.topics.input, encode.encode(event), event_id.encode())
    assert producer.flush(30) == 0


def test_the_api_and_the_stream_decide_alike(
    stack: IsolatedStack, screeners: Callable[..., Any], tmp_path: Path
) -> None:
    load_bundled_watchlist(stack.redis_url)
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    run = uuid.uuid4().hex[:8]
    ids = {case.name: f"contract-{run}-{number}" for number, case in enumerate(CASES)}
    screener = screeners(AML_POLICY_FILE=str(policy))
    screener.wait_assigned()
    _produce(stack, [(ids[case.name], withdrawal_event(case, ids[case.name])) for case in CASES])
    reader = _raw_reader(stack)
    try:
        outputs = reader.read_until(
            lambda out: {d["event_id"] for d in out.decisions} >= set(ids.values()), 60, "the stream's decisions"
        )
        stream = {decision["event_id"]: decision for decision in outputs.decisions}
    finally:
        reader.close()

    with ApiProcess(stack.redis_url, env={"AML_POLICY_FILE": str(policy)}) as api:
        api.wait_ready()
        for case in CASES:
            event_id = ids[case.name]
            status, answer = api.post("/v1/screen/withdrawal", withdrawal_json(case, event_id))
            assert status == 200, answer
            decision = answer["decision"]
            assert decision["decision"] == case.outcome, case.name
            assert what_was_decided(decision) == what_was_decided(stream[event_id]), case.name
            assert decision["decision_id"] == stream[event_id]["decision_id"]
        status, answer = api.post(
            "/v1/screen/addresses",
            {
                "addresses": [
                    {"network": case.network, "address": case.address, "asset": case.asset, "usd_value": case.usd_value}
                    for case in CASES
                ]
            },
        )
        assert status == 200, answer
        for case, result in zip(CASES, answer["results"], strict=True):
            decided = stream[ids[case.name]]
            assert answer["watchlist_version"] == decided["watchlist_version"]
            assert answer["watchlist_digest"] == decided["watchlist_digest"]
            assert answer["policy_version"] == decided["policy_version"]
            assert result["key"] == decided["address_key"], case.name
            assert result["outcome"] == decided["decision"], case.name
            assert result["listed"] == (decided["decision"] == "FLAGGED"), case.name
            assert result["matches"] == decided["matches"], case.name
            assert result["checked_keys"] == decided["checked_keys"], case.name
            assert (result["action"], result["severity"], result["policy_rule"]) == (
                decided["action"],
                decided["severity"],
                decided["policy_rule"],
            ), case.name
            assert result["shadow"] == decided["shadow"], case.name
    actions = {stream[ids[case.name]]["policy_rule"] for case in CASES}
    assert "usdt-large-unscreenable" in actions  # the operator's rules took part, not only the built-in ones
    assert any(stream[ids[case.name]]["shadow"] for case in CASES)


def test_a_recorded_decision_is_on_the_decisions_topic_with_the_streams_id(stack: IsolatedStack) -> None:
    load_bundled_watchlist(stack.redis_url)
    case = CASES[0]  # a listed destination: a decision and a flag
    event_id = f"recorded-{uuid.uuid4().hex[:8]}"
    env = {
        "AML_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        **stack.topics.env(),
        "AML_API_RECORD_DECISIONS": "true",
    }
    with ApiProcess(stack.redis_url, env=env) as api:
        api.wait_ready()
        status, answer = api.post("/v1/screen/withdrawal", withdrawal_json(case, event_id))
        assert status == 200, answer
        assert answer["recorded"] is True
        decision = answer["decision"]
        assert 'aml_screener_api_recorded_total{result="acknowledged"} 1.0' in api.metrics()
    reader = _raw_reader(stack)
    try:
        outputs = reader.read_until(
            lambda out: bool(out.decisions) and bool(out.flagged), 30, "the recorded decision and flag"
        )
    finally:
        reader.close()
    (recorded,) = outputs.decisions
    assert recorded == decision
    assert recorded["source"]["topic"] == "aml-screener-api"
    (flag,) = outputs.flagged
    assert flag["decision_id"] == decision["decision_id"] and flag["action"] == "reject"
