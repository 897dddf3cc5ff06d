"""The README's first command: the demo runs the whole pipeline on the embedded default and checks itself."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_screens_a_stream_end_to_end_and_reports_ok():
    result = subprocess.run(
        [sys.executable, "-m", "aml_screener.cli", "demo", "--events", "3000", "--rate", "3000", "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "loaded 96 OFAC SDN addresses of 11 parties" in out
    assert re.search(r"missed hits / false hits\s+0 / 0\n", out)
    assert re.search(r"listed but decided clear\s+0\n", out)
    assert re.search(r"events without decision\s+0\n", out)
    assert "Lazarus Group" in out
    assert "aml_screener_decisions_total" in out, "metrics excerpt scraped from /metrics"
    assert "result: OK" in out
