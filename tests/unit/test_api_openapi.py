"""The shipped OpenAPI document is the one the models describe, and it is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from aml_screener.api.openapi import SHIPPED, openapi_document

REPO = Path(__file__).resolve().parents[2]


def _script() -> object:
    spec = importlib.util.spec_from_file_location("update_openapi", REPO / "scripts" / "update_openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_document_is_generated_from_the_models() -> None:
    rendered = _script().render()  # type: ignore[attr-defined]
    assert SHIPPED.read_text() == rendered, "run: python scripts/update_openapi.py"
    assert yaml.safe_load(SHIPPED.read_text()) == openapi_document()


def test_it_is_valid_openapi_31_with_every_operation_secured() -> None:
    from jsonschema import Draft202012Validator

    document = yaml.safe_load(SHIPPED.read_text())
    assert document["openapi"] == "3.1.0"
    for path, item in document["paths"].items():
        operation = item["post"]
        assert operation["security"] == [{"apiKey": []}], path
        assert {"200", "401", "422", "503"} <= set(operation["responses"]), path
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
