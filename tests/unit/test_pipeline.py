"""The batch pipeline without Kafka or Redis: the lookup is a plain function over a dict (the domain's seam)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aml_screener.screener.codec import EventEncoder, FramedReader
from aml_screener.screener.errors import DeadLetterReason, LookupFailure, LookupUnavailable
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import (
    DLQ_HEADER_OFFSET,
    DLQ_HEADER_PARTITION,
    DLQ_HEADER_REASON,
    DLQ_HEADER_TOPIC,
    BatchScreener,
)
from aml_screener.screener.schemas import (
    WITHDRAWAL_REQUESTED,
)
from aml_screener.screening.decision import DECISION_NAMESPACE, decision_id
from aml_screener.screening.records import Match
from aml_screener.screening.watchlist import Listing
from tests.pipeline_support import CATALOG, REPOSITORY, Record, batch_screener

LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"
LAZARUS_KEY = "evm:" + LAZARUS.lower()
CLEAN_EVM = "0x52908400098527886e0f7030069857d2e4169ee7"
READER = FramedReader(REPOSITORY)
LAZARUS_MATCH = Listing(
    list="ofac-sdn",
    category="sanctions",
    source="sdn_advanced.xml",
    entry_id="27307",
    listed_address=LAZARUS,
    entry_name="Lazarus Group",
    programs=("DPRK3",),
    listed_asset="ETH",
).as_match()


def make_screener(watchlist: dict[str, list[Match]], version: str = "v-test", calls: list | None = None):
    def lookup(keys):
        if calls is not None:
            calls.append(list(keys))
        return LookupResult(version, max(1, len(watchlist)), {k: watchlist[k] for k in keys if k in watchlist}, 0.001)

    return batch_screener(lookup, instance_id="unit")


def withdrawal(event_id: str, network: str, address: str, **extra) -> bytes:
    entry = CATALOG.current(WITHDRAWAL_REQUESTED)
    record = {
        "event_id": event_id,
        "exchange_id": "upbit-kr",
        "account_id": "acct-9",
        "asset": "USDT",
        "network": network,
        "destination_address": address,
        "destination_tag": None,
        "amount": Decimal("10"),
        "usd_value": Decimal("10.00"),
        "requested_at": 1_699_999_999_000,
        "metadata": None,
    }
    record.update(extra)
    return EventEncoder(entry.schema, entry.schema_id).encode(record)


def records(*values: bytes | None) -> list[Record]:
    return [Record("in", 0, offset, 1_700_000_000_000, b"k", value) for offset, value in enumerate(values)]


def decoded(output) -> dict:
    return READER.decode(output.value)[1]


def run(screener: BatchScreener, batch: list[Record]):
    return screener.complete(screener.prepare(batch))


def test_listed_address_in_any_case_and_on_any_evm_chain_is_flagged_with_provenance():
    screener = make_screener({LAZARUS_KEY: [LAZARUS_MATCH]})
    batch = records(
        withdrawal("a", "ethereum", LAZARUS),
        withdrawal("b", "bsc", LAZARUS.lower()),
        withdrawal("c", "arbitrum", "0x" + LAZARUS[2:].upper()),
    )
    done = run(screener, batch)
    decisions = [decoded(o) for o in done.outputs if o.topic == "decisions"]
    flagged = [decoded(o) for o in done.outputs if o.topic == "flagged"]
    assert [d["decision"] for d in decisions] == ["FLAGGED"] * 3
    assert {d["address_key"] for d in decisions} == {LAZARUS_KEY}
    assert len(flagged) == 3
    first = flagged[0]
    assert first["severity"] == "critical"
    assert first["matches"][0]["entry_name"] == "Lazarus Group"
    assert first["matches"][0]["programs"] == ["DPRK3"]
    assert first["watchlist_version"] == "v-test"
    assert first["withdrawal"]["account_id"] == "acct-9", "analyst gets the whole withdrawal"
    assert first["withdrawal"]["amount"] == Decimal("10")
    assert "Lazarus Group" in first["summary"]
    assert first["decision_id"] == decisions[0]["decision_id"] == decision_id("a", "v-test")


def test_unlisted_address_is_clear_and_records_the_version():
    done = run(make_screener({LAZARUS_KEY: [LAZARUS_MATCH]}), records(withdrawal("a", "ethereum", CLEAN_EVM)))
    (decision,) = [decoded(o) for o in done.outputs]
    assert decision["decision"] == "CLEAR"
    assert decision["watchlist_version"] == "v-test"
    assert decision["matches"] == []
    assert decision["source"] == {"topic": "in", "partition": 0, "offset": 0, "schema_id": 1}


@pytest.mark.parametrize(
    ("network", "address", "reason_prefix"),
    [
        ("ethereum", "0x098B716B8Aaf21512996dC57EB0615e2383E2f97", "invalid_address"),  # wrong EIP-55 / char
        ("ethereum", "0x098b716b8aaf21512996dc57eb0615e2383e2f9", "invalid_address"),  # 39 hex digits
        ("bitcoin", "1BoatSLRHtKNngkdXEeobR76b53LETtpyX", "invalid_address"),  # checksum broken
        ("dogechain-x", LAZARUS, "unsupported_network"),
        ("ethereum", " " + CLEAN_EVM, "invalid_address"),
    ],
)
def test_invalid_address_or_unknown_network_is_unscreenable_never_clear(network, address, reason_prefix):
    done = run(make_screener({}), records(withdrawal("a", network, address)))
    (decision,) = [decoded(o) for o in done.outputs]
    assert decision["decision"] == "UNSCREENABLE"
    assert decision["reason"].startswith(reason_prefix)
    assert decision["address_key"] is None


def test_malformed_record_goes_to_dead_letter_with_original_bytes_and_position():
    bad = b"\x07garbage"
    batch = [Record("in", 3, 41, 1, b"key-1", bad)]
    done = run(make_screener({}), batch)
    (output,) = done.outputs
    assert output.topic == "dlq"
    assert output.value == bad, "the original bytes, untouched"
    assert output.key == b"key-1"
    headers = dict(output.headers or [])
    assert headers[DLQ_HEADER_REASON] == DeadLetterReason.BAD_MAGIC.value.encode()
    assert headers[DLQ_HEADER_TOPIC] == b"in"
    assert headers[DLQ_HEADER_PARTITION] == b"3"
    assert headers[DLQ_HEADER_OFFSET] == b"41"


def test_one_lookup_per_batch_with_unique_keys():
    calls: list = []
    screener = make_screener({}, calls=calls)
    run(screener, records(*(withdrawal(str(i), "ethereum", CLEAN_EVM) for i in range(50))))
    assert len(calls) == 1
    # the destination's key and the TRON address of the same 20-byte account (a related address), once each
    tron_twin = base58.b58encode_check(b"\x41" + bytes.fromhex(CLEAN_EVM[2:])).decode()
    assert calls[0] == ["evm:" + CLEAN_EVM, "trx:" + tron_twin]


def test_lookup_outage_decides_nothing_and_the_prepared_batch_can_be_retried():
    state = {"down": True}

    def lookup(keys):
        if state["down"]:
            raise LookupUnavailable(LookupFailure.REDIS_UNAVAILABLE, "connection refused")
        return LookupResult("v2", 1, {}, 0.001)

    screener = make_screener({})
    screener.lookup = lookup
    prepared = screener.prepare(records(withdrawal("a", "ethereum", CLEAN_EVM)))
    with pytest.raises(LookupUnavailable):
        screener.complete(prepared)
    state["down"] = False
    done = screener.complete(prepared)
    assert [decoded(o)["decision"] for o in done.outputs] == ["CLEAR"]


def test_every_screenable_input_gets_exactly_one_decision_and_dead_letters_none():
    screener = make_screener({LAZARUS_KEY: [LAZARUS_MATCH]})
    values = [withdrawal(f"e{i}", "ethereum", LAZARUS if i % 7 == 0 else CLEAN_EVM) for i in range(30)]
    values.insert(5, b"\x00\x00\x00")  # truncated header
    done = run(screener, records(*values))
    decisions = [decoded(o) for o in done.outputs if o.topic == "decisions"]
    assert sorted(d["event_id"] for d in decisions) == sorted(f"e{i}" for i in range(30))
    assert len([o for o in done.outputs if o.topic == "dlq"]) == 1
    assert len([o for o in done.outputs if o.topic == "flagged"]) == len([i for i in range(30) if i % 7 == 0])


def test_decision_id_is_deterministic_per_event_and_version():
    assert decision_id("e1", "v1") == decision_id("e1", "v1")
    assert decision_id("e1", "v1") != decision_id("e1", "v2")
    assert decision_id("e1", "v1") != decision_id("e2", "v1")


@given(st.text(min_size=1, max_size=80), st.one_of(st.none(), st.text(max_size=40)))
def test_decision_id_is_the_rfc4122_uuid5_of_event_and_version(event_id, version):
    expected = uuid.uuid5(DECISION_NAMESPACE, f"{event_id}\x1f{version or ''}")
    assert decision_id(event_id, version) == str(expected)


def test_dead_letter_and_hold_records_keep_the_input_records_own_headers():
    screener = batch_screener(lambda keys: LookupResult("v1", 1, {}, 0.0))
    own = [("trace-id", b"t-1"), ("empty", None)]
    bad = Record("in", 0, 1, 1, b"k", b"\x05garbage", own)
    dead = screener.complete(screener.prepare([bad])).outputs[0]
    assert dead.headers is not None and dead.headers[:2] == [("trace-id", b"t-1"), ("empty", b"")]
    assert dict(dead.headers)[DLQ_HEADER_REASON] == b"bad_magic"
    good = Record("in", 0, 2, 1, b"k", withdrawal("e-1", "ethereum", "0x52908400098527886e0f7030069857d2e4169ee7"), own)
    held = screener.hold(screener.prepare([good]), "redis_unavailable").outputs[0]
    assert held.headers is not None and held.headers[:2] == [("trace-id", b"t-1"), ("empty", b"")]
