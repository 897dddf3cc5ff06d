"""A real Confluent-compatible Schema Registry (Apicurio Registry, from Maven Central, started once per session
with basic auth) between real producers and the screener: confluent-kafka's AvroSerializer writes the input,
AvroDeserializer reads the outputs. Covers several URLs with credentials in them, unions, primitives, schema
references, read-only credentials, and the registry missing at start-up and going away mid-run."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from aml_screener.screener.schemas import (
    SCREENING_DECISION,
    WITHDRAWAL_FLAGGED,
    WITHDRAWAL_REQUESTED,
    HttpSchemaRegistry,
)
from tests.integration.harness import CATALOG, INPUT, load_bundled_watchlist, produce_raw

pytestmark = pytest.mark.integration

READER_SCHEMA = CATALOG.current(WITHDRAWAL_REQUESTED).schema
CLIENT_INFO_NAME = "com.example.exchange.ClientInfo"
CLIENT_INFO = {
    "type": "record",
    "name": "ClientInfo",
    "namespace": "com.example.exchange",
    "fields": [{"name": "ip", "type": "string"}, {"name": "device", "type": ["null", "string"], "default": None}],
}


def withdrawal(event_id: str, address: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "exchange_id": "x",
        "account_id": "a",
        "asset": "ETH",
        "network": "ethereum",
        "destination_address": address,
        "destination_tag": None,
        "amount": Decimal("2.5"),
        "usd_value": None,
        "requested_at": 1_700_000_000_000,
        "metadata": None,
        **extra,
    }


def serializer(client: SchemaRegistryClient, schema: Schema, subject: str) -> Any:
    """confluent-kafka's AvroSerializer registering `schema` under `subject` (RecordNameStrategy-like fixed name)."""
    return AvroSerializer(client, schema, conf={"subject.name.strategy": lambda _ctx, _name: subject})


def serialize(ser: Any, datum: Any) -> bytes:
    return bytes(ser(datum, SerializationContext(INPUT, MessageField.VALUE)))


def lazarus_address(redis_url: str) -> str:
    listings = load_bundled_watchlist(redis_url)
    return next(item.listed_address for _, item in listings if item.entry_name == "Lazarus Group")


def test_real_producers_writer_schemas_are_decided_through_apicurio(
    stack, screeners, reader_factory, schema_registry, tmp_path
):
    lazarus = lazarus_address(stack.redis_url)
    admin = SchemaRegistryClient({"url": schema_registry.url_with("admin")})
    plain = serializer(admin, Schema(json.dumps(READER_SCHEMA), "AVRO"), "it-plain-value")
    nullable_schema = Schema(json.dumps(["null", READER_SCHEMA]), "AVRO")
    nullable = serializer(admin, nullable_schema, "it-nullable-value")
    nullable_id = admin.register_schema("it-nullable-value", nullable_schema)
    primitive = serializer(admin, Schema('{"type": "string"}', "AVRO"), "it-string-value")
    # A newer writer whose extra field's type lives under another subject (a Confluent schema reference).
    admin.register_schema("com.example.exchange.ClientInfo", Schema(json.dumps(CLIENT_INFO), "AVRO"))
    referenced = admin.get_latest_version("com.example.exchange.ClientInfo")
    newer = dict(READER_SCHEMA, fields=[*READER_SCHEMA["fields"], {"name": "client", "type": CLIENT_INFO_NAME}])
    reference = SchemaReference(CLIENT_INFO_NAME, "com.example.exchange.ClientInfo", referenced.version)
    with_reference = serializer(admin, Schema(json.dumps(newer), "AVRO", [reference]), "it-referencing-value")
    # The output schemas are registered by a writer first (the screener's credentials are read-only).
    for subject, name in (
        (f"{stack.topics.decisions}-value", SCREENING_DECISION),
        (f"{stack.topics.flagged}-value", WITHDRAWAL_FLAGGED),
    ):
        admin.register_schema(subject, Schema(json.dumps(CATALOG.current(name).schema), "AVRO"))
    # Several URLs, the first one dead, the second with the credentials in it (as Confluent clients accept).
    screener = screeners(AML_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:9/nothing,{schema_registry.url_with('reader')}")
    reader = reader_factory(stack, HttpSchemaRegistry(schema_registry.url_with("admin")))
    screener.wait_assigned()
    produce_raw(
        stack,
        [
            (b"1", serialize(plain, withdrawal("plain", lazarus))),
            (b"2", serialize(nullable, withdrawal("union", lazarus.lower()))),
            # The union's null branch (AvroSerializer turns None into a tombstone, so framed by hand): union
            # index 0 = null, nothing to screen.
            (b"3", b"\x00" + nullable_id.to_bytes(4, "big") + b"\x00"),
            (b"4", serialize(primitive, "not a withdrawal")),
            (b"5", serialize(with_reference, withdrawal("referencing", lazarus, client={"ip": "10.1.2.3"}))),
        ],
        headers=[("trace-id", b"t-42"), ("producer", b"exchange-gw")],
    )
    outputs = reader.read_until(lambda o: len(o.decisions) >= 3 and len(o.dead_letters) >= 2, 60, "3 decisions + 2 DLQ")
    assert {d["event_id"]: d["decision"] for d in outputs.decisions} == {
        "plain": "FLAGGED",
        "union": "FLAGGED",
        "referencing": "FLAGGED",
    }
    assert outputs.dead_letter_reasons() == Counter({"wrong_type": 2})
    for dead in outputs.dead_letters:  # the input record's own headers travel with it (operators trace by them)
        assert dead.headers[:2] == [("trace-id", b"t-42"), ("producer", b"exchange-gw")]
    # Consumers read the outputs with confluent-kafka's AvroDeserializer against the same registry.
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": schema_registry.url_with("reader")}))
    decoded = [
        deserialize(value, SerializationContext(stack.topics.decisions, MessageField.VALUE))
        for value in outputs.decision_values
    ]
    assert {d["event_id"] for d in decoded} == {"plain", "union", "referencing"}
    assert all(d["watchlist_version"] for d in decoded)
    assert screener.terminate() == 0


def test_read_only_credentials_use_registered_or_configured_ids_and_fail_clearly_otherwise(
    stack, screeners, reader_factory, schema_registry
):
    admin = SchemaRegistryClient({"url": schema_registry.url_with("admin")})
    ids = {}
    for subject, name in (
        (f"{stack.topics.decisions}-value", SCREENING_DECISION),
        (f"{stack.topics.flagged}-value", WITHDRAWAL_FLAGGED),
    ):
        ids[name] = admin.register_schema(subject, Schema(json.dumps(CATALOG.current(name).schema), "AVRO"))
    lazarus = lazarus_address(stack.redis_url)
    plain = serializer(admin, Schema(json.dumps(READER_SCHEMA), "AVRO"), "it-plain-value")
    reader_url = schema_registry.url_with("reader")
    looked_up = screeners("looked-up", AML_SCHEMA_REGISTRY_URL=reader_url)
    looked_up.wait_assigned()
    reader = reader_factory(stack, HttpSchemaRegistry(schema_registry.url_with("admin")))
    produce_raw(stack, [(b"1", serialize(plain, withdrawal("ro", lazarus)))])
    outputs = reader.read_until(lambda o: len(o.decisions) >= 1, 45, "a decision with read-only credentials")
    assert outputs.decisions[0]["decision"] == "FLAGGED"
    assert set(reader.schema_ids) == set(ids.values()), "framed with the ids registered under the output subjects"
    assert looked_up.terminate() == 0
    # An output subject nobody registered: read-only credentials cannot, so the screener says what to do.
    unregistered = screeners(
        "unregistered", AML_SCHEMA_REGISTRY_URL=reader_url, AML_KAFKA_DECISIONS_TOPIC="unregistered.decisions"
    )
    assert unregistered.proc is not None
    assert unregistered.proc.wait(60) == 2
    errors = [line for line in unregistered.log_lines() if line["level"] == "error"]
    assert errors and "unregistered.decisions-value" in errors[-1]["detail"]
    assert "AML_SCHEMA_REGISTRY_DECISIONS_SCHEMA_ID" in errors[-1]["detail"]
    # Pre-registered ids by configuration: no lookup, no registration.
    configured = screeners(
        "configured",
        AML_SCHEMA_REGISTRY_URL=reader_url,
        AML_KAFKA_DECISIONS_TOPIC="unregistered.decisions",
        AML_SCHEMA_REGISTRY_DECISIONS_SCHEMA_ID=str(ids[SCREENING_DECISION]),
        AML_SCHEMA_REGISTRY_FLAGGED_SCHEMA_ID=str(ids[WITHDRAWAL_FLAGGED]),
    )
    configured.wait_until(lambda: configured.probe("/readyz")[1]["reason"] != "starting", 45, "past start-up")
    assert configured.terminate() == 0


def test_wrong_credentials_or_no_registry_at_start_fail_closed_and_recover(
    stack, screeners, reader_factory, schema_registry
):
    wrong = screeners("wrong", AML_SCHEMA_REGISTRY_URL=schema_registry.url.replace("http://", "http://admin:nope@"))
    wrong.wait_until(lambda: wrong.probe("/readyz")[1]["reason"] == "schema_registry_unavailable", 45, "not ready")
    body = wrong.probe("/readyz")[1]
    assert (body["fail_closed"], body["assigned_partitions"]) == (True, [])
    assert wrong.probe("/healthz")[0] == 200, "waiting for the registry is healthy"
    line = next(x for x in wrong.log_lines() if x["msg"].startswith("schema registry unavailable at start-up"))
    assert "401" in line["detail"] and "nope" not in json.dumps(wrong.log_lines()), "no secret in the logs"
    assert wrong.terminate() == 0, "SIGTERM while waiting for the registry: clean exit"
    # The registry down at start-up, then back: the screener waits, then screens.
    lazarus = lazarus_address(stack.redis_url)
    admin = SchemaRegistryClient({"url": schema_registry.url_with("admin")})
    plain = serializer(admin, Schema(json.dumps(READER_SCHEMA), "AVRO"), "it-plain-value")
    evolved = dict(READER_SCHEMA, fields=[*READER_SCHEMA["fields"], {"name": "note", "type": "string", "default": ""}])
    later = serializer(admin, Schema(json.dumps(evolved), "AVRO"), "it-evolved-value")
    first, second = serialize(plain, withdrawal("before", lazarus)), serialize(later, withdrawal("during", lazarus))
    schema_registry.stop()
    try:
        waiting = screeners("waiting", AML_SCHEMA_REGISTRY_URL=schema_registry.url_with("admin"))
        waiting.wait_until(lambda: waiting.probe("/readyz")[1]["reason"] == "schema_registry_unavailable", 45, "503")
        assert waiting.metric("aml_screener_fail_closed") == 1
    finally:
        schema_registry.start()
    waiting.wait_assigned(60)
    reader = reader_factory(stack, HttpSchemaRegistry(schema_registry.url_with("admin")))
    produce_raw(stack, [(b"1", first)])
    # The decision and the flagged event are on different topics: read both (the reader needs the registry to
    # decode the flag's schema id) before the registry goes away again.
    reader.read_until(
        lambda o: len(o.decisions) >= 1 and len(o.flagged) >= 1, 45, "decided and flagged once the registry is back"
    )
    # Going away mid-run: a record with an id the screener has never seen waits (not dead-lettered), not ready.
    schema_registry.stop()
    try:
        produce_raw(stack, [(b"2", second)])
        waiting.wait_until(lambda: waiting.probe("/readyz")[1]["reason"] == "schema_registry_unavailable", 45, "503")
        reader.settle(1.0)
        assert len(reader.outputs.decisions) == 1 and not reader.outputs.dead_letters
    finally:
        schema_registry.start()
    outputs = reader.read_until(lambda o: len(o.decisions) >= 2, 60, "the waiting record decided after the return")
    assert [d["event_id"] for d in outputs.decisions] == ["before", "during"]
    waiting.wait_until(lambda: waiting.probe("/readyz")[0] == 200, 30, "ready again")
    assert waiting.terminate() == 0
