"""The pre-screen API's OpenAPI 3.1 document, built from the request and answer models (api/models.py).

The running API serves it at GET /v1/openapi.json; the project ships the same document as
services/aml_screener/api/openapi.yaml (`python scripts/update_openapi.py` writes it, a test keeps it in step), for
clients and for the schemathesis tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from aml_screener.api.models import (
    AddressesAnswer,
    AddressesRequest,
    ErrorAnswer,
    WithdrawalAnswer,
    WithdrawalRequest,
)

_REF = "#/components/schemas/{model}"
API_KEY_HEADER = "X-API-Key"
# The contract's version: paths are under /v1; a change that breaks clients gets /v2 and a new major version here.
API_VERSION = "1.0.0"
# The shipped document (clients, schemathesis): scripts/update_openapi.py writes it from openapi_document().
SHIPPED = Path(__file__).with_name("openapi.yaml")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorAnswer")}}},
    }


_COMMON_ERRORS = {
    "400": _error("The body is not JSON (or not UTF-8)."),
    "401": _error("No API key, or one that is not accepted (header X-API-Key)."),
    "413": _error("The body is larger than AML_API_MAX_BODY_BYTES."),
    "415": _error("The body is not declared as application/json."),
    "422": _error("A field is missing or invalid: `errors` names each one (e.g. addresses[3].network)."),
    "503": _error(
        "The watchlist cannot be consulted (Redis down, no active version, damaged tables...): the answer is never "
        "'not listed' then; `reason` says why. Retry later."
    ),
}


def _operation(
    operation_id: str, summary: str, description: str, request: str, answer: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "Screened.",
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=answer)}}},
        },
        **_COMMON_ERRORS,
        **(extra or {}),
    }
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "security": [{"apiKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=request)}}},
            },
            "responses": dict(sorted(responses.items())),
        }
    }


def openapi_document() -> dict[str, Any]:
    """The document (info.version is the API's version, API_VERSION, not the release's)."""
    _, schemas = models_json_schema(
        [
            (model, "validation")
            for model in (AddressesRequest, WithdrawalRequest, AddressesAnswer, WithdrawalAnswer, ErrorAnswer)
        ],
        ref_template=_REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "aml-screener pre-screen API",
            "version": API_VERSION,
            "description": (
                "Synchronous screening against the watchlist the stream uses, with the same normalization, matching "
                "and action policy: check addresses (an address book entry, a withdrawal form) and screen a "
                "withdrawal attempt (the decision the stream makes, same decision id). Fails closed: 503 without a "
                "usable watchlist. docs/api.md"
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": {
            "/v1/screen/addresses": _operation(
                "screenAddresses",
                "Screen one or many {network, address} pairs",
                "Every pair: its normalized key, whether it is listed, every match (list, entry, provenance, "
                "match_type direct or related), and the policy's action for a withdrawal to it; the watchlist "
                "version and digest the answer was made with. One Redis round trip for the whole batch.",
                "AddressesRequest",
                "AddressesAnswer",
            ),
            "/v1/screen/withdrawal": _operation(
                "screenWithdrawal",
                "Screen a withdrawal attempt",
                "The ScreeningDecision the stream makes for this withdrawal (same decision id: event id + watchlist "
                "version). With AML_API_RECORD_DECISIONS the decision (and a flag) is recorded on the decisions "
                "topic before the answer.",
                "WithdrawalRequest",
                "WithdrawalAnswer",
                extra={
                    "503": _error(
                        "The watchlist cannot be consulted, or the decision was to be recorded and Kafka did "
                        "not acknowledge it (error not_recorded)."
                    )
                },
            ),
        },
        "components": {
            "schemas": dict(sorted(schemas["$defs"].items())),
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": "A key from `aml-screener api keys create` (stored hashed).",
                }
            },
        },
    }
