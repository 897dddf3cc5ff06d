"""Deposits through the batch pipeline (no Kafka, no Redis: the lookup is a function over a dict).

A deposit is screened on every source address: the funds came from all of them, so one listed input is enough to
flag it, and the decision names each source's own result. Withdrawals and deposits share a batch and its one
lookup round trip.
"""

from __future__ import annotations

import random
from decimal import Decimal

import base58
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aml_screener.devstack.address_factory import random_address
from aml_screener.screener.codec import SOURCE_ADDRESSES_MAX, EventEncoder, FramedReader
from aml_screener.screener.errors import DeadLetterReason
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.pipeline import DLQ_HEADER_REASON, DLQ_HEADER_TOPIC, BatchScreener
from aml_screener.screener.schemas import DEPOSIT_RECEIVED, WITHDRAWAL_REQUESTED
from aml_screener.screening.decision import decision_id, deposit_decision_id
from aml_screener.screening.records import Match
from aml_screener.screening.watchlist import Listing
from tests.pipeline_support import CATALOG, DEPOSIT_TOPIC, REPOSITORY, Record, batch_screener

READER = FramedReader(REPOSITORY)
LAZARUS = "0x098B716B8Aaf21512996dC57EB0615e2383E2f96"
LAZARUS_KEY = "evm:" + LAZARUS.lower()
LAZARUS_TRON = base58.b58encode_check(b"\x41" + bytes.fromhex(LAZARUS[2:])).decode()
CLEAN_EVM = "0x52908400098527886e0f7030069857d2e4169ee7"
CLEAN_EVM_2 = "0xde709f2102306220921060314715629080e2fb77"
# A Bitcoin address listed by a hack list (Lazarus' Bybit proceeds are on EVM; this one stands for any BTC listing).
HACK_BTC = "bc1qa5wkgaew2dkv56kfvj49j0av5nml45x9ek9hz6"
HACK_BTC_KEY = "btc:bc1qa5wkgaew2dkv56kfvj49j0av5nml45x9ek9hz6"


def listing(address: str, *, list_name: str, category: str, asset: str, entry_id: str, name: str) -> Match:
    return Listing(
        list=list_name,
        category=category,
        source=f"{list_name}.csv",
        entry_id=entry_id,
        listed_address=address,
        entry_name=name,
        programs=("DPRK3",) if category == "sanctions" else (),
        listed_asset=asset,
    ).as_match()


LAZARUS_MATCH = listing(
    LAZARUS, list_name="ofac-sdn", category="sanctions", asset="ETH", entry_id="27307", name="Lazarus Group"
)
HACK_MATCH = listing(
    HACK_BTC, list_name="hacks", category="theft", asset="BTC", entry_id="bybit-2025", name="Bybit hack 2025"
)
WATCHLIST = {LAZARUS_KEY: [LAZARUS_MATCH], HACK_BTC_KEY: [HACK_MATCH]}


def make_screener(watchlist: dict[str, list[Match]] = WATCHLIST, calls: list | None = None) -> BatchScreener:
    def lookup(keys):
        if calls is not None:
            calls.append(list(keys))
        found = {key: watchlist[key] for key in keys if key in watchlist}
        return LookupResult("v-dep", max(1, len(watchlist)), found, 0.001, frozenset(), "digest-of-v-dep")

    return batch_screener(lookup, instance_id="unit")


def deposit(event_id: str, network: str, sources: list[str], **extra) -> bytes:
    entry = CATALOG.current(DEPOSIT_RECEIVED)
    record = {
        "event_id": event_id,
        "exchange_id": "upbit-kr",
        "account_id": "acct-7",
        "asset": "ETH",
        "network": network,
        "tx_hash": "0x" + "ab" * 32,
        "output_index": 3,
        "receiving_address": "0x00000000219ab540356cbb839cbe05303d7705fa",
        "source_addresses": sources,
        "amount": Decimal("1.5"),
        "usd_value": Decimal("5400.00"),
        "observed_at": 1_700_000_000_000,
        "confirmations": 12,
        "metadata": {"wallet": "hot-2"},
    }
    record.update(extra)
    return EventEncoder(entry.schema, entry.schema_id).encode(record)


def withdrawal(event_id: str, network: str, address: str) -> bytes:
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
    return EventEncoder(entry.schema, entry.schema_id).encode(record)


def on(topic: str, *values: bytes | None, first_offset: int = 0) -> list[Record]:
    return [Record(topic, 0, first_offset + i, 1_700_000_000_000, b"k", value) for i, value in enumerate(values)]


def run(screener: BatchScreener, batch: list[Record]):
    return screener.complete(screener.prepare(batch))


def outputs_on(done, topic: str) -> list[dict]:
    return [READER.decode(output.value)[1] for output in done.outputs if output.topic == topic]


def test_a_deposit_with_one_listed_source_among_several_is_flagged_and_names_every_sources_result():
    sources = [CLEAN_EVM, LAZARUS.lower(), "0xnot-an-address"]
    done = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "ethereum", sources)))
    (decision,) = outputs_on(done, "decisions")
    assert decision["direction"] == "deposit"
    assert decision["decision"] == "FLAGGED" and decision["severity"] == "critical"
    assert decision["decision_id"] == deposit_decision_id("d1", "v-dep")
    assert decision["address"] is None and decision["address_key"] is None, "a deposit's addresses are in sources"
    by_address = {source["address"]: source for source in decision["sources"]}
    assert list(by_address) == sources, "every source, in the event's order, as typed"
    assert by_address[CLEAN_EVM]["outcome"] == "CLEAR"
    assert by_address[CLEAN_EVM]["address_key"] == f"evm:{CLEAN_EVM}"
    assert by_address[LAZARUS.lower()]["outcome"] == "FLAGGED"
    assert by_address[LAZARUS.lower()]["matches"][0]["entry_name"] == "Lazarus Group"
    assert by_address["0xnot-an-address"]["outcome"] == "UNSCREENABLE"
    assert by_address["0xnot-an-address"]["reason"].startswith("invalid_address")
    assert [m["entry_id"] for m in decision["matches"]] == ["27307"]
    # The TRON twin of each EVM source was checked too, and the decision says so.
    checked = {c["key"]: c["relation"] for c in by_address[CLEAN_EVM]["checked_keys"]}
    assert checked, "related keys of a source are recorded"

    (flagged,) = outputs_on(done, "deposits.flagged")
    assert outputs_on(done, "flagged") == [], "deposits are not flagged on the withdrawals' flagged topic"
    assert flagged["decision_id"] == decision["decision_id"]
    assert flagged["deposit"]["tx_hash"] == "0x" + "ab" * 32 and flagged["deposit"]["output_index"] == 3
    assert flagged["deposit"]["amount"] == Decimal("1.5") and flagged["deposit"]["usd_value"] == Decimal("5400.00")
    assert flagged["deposit"]["source_addresses"] == sources
    assert flagged["sources"] == decision["sources"]
    assert flagged["summary"].startswith("ETH on ethereum from an address listed by ofac-sdn (Lazarus Group")
    assert flagged["watchlist_version"] == "v-dep"
    assert flagged["screener_version"] == decision["screener_version"] == "aml-screener test"


def test_a_deposit_is_clear_only_when_every_source_is_checked_and_clean():
    clean = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "ethereum", [CLEAN_EVM, CLEAN_EVM_2])))
    (decision,) = outputs_on(clean, "decisions")
    assert decision["decision"] == "CLEAR" and decision["severity"] is None
    assert [s["outcome"] for s in decision["sources"]] == ["CLEAR", "CLEAR"]
    assert outputs_on(clean, "deposits.flagged") == []

    one_bad = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d2", "ethereum", [CLEAN_EVM, "0x12"])))
    (decision,) = outputs_on(one_bad, "decisions")
    assert decision["decision"] == "UNSCREENABLE", "a source that could not be checked makes the deposit unscreenable"
    assert decision["reason"].startswith("invalid_address")


def test_a_deposit_on_an_unknown_network_is_unscreenable_never_clear():
    done = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "no-such-chain", [CLEAN_EVM])))
    (decision,) = outputs_on(done, "decisions")
    assert (decision["decision"], decision["reason"]) == ("UNSCREENABLE", "unsupported_network")


def test_a_deposit_from_the_tron_twin_of_a_listed_evm_account_is_a_related_match_one_level_lower():
    done = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "tron", [LAZARUS_TRON], asset="USDT")))
    (decision,) = outputs_on(done, "decisions")
    assert decision["decision"] == "FLAGGED"
    assert decision["severity"] == "high", "a related sanctions match is one level below a direct one"
    (match,) = decision["matches"]
    assert (match["match_type"], match["relation"], match["listed_key"]) == ("related", "same_account", LAZARUS_KEY)
    assert decision["sources"][0]["address_key"] == f"trx:{LAZARUS_TRON}"


def test_the_highest_severity_over_all_sources_is_the_deposits():
    hack_only = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "bitcoin", [HACK_BTC], asset="BTC")))
    assert outputs_on(hack_only, "decisions")[0]["severity"] == "high"
    both = run(
        make_screener(),
        on(DEPOSIT_TOPIC, deposit("d2", "bitcoin", [HACK_BTC]), deposit("d3", "ethereum", [CLEAN_EVM, LAZARUS])),
    )
    severities = [d["severity"] for d in outputs_on(both, "decisions")]
    assert severities == ["high", "critical"]


def test_a_source_repeated_by_a_utxo_transaction_is_screened_and_reported_once():
    done = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "bitcoin", [HACK_BTC, HACK_BTC, HACK_BTC.upper()])))
    (decision,) = outputs_on(done, "decisions")
    assert [s["address"] for s in decision["sources"]] == [HACK_BTC, HACK_BTC.upper()]
    assert {s["address_key"] for s in decision["sources"]} == {HACK_BTC_KEY}


def test_a_mixed_batch_is_one_lookup_for_every_address_of_every_event():
    calls: list[list[str]] = []
    batch = on("withdrawals", withdrawal("w1", "ethereum", LAZARUS), withdrawal("w2", "ethereum", CLEAN_EVM)) + on(
        DEPOSIT_TOPIC,
        deposit("d1", "ethereum", [CLEAN_EVM, CLEAN_EVM_2]),
        deposit("d2", "bitcoin", [HACK_BTC], asset="BTC"),
    )
    done = run(make_screener(calls=calls), batch)
    assert len(calls) == 1, "one round trip for the whole batch"
    (keys,) = calls
    assert len(keys) == len(set(keys)), "each key asked once"
    assert {LAZARUS_KEY, f"evm:{CLEAN_EVM}", f"evm:{CLEAN_EVM_2}", HACK_BTC_KEY} <= set(keys)
    decisions = outputs_on(done, "decisions")
    assert [(d["direction"], d["event_id"], d["decision"]) for d in decisions] == [
        ("withdrawal", "w1", "FLAGGED"),
        ("withdrawal", "w2", "CLEAR"),
        ("deposit", "d1", "CLEAR"),
        ("deposit", "d2", "FLAGGED"),
    ]
    assert len(outputs_on(done, "flagged")) == 1 and len(outputs_on(done, "deposits.flagged")) == 1
    assert [event.direction.value for event in done.decided] == ["withdrawal"] * 2 + ["deposit"] * 2


def test_a_withdrawal_and_a_deposit_sharing_an_event_id_get_different_decision_ids():
    batch = on("withdrawals", withdrawal("same", "ethereum", CLEAN_EVM)) + on(
        DEPOSIT_TOPIC, deposit("same", "ethereum", [CLEAN_EVM])
    )
    ids = [d["decision_id"] for d in outputs_on(run(make_screener(), batch), "decisions")]
    assert ids == [decision_id("same", "v-dep"), deposit_decision_id("same", "v-dep")]
    assert ids[0] != ids[1]


def test_every_decision_carries_the_evidence_to_reproduce_it():
    done = run(make_screener(), on(DEPOSIT_TOPIC, deposit("d1", "ethereum", [LAZARUS]), first_offset=41))
    (decision,) = outputs_on(done, "decisions")
    assert decision["source"] == {
        "topic": DEPOSIT_TOPIC,
        "partition": 0,
        "offset": 41,
        "schema_id": CATALOG.current(DEPOSIT_RECEIVED).schema_id,
    }
    assert (decision["watchlist_version"], decision["watchlist_digest"]) == ("v-dep", "digest-of-v-dep")
    assert decision["screener_version"] == "aml-screener test"
    (source,) = decision["sources"]
    assert (source["address"], source["address_key"]) == (LAZARUS, LAZARUS_KEY), "the typed address and its key"
    assert decision["matches"][0]["published_at"] is None or isinstance(decision["matches"][0]["published_at"], int)


@pytest.mark.parametrize(
    ("sources", "reason", "detail"),
    [
        ([], DeadLetterReason.INVALID_FIELD, "source_addresses is empty"),
        (["1"] * (SOURCE_ADDRESSES_MAX + 1), DeadLetterReason.FIELD_TOO_LONG, "source_addresses has 2001"),
        (["0x" + "a" * 2_000], DeadLetterReason.FIELD_TOO_LONG, "a source address has 2002 characters"),
    ],
    ids=["no-source", "too-many-sources", "over-long-source"],
)
def test_deposits_that_cannot_be_screened_go_to_the_deposit_dead_letter_topic(sources, reason, detail):
    _dead_lettered_as(deposit("d1", "ethereum", sources), reason, detail)


@pytest.mark.parametrize(
    ("field", "raw", "detail"),
    [
        ("observed_at", 253_402_300_800_000, "observed_at 253402300800000 is not a time between years 1 and 9999"),
        ("usd_value", (10**20).to_bytes(9, "big", signed=True), "usd_value has more than 20 digits"),
    ],
    ids=["observed-in-year-10000", "usd-21-digits"],
)
def test_deposit_values_their_logical_type_cannot_hold_are_dead_lettered(field, raw, detail):
    _dead_lettered_as(deposit("d1", "ethereum", [LAZARUS], **{field: raw}), DeadLetterReason.INVALID_FIELD, detail)


def _dead_lettered_as(value: bytes, reason: DeadLetterReason, detail: str) -> None:
    done = run(make_screener(), on(DEPOSIT_TOPIC, value))
    assert outputs_on(done, "decisions") == []
    (dead,) = [output for output in done.outputs if output.topic == "deposits.dlq"]
    headers = dict(dead.headers or [])
    assert dead.value == value, "the original bytes, untouched"
    assert headers[DLQ_HEADER_REASON] == reason.value.encode()
    assert headers[DLQ_HEADER_TOPIC] == DEPOSIT_TOPIC.encode()
    assert detail in dict(dead.headers or [])["aml.dlq.detail"].decode()


def test_a_withdrawal_sent_to_the_deposit_topic_is_dead_lettered_not_misread():
    done = run(make_screener(), on(DEPOSIT_TOPIC, withdrawal("w1", "ethereum", LAZARUS)))
    (dead,) = done.outputs
    assert dead.topic == "deposits.dlq"
    assert dict(dead.headers or [])[DLQ_HEADER_REASON] == DeadLetterReason.WRONG_TYPE.value.encode()


def test_fail_open_passes_deposits_to_their_own_hold_topic():
    screener = make_screener()
    batch = on("withdrawals", withdrawal("w1", "ethereum", CLEAN_EVM))
    prepared = screener.prepare(batch + on(DEPOSIT_TOPIC, deposit("d1", "bitcoin", [HACK_BTC])))
    held = screener.hold(prepared, "redis_unavailable")
    assert [output.topic for output in held.outputs] == ["withdrawals.held", "deposits.held"]
    assert held.decided == [], "held events are never decided"


NETWORKS = ("ethereum", "tron", "bitcoin", "solana", "litecoin")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),  # deposit?
            st.sampled_from(NETWORKS),
            st.integers(min_value=0, max_value=3),  # extra sources
            st.integers(min_value=0, max_value=2**32),
            st.booleans(),  # corrupt the record?
        ),
        min_size=1,
        max_size=25,
    )
)
def test_every_input_of_a_mixed_stream_gets_exactly_one_decision_or_one_dead_letter(events):
    batch: list[Record] = []
    for index, (is_deposit, network, extra, seed, corrupt) in enumerate(events):
        rng = random.Random(seed)
        address = random_address(network, rng)
        if is_deposit:
            sources = [address] + [random_address(network, rng) for _ in range(extra)]
            value = deposit(f"e{index}", network, sources)
        else:
            value = withdrawal(f"e{index}", network, address)
        if corrupt:
            value = value[:5] + b"\xff\xff" + value[7:]
        batch.append(Record(DEPOSIT_TOPIC if is_deposit else "withdrawals", 0, index, 1, b"k", value))
    done = run(make_screener(), batch)
    decided = {(d["source"]["topic"], d["source"]["offset"]) for d in outputs_on(done, "decisions")}
    dead = {(o.topic, int(dict(o.headers or [])["aml.source.offset"])) for o in done.outputs if "dl" in o.topic}
    assert len(decided) + len(dead) == len(batch), "nothing lost, nothing twice"
    for record in batch:
        key = (record.topic, record.offset)
        dlq = "deposits.dlq" if record.topic == DEPOSIT_TOPIC else "dlq"
        assert key in decided or (dlq, record.offset) in dead
