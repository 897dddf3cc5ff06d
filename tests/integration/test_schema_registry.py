"""Writer schemas from a Schema Registry over HTTP (`GET /schemas/ids/{id}`, cached), outputs registered under
`<topic>-value`. Confluent's registry cannot be installed here (no JVM package on PyPI/Debian/npm), so the
registry is a small HTTP server speaking those two REST calls with the registry's JSON shapes."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aml_screener.screener.codec import HEADER, WithdrawalEncoder
from aml_screener.screener.errors import SchemaSourceUnavailable
from aml_screener.screener.schemas import (
    WITHDRAWAL_REQUESTED,
    HttpSchemaRegistry,
    SchemaCatalog,
    UnknownSchemaId,
)
from tests.integration.harness import load_bundled_watchlist, produce_raw

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "schemas"
CURRENT_ID, OLDER_ID = 1001, 1002


@dataclass
class RegistryState:
    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, int] = field(default_factory=dict)
    gets: Counter[int] = field(default_factory=Counter)
    fail_next_gets: int = 0


@pytest.fixture
def registry() -> Iterator[tuple[str, RegistryState]]:
    state = RegistryState()
    catalog = SchemaCatalog()
    state.schemas[CURRENT_ID] = json.dumps(catalog.current(WITHDRAWAL_REQUESTED).schema)
    state.schemas[OLDER_ID] = (FIXTURES / "withdrawal_requested.older.avsc").read_text()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            schema_id = int(self.path.rsplit("/", 1)[-1])
            state.gets[schema_id] += 1
            if state.fail_next_gets > 0:
                state.fail_next_gets -= 1
                return self._answer(503, {"error_code": 50301, "message": "unavailable"})
            if schema_id not in state.schemas:
                return self._answer(404, {"error_code": 40403, "message": "Schema not found"})
            return self._answer(200, {"schema": state.schemas[schema_id]})

        def do_POST(self) -> None:
            subject = self.path.split("/")[2]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if subject not in state.subjects:
                new_id = 2000 + len(state.subjects) + 1
                state.subjects[subject] = new_id
                state.schemas[new_id] = body["schema"]
            return self._answer(200, {"id": state.subjects[subject]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", state
    server.shutdown()
    server.server_close()


def test_client_caches_by_id_and_separates_unknown_from_unavailable(registry):
    url, state = registry
    client = HttpSchemaRegistry(url)
    assert client.writer_schema(CURRENT_ID)["name"] == "aml_screener.events.WithdrawalRequested"
    client.writer_schema(CURRENT_ID)
    assert state.gets[CURRENT_ID] == 1, "schema ids are immutable: fetched once"
    with pytest.raises(UnknownSchemaId):
        client.writer_schema(4242)
    with pytest.raises(UnknownSchemaId):
        client.writer_schema(4242)
    assert state.gets[4242] == 1, "unknown ids are remembered too: a hostile producer cannot flood the registry"
    state.fail_next_gets = 1
    with pytest.raises(SchemaSourceUnavailable):
        client.writer_schema(OLDER_ID)
    with pytest.raises(SchemaSourceUnavailable):
        HttpSchemaRegistry("http://127.0.0.1:9", timeout_seconds=0.5).writer_schema(1)


def test_screener_resolves_inputs_and_registers_outputs_through_the_registry(
    stack, screeners, reader_factory, registry
):
    url, state = registry
    listings = load_bundled_watchlist(stack.redis_url)
    lazarus = next(item.listed_address for _, item in listings if item.entry_name == "Lazarus Group")
    catalog = SchemaCatalog()
    current = WithdrawalEncoder(catalog.current(WITHDRAWAL_REQUESTED).schema, CURRENT_ID)
    older = WithdrawalEncoder(json.loads(state.schemas[OLDER_ID]), OLDER_ID)
    base = {
        "exchange_id": "x",
        "account_id": "a",
        "asset": "ETH",
        "network": "ethereum",
        "amount": Decimal("2.5"),
        "requested_at": 1,
    }
    state.fail_next_gets = 2  # the registry is briefly down: records wait, they are not dead-lettered
    screener = screeners(AML_SCHEMA_REGISTRY_URL=url)
    reader = reader_factory(stack, HttpSchemaRegistry(url))
    screener.wait_assigned()
    produce_raw(
        stack,
        [
            (b"1", current.encode({**base, "event_id": "new-writer", "destination_address": lazarus})),
            (b"2", older.encode({**base, "event_id": "old-writer", "destination_address": lazarus.lower()})),
            (b"3", HEADER.pack(0, 4242) + b"\x00"),
        ],
    )
    outputs = reader.read_until(lambda o: len(o.decisions) >= 2 and o.dead_letters, 45, "both decisions + 1 DLQ")
    assert {d["event_id"]: d["decision"] for d in outputs.decisions} == {
        "new-writer": "FLAGGED",
        "old-writer": "FLAGGED",
    }
    assert outputs.dead_letter_reasons() == Counter({"unknown_schema_id": 1})
    assert set(state.subjects) == {f"{stack.topics.decisions}-value", f"{stack.topics.flagged}-value"}
    assert set(reader.schema_ids) == set(state.subjects.values()), "outputs are framed with the registry's ids"
    assert 1 <= state.gets[CURRENT_ID] <= 3, "fetched until it answered, then cached"
    assert screener.terminate() == 0
