"""The sync with real source files and a real redis-server: OFAC XML + CSV, conditional HTTP downloads, and the
allowlist's effect on decisions through the screener's own lookup and pipeline."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from aml_screener.cli import main
from aml_screener.devstack.stack import EmbeddedStack
from aml_screener.infra.watchlist_layout import WatchlistKeys
from aml_screener.screener.codec import FramedReader, WithdrawalEncoder
from aml_screener.screener.lookup import WatchlistLookup
from aml_screener.screener.schemas import (
    WITHDRAWAL_REQUESTED,
)
from aml_screener.watchlist.config import AddressListConfig, CustomAllowConfig, SourceConfig, load_config
from aml_screener.watchlist.sync import run_sync
from tests.pipeline_support import CATALOG, REPOSITORY, TOPICS, Record, batch_screener
from tests.shared_data import watchlist_data_dir

pytestmark = pytest.mark.integration

DATA = watchlist_data_dir()
XML = DATA / "ofac_sdn_advanced_xml_2024-09-26" / "sdn_advanced.xml.bz2"
CSV = DATA / "ofac_sdn_csv_2024-05-03" / "sdn.csv"
LAZARUS_KEY = "evm:0x098b716b8aaf21512996dc57eb0615e2383e2f96"


@pytest.mark.skipif(not XML.is_file() or not CSV.is_file(), reason="shared OFAC data not present")
def test_real_ofac_xml_and_csv_sync_into_one_version_and_an_unchanged_resync_changes_nothing(store, tmp_path):
    config = tmp_path / "sources.toml"
    config.write_text(
        f'[[source]]\nname = "ofac-xml"\nformat = "ofac-xml"\nlocation = "{XML}"\nlist = "ofac-sdn"\n\n'
        f'[[source]]\nname = "ofac-csv"\nformat = "ofac-csv"\nlocation = "{CSV}"\nlist = "ofac-sdn-csv"\n'
    )
    first = run_sync(store, load_config(config))
    assert first.activated
    statuses = {s.name: s for s in first.sources}
    xml = statuses["ofac-xml"]
    assert xml.status == "updated" and xml.report is not None
    assert xml.report.entries == 656 and dict(xml.report.rejected) == {"bad_characters": 1}
    assert xml.report.rehomed == 1, "the TRON address filed under XBT is kept under TRON"
    meta = store.active_meta()
    assert meta is not None and set(meta.tables) == {"ofac-xml", "ofac-csv"}
    assert meta.sources["ofac-xml"]["published_at"] is not None
    matches = store.lookup(meta.version, LAZARUS_KEY)
    assert {(m["list"], m["entry_name"]) for m in matches} >= {("ofac-sdn", "Lazarus Group")}
    assert all("DPRK3" in m["programs"] for m in matches if m["list"] == "ofac-sdn")
    again = run_sync(store, load_config(config))
    assert not again.activated and {s.status for s in again.sources} == {"unchanged"}
    assert store.source_state("ofac-xml")["last_success_at"]


@dataclass
class Served:
    body: bytes
    codes: list[int]


@pytest.fixture
def http_file() -> Iterator[tuple[str, Served]]:
    served = Served(b"0x098B716B8Aaf21512996dC57EB0615e2383E2f96\n", [])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            etag = '"' + hashlib.sha256(served.body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                served.codes.append(304)
                self.send_response(304)
                self.end_headers()
                return
            served.codes.append(200)
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.wfile.write(served.body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/lists/hacked_ETH.txt", served
    server.shutdown()
    server.server_close()


def test_an_unchanged_list_is_not_downloaded_again_and_an_unreachable_one_keeps_its_data(store, http_file):
    url, served = http_file
    config = AddressListConfig(name="hacks", location=url, list="hacks", category="theft")
    first = run_sync(store, [config])
    assert first.sources[0].status == "updated" and served.codes == [200]
    second = run_sync(store, [config])
    assert second.sources[0].status == "unchanged" and served.codes == [200, 304], "conditional request: 304"
    served.body += b"0x52908400098527886e0f7030069857d2e4169ee7\n"
    third = run_sync(store, [config])
    assert third.activated and third.diff["hacks"]["added"] == 1 and served.codes[-1] == 200
    down = AddressListConfig(name="hacks", location="http://127.0.0.1:9/x_ETH.txt", list="hacks", category="theft")
    fourth = run_sync(store, [down])
    assert fourth.sources[0].status == "failed-kept-previous"
    assert store.lookup(store.active_version() or "", LAZARUS_KEY), "previous data still enforced"


def test_allowlist_downgrades_overridable_matches_but_never_sanctions(store, tmp_path):
    hot_wallet = "0x52908400098527886e0f7030069857d2e4169ee7"  # the exchange's own, also on a theft list
    stolen = "0x7f367cc41522ce07553e823bf3be79a889debe1b"
    lazarus = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"
    (tmp_path / "ofac_ETH.txt").write_text(f"{lazarus}\n")
    (tmp_path / "thefts_ETH.txt").write_text(f"{hot_wallet}\n{stolen}\n")
    (tmp_path / "allow.csv").write_text(
        "address,chain,reason,reference\n"
        f"{hot_wallet},ethereum,our hot wallet,ops-1\n"
        f"{lazarus},ethereum,someone tried to allowlist a sanctioned address,ops-2\n"
    )
    sources: list[SourceConfig] = [
        AddressListConfig(
            name="ofac",
            location=str(tmp_path / "ofac_ETH.txt"),
            list="ofac",
            category="sanctions",
        ),
        AddressListConfig(
            name="thefts",
            location=str(tmp_path / "thefts_ETH.txt"),
            list="thefts",
            category="theft",
            overridable=True,
        ),
        CustomAllowConfig(name="allow", location=str(tmp_path / "allow.csv"), list="allow"),
    ]
    run_sync(store, sources)
    screener = batch_screener(WatchlistLookup(store.redis, WatchlistKeys()).lookup)
    entry = CATALOG.current(WITHDRAWAL_REQUESTED)
    encoder = WithdrawalEncoder(entry.schema, entry.schema_id)
    records = [
        Record(
            "in",
            0,
            i,
            1,
            None,
            encoder.encode(
                {
                    "event_id": name,
                    "exchange_id": "x",
                    "account_id": "a",
                    "asset": "ETH",
                    "network": "ethereum",
                    "destination_address": address,
                    "amount": Decimal(1),
                    "requested_at": 1,
                }
            ),
        )
        for i, (name, address) in enumerate([("hot", hot_wallet), ("stolen", stolen), ("lazarus", lazarus)])
    ]
    done = screener.complete(screener.prepare(records))
    reader = FramedReader(REPOSITORY)
    decisions = {
        d["event_id"]: d for d in (reader.decode(o.value)[1] for o in done.outputs if o.topic == TOPICS.decisions)
    }
    assert decisions["hot"]["decision"] == "CLEAR"
    assert [m["list"] for m in decisions["hot"]["overridden"]] == ["thefts"], "explainable: what was downgraded"
    assert decisions["hot"]["allowlisted"][0]["entry_id"] == "ops-1"
    assert decisions["stolen"]["decision"] == "FLAGGED" and decisions["stolen"]["severity"] == "high"
    assert decisions["lazarus"]["decision"] == "FLAGGED", "a sanctions match is never downgraded"
    assert decisions["lazarus"]["severity"] == "critical" and decisions["lazarus"]["overridden"] == []


def test_sync_publishes_changed_addresses_to_a_compacted_kafka_topic(kafka_cluster, tmp_path, monkeypatch, capsys):
    """`watchlist sync --kafka-topic`: key = address key, value = every current listing, tombstone = removed."""
    changes = f"watchlist.changes.{uuid.uuid4().hex[:8]}"
    with EmbeddedStack(kafka_cluster=kafka_cluster, topics={changes: 1}) as stack:
        monkeypatch.setenv("AML_REDIS_URL", stack.redis_url)
        monkeypatch.setenv("AML_KAFKA_BOOTSTRAP_SERVERS", stack.bootstrap_servers)
        listed = tmp_path / "hacks_ETH.txt"
        listed.write_text("0x098B716B8Aaf21512996dC57EB0615e2383E2f96\n0x52908400098527886e0f7030069857d2e4169ee7\n")
        config = tmp_path / "sources.toml"
        config.write_text(
            f'[[source]]\nname = "hacks"\nformat = "address-list"\nlocation = "{listed}"\ncategory = "theft"\n'
        )
        assert main(["watchlist", "sync", str(config), "--kafka-topic", changes, "--no-progress"]) == 0
        listed.write_text("0x098B716B8Aaf21512996dC57EB0615e2383E2f96\n")
        assert main(["watchlist", "sync", str(config), "--kafka-topic", changes, "--no-progress"]) == 0
        consumer = KafkaConsumer(**stack.kafka_python_config(), auto_offset_reset="earliest")
        consumer.assign([TopicPartition(changes, 0)])
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + 15
        while len(records) < 3 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        consumer.close()
    assert [(r.key.decode(), r.value is None) for r in records] == [
        ("evm:0x098b716b8aaf21512996dc57eb0615e2383e2f96", False),
        ("evm:0x52908400098527886e0f7030069857d2e4169ee7", False),
        ("evm:0x52908400098527886e0f7030069857d2e4169ee7", True),  # removed: a tombstone compacts it away
    ]
    assert json.loads(records[0].value)[0]["list"] == "hacks"
    assert "version" in capsys.readouterr().out
