"""schemathesis (its own CLI, a separate process) against the shipped OpenAPI document and a real `aml-screener api`
on a real redis-server: every operation, valid and invalid input (coverage and fuzzing phases), every check:
no 5xx, every answer as documented (status, content type, schema), invalid data refused, valid data accepted, no
answer without the API key.

The API runs with the document's own upper limits (a batch of 10,000, a 16 MiB body, a 10 MiB encoded event) so
that every request the document allows is one the server must accept (positive_data_acceptance); the configured
limits below those are tested in test_api.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aml_screener.api.openapi import API_KEY_HEADER, SHIPPED
from aml_screener.devstack.api_process import ApiProcess

pytestmark = pytest.mark.integration

# Examples per operation in the fuzzing phase: enough to reach every field's invalid forms; the coverage phase adds
# its boundary cases on top. A fixed seed makes a failure reproducible.
MAX_EXAMPLES = 150
SEED = 20261201


def test_no_5xx_and_every_answer_as_documented(loaded_redis: object, api_factory: object, tmp_path: Path) -> None:
    api: ApiProcess = api_factory(  # type: ignore[operator]
        loaded_redis.url,  # type: ignore[attr-defined]
        AML_API_MAX_BATCH="10000",
        AML_API_MAX_BODY_BYTES="16777216",
        AML_KAFKA_MAX_MESSAGE_BYTES="10485760",
    ).wait_ready()
    report = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            str(SHIPPED),
            "--url",
            api.url,
            "--header",
            f"{API_KEY_HEADER}: {api.key}",
            "--checks",
            "all",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # it keeps a cache in .schemathesis/ of its working directory
        timeout=600,  # a hang guard only (the run takes ~10 s)
        check=False,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-3000:]
    assert "No issues found" in result.stdout, result.stdout[-4000:]
    generated = int(result.stdout.split(" generated,")[0].rsplit(None, 1)[-1])
    assert generated >= 2 * MAX_EXAMPLES, result.stdout[-4000:]  # both operations were fuzzed, not skipped
    assert "Internal Server Error" not in api.log_text()
