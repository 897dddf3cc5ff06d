"""The README's first command: the demo runs the whole pipeline on the embedded default (the librdkafka mock, which
starts at once) and checks itself; and the same demo against a given Kafka, here the real cluster."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from aml_screener.devstack.stack import EmbeddedStack
from tests.integration.harness import Topics

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
    assert re.search(r"deposits\s+clear \d+, flagged [1-9]\d*, unscreenable \d+\n", out), "deposits streamed too"
    lazarus = re.search(r"deposit from a Lazarus Group address \(dep-demo-lazarus\): (.*)\n", out)
    assert lazarus and "FLAGGED" in lazarus.group(1) and "action freeze" in lazarus.group(1), (
        "the Lazarus deposit frozen"
    )
    assert "aml_screener_decisions_total" in out, "metrics excerpt scraped from /metrics"
    assert "result: OK" in out


def test_demo_with_the_lookback_shows_the_retroactive_matches_of_a_new_listing():
    """`demo --lookback`: a real PostgreSQL, the indexer and the lookback beside the screener; a new listing of the
    destination the stream used most finds every past event that touched it (the demo's own oracle: exit 0)."""
    command = ["demo", "--events", "3000", "--rate", "3000", "--http-port", "0", "--lookback"]
    result = subprocess.run(
        [sys.executable, "-m", "aml_screener.cli", *command], capture_output=True, text=True, timeout=300, check=False
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    reported = re.search(r"lookback: (\d+) of (\d+) past events that touched it reported", out)
    assert reported and reported.group(1) == reported.group(2) and int(reported.group(1)) >= 2, out
    assert "RetroactiveMatch: withdrawal" in out and "listed by ofac-sdn-update" in out
    assert "result: OK" in out


def test_demo_runs_against_a_given_kafka_and_redis(kafka_cluster):
    """`--bootstrap-servers/--redis-url`: no embedded stack of its own; here the 'external' one is the real 3-node
    cluster (the demo uses the default topic names, which no other test uses) with a Redis of ours."""
    topics = Topics().partitions()
    with EmbeddedStack(kafka_cluster=kafka_cluster, topics=topics) as external:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "aml_screener.cli",
                "demo",
                "--events",
                "1500",
                "--rate",
                "3000",
                "--http-port",
                "0",
                "--bootstrap-servers",
                external.bootstrap_servers,
                "--redis-url",
                external.redis_url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    kafka_cluster.admin().delete_topics(list(topics), operation_timeout=0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting the embedded stack" not in result.stdout
    assert "result: OK" in result.stdout
