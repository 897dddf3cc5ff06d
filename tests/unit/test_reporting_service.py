"""The reporter's loop against fakes of its Kafka ports (the process-level test proves the wiring): flagged offsets
are committed only after every new obligation of the batch is acknowledged; a failed write or an unreachable schema
registry sends the consumer back to the batch; an obligation is written once, never again (a filed one stays filed);
the metrics and drafts show what the state holds; and the obligations topic is created compacted, a deleting one or
a refusal stops the reporter, a transient error is retried."""

from __future__ import annotations

import csv
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.drafts import SUMMARY_FILE, Institution, write_drafts
from aml_screener.reporting.metrics import ReportingMetrics
from aml_screener.reporting.obligations import Obligation, ObligationKind, obligation_from_flagged
from aml_screener.reporting.service import Reporter, ReporterState
from aml_screener.reporting.topic import ObligationsTopicError, ensure_compacted
from aml_screener.screener.codec import FramedReader
from aml_screener.screener.errors import SchemaSourceUnavailable
from aml_screener.screening.records import Direction
from tests.pipeline_support import REPOSITORY
from tests.reporting_support import decoded, deposit_flagged, encode, theft_match, withdrawal_flagged

WITHDRAWALS, DEPOSITS = "withdrawals.flagged", "deposits.flagged"


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


@dataclass
class FakeConsumer:
    batches: list[dict[TopicPartition, list[Rec]]] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)

    def subscribe(self, topics: Sequence[str]) -> None:
        del topics

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Rec]]:
        del timeout_ms, max_records
        return self.batches.pop(0) if self.batches else {}

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def close(self, autocommit: bool = False) -> None:
        del autocommit


@dataclass
class FakeLog:
    """The obligations topic: writes land in `topic` when acknowledged; `refuse` makes the next writes fail."""

    refuse: int = 0
    topic: list[Obligation] = field(default_factory=list)
    writes: list[list[str]] = field(default_factory=list)
    read: int = 0

    def assign(self, timeout: float = 0) -> None:
        del timeout

    def catch_up(self, book: ObligationBook, timeout: float) -> int:
        del timeout
        return self.poll(book)

    def poll(self, book: ObligationBook, timeout_ms: int = 0) -> int:
        del timeout_ms
        new = self.topic[self.read :]
        for obligation in new:
            book.apply(obligation.obligation_id, obligation)
        self.read = len(self.topic)
        return len(new)

    def write(self, obligations: Sequence[Obligation], delivery_timeout: float) -> dict[str, str | None]:
        del delivery_timeout
        self.writes.append([o.obligation_id for o in obligations])
        if self.refuse:
            self.refuse -= 1
            return {o.obligation_id: "KafkaError{code=NOT_ENOUGH_REPLICAS}" for o in obligations}
        self.topic.extend(obligations)
        return {o.obligation_id: None for o in obligations}

    def close(self) -> None:
        pass


def reporter(consumer: FakeConsumer, topic_log: FakeLog, reader: Any = None) -> tuple[Reporter, ReportingMetrics]:
    book = ObligationBook()
    metrics = ReportingMetrics(book, registry=CollectorRegistry())
    state = ReporterState(on_readiness=lambda ready: metrics.ready.set(1 if ready else 0))
    instance = Reporter(
        flagged_consumer=consumer,
        obligations=topic_log,  # type: ignore[arg-type]
        reader=reader or FramedReader(REPOSITORY),
        book=book,
        metrics=metrics,
        state=state,
        directions={WITHDRAWALS: Direction.WITHDRAWAL, DEPOSITS: Direction.DEPOSIT},
        delivery_timeout_seconds=1.0,
        retry_max_seconds=0.01,
        stop=threading.Event(),
    )
    assert instance.rebuild()
    return instance, metrics


def sample(metrics: ReportingMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def batch(*records: Rec) -> dict[TopicPartition, list[Rec]]:
    out: dict[TopicPartition, list[Rec]] = {}
    for record in records:
        out.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
    return out


def test_offsets_are_committed_after_the_batchs_obligations_are_acknowledged() -> None:
    rejected, frozen = withdrawal_flagged(), deposit_flagged()
    consumer = FakeConsumer(
        [
            batch(
                Rec(WITHDRAWALS, 0, 10, encode(rejected)),
                Rec(WITHDRAWALS, 0, 11, encode(withdrawal_flagged(action="hold"))),
                Rec(WITHDRAWALS, 0, 12, b"\x00\x00\x00\x03\xe7garbage"),  # unknown schema id 999
                Rec(DEPOSITS, 1, 40, encode(frozen)),
                Rec(DEPOSITS, 1, 41, encode(deposit_flagged(action="freeze", sources=[("x", [theft_match("x")])]))),
            )
        ]
    )
    topic_log = FakeLog()
    loop, metrics = reporter(consumer, topic_log)
    loop.step()

    (written,) = topic_log.writes
    assert len(written) == 2
    assert {o.kind for o in topic_log.topic} == {ObligationKind.REJECTED_TRANSACTION, ObligationKind.BLOCKED_PROPERTY}
    assert consumer.commits == [{TopicPartition(WITHDRAWALS, 0): 13, TopicPartition(DEPOSITS, 1): 42}]
    assert consumer.seeks == []
    assert sample(metrics, "aml_screener_reporting_obligations_recorded_total", kind="rejected_transaction") == 1
    assert sample(metrics, "aml_screener_reporting_obligations_recorded_total", kind="blocked_property") == 1
    assert sample(metrics, "aml_screener_reporting_unreadable_records_total", topic=WITHDRAWALS) == 1
    assert sample(metrics, "aml_screener_reporting_flagged_events_total", direction="deposit") == 2
    assert sample(metrics, "aml_screener_reporting_ready") == 1
    # Known by now (acknowledged, read back next): the same events again write nothing.
    loop.obligations.poll(loop.book)
    consumer.batches.append(batch(Rec(WITHDRAWALS, 0, 13, encode(rejected)), Rec(DEPOSITS, 1, 42, encode(frozen))))
    loop.step()
    assert len(topic_log.writes) == 1
    assert consumer.commits[-1] == {TopicPartition(WITHDRAWALS, 0): 14, TopicPartition(DEPOSITS, 1): 43}


def test_a_write_kafka_does_not_acknowledge_is_retried_and_nothing_is_committed_meanwhile() -> None:
    first, second = withdrawal_flagged(), withdrawal_flagged()
    records = batch(Rec(WITHDRAWALS, 1, 7, encode(first)), Rec(WITHDRAWALS, 1, 8, encode(second)))
    consumer = FakeConsumer([records])
    topic_log = FakeLog(refuse=1)
    loop, metrics = reporter(consumer, topic_log)

    loop.step()
    assert consumer.commits == [], "nothing committed past an unacknowledged obligation"
    assert consumer.seeks == [(TopicPartition(WITHDRAWALS, 1), 7)], "back to the batch's first record"
    assert topic_log.topic == []
    assert loop.state.reason == "obligations_unwritable" and sample(metrics, "aml_screener_reporting_ready") == 0
    assert sample(metrics, "aml_screener_reporting_errors_total", where="write") == 1

    consumer.batches.append(records)  # what the consumer reads after the seek
    loop.step()
    assert len(topic_log.topic) == 2
    assert consumer.commits == [{TopicPartition(WITHDRAWALS, 1): 9}]
    ready, body = loop.state.readiness()
    assert ready and body["reason"] is None and sample(metrics, "aml_screener_reporting_ready") == 1


def test_reading_a_flagged_event_again_never_reopens_a_filed_obligation() -> None:
    record = withdrawal_flagged()
    obligation = obligation_from_flagged(decoded(record))
    assert obligation is not None
    filed = obligation.filed(at=datetime(2026, 12, 4, tzinfo=UTC), by="analyst", reference="ORS-1")
    topic_log = FakeLog(topic=[obligation, filed])  # recorded, then filed by `report file`
    consumer = FakeConsumer([batch(Rec(WITHDRAWALS, 0, 3, encode(record)), Rec(WITHDRAWALS, 0, 4, encode(record)))])
    loop, _metrics = reporter(consumer, topic_log)

    loop.step()
    assert topic_log.writes == []
    assert loop.book.get(obligation.obligation_id) == filed
    assert consumer.commits == [{TopicPartition(WITHDRAWALS, 0): 5}]


def test_a_duplicate_in_one_batch_is_written_once() -> None:
    record = deposit_flagged()
    consumer = FakeConsumer([batch(Rec(DEPOSITS, 0, 1, encode(record)), Rec(DEPOSITS, 0, 2, encode(record)))])
    topic_log = FakeLog()
    loop, _metrics = reporter(consumer, topic_log)
    loop.step()
    assert [len(ids) for ids in topic_log.writes] == [1]


class UnreachableRegistry:
    def decode(self, value: bytes) -> tuple[int, dict[str, Any]]:
        raise SchemaSourceUnavailable("schema registry unreachable for GET /schemas/ids/9: connection refused")


def test_an_unreachable_schema_registry_skips_nothing() -> None:
    consumer = FakeConsumer([batch(Rec(WITHDRAWALS, 0, 5, encode(withdrawal_flagged())))])
    topic_log = FakeLog()
    loop, metrics = reporter(consumer, topic_log, reader=UnreachableRegistry())
    loop.step()
    assert consumer.commits == [] and consumer.seeks == [(TopicPartition(WITHDRAWALS, 0), 5)]
    assert loop.state.reason == "schema_registry_unavailable"
    assert sample(metrics, "aml_screener_reporting_unreadable_records_total", topic=WITHDRAWALS) is None
    # Once polls work and nothing waits, the reporter is ready again.
    loop.step()
    assert loop.state.reason is None


def _obligation(decided_at: datetime, *, deposit: bool = False) -> Obligation:
    record = deposit_flagged(flagged_at=decided_at) if deposit else withdrawal_flagged(flagged_at=decided_at)
    obligation = obligation_from_flagged(decoded(record))
    assert obligation is not None
    return obligation


def test_metrics_follow_the_clock_open_due_soon_overdue_and_the_next_deadline() -> None:
    book = ObligationBook()
    now = datetime(2026, 12, 15, 15, 0, tzinfo=UTC)  # Tuesday 15 December 2026, 10:00 in Washington
    clock = [now]
    metrics = ReportingMetrics(book, warn_business_days=2, registry=CollectorRegistry(), clock=lambda: clock[0])
    assert sample(metrics, "aml_screener_reporting_open_obligations", kind="rejected_transaction") == 0
    assert sample(metrics, "aml_screener_reporting_next_due_timestamp_seconds") is None, "absent: nothing is due"

    overdue = _obligation(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))  # due Thursday 10 December
    soon = _obligation(datetime(2026, 12, 2, 15, 0, tzinfo=UTC), deposit=True)  # due Wednesday 16 December
    later = _obligation(datetime(2026, 12, 7, 15, 0, tzinfo=UTC))  # due Monday 21 December
    done = _obligation(datetime(2026, 11, 20, 15, 0, tzinfo=UTC)).filed(at=now, by="analyst")
    for obligation in (overdue, soon, later, done):
        book.apply(obligation.obligation_id, obligation)

    assert soon.due_date == date(2026, 12, 16) and later.due_date == date(2026, 12, 21)
    assert sample(metrics, "aml_screener_reporting_open_obligations", kind="rejected_transaction") == 2
    assert sample(metrics, "aml_screener_reporting_open_obligations", kind="blocked_property") == 1
    assert sample(metrics, "aml_screener_reporting_overdue_obligations", kind="rejected_transaction") == 1
    assert sample(metrics, "aml_screener_reporting_due_soon_obligations", kind="blocked_property") == 1
    assert sample(metrics, "aml_screener_reporting_due_soon_obligations", kind="rejected_transaction") == 0
    assert sample(metrics, "aml_screener_reporting_next_due_timestamp_seconds") == overdue.due_at.timestamp()
    assert sample(metrics, "aml_screener_reporting_known_obligations") == 4

    # Wednesday 16 December: `later` (Monday 21) has four business days left; on Friday 18 two (Friday, Monday):
    # due soon. `soon` (Wednesday 16) is overdue by then.
    clock[0] = now + timedelta(days=1)
    assert sample(metrics, "aml_screener_reporting_due_soon_obligations", kind="rejected_transaction") == 0
    clock[0] = datetime(2026, 12, 18, 14, 0, tzinfo=UTC)
    assert sample(metrics, "aml_screener_reporting_due_soon_obligations", kind="rejected_transaction") == 1
    assert sample(metrics, "aml_screener_reporting_overdue_obligations", kind="blocked_property") == 1

    # Filing everything leaves no deadline.
    for obligation in (overdue, soon, later):
        book.apply(obligation.obligation_id, obligation.filed(at=now, by="analyst"))
    assert sample(metrics, "aml_screener_reporting_next_due_timestamp_seconds") is None
    assert sample(metrics, "aml_screener_reporting_open_obligations", kind="rejected_transaction") == 0


def test_drafts_carry_the_forms_fields_and_say_what_is_left_to_complete(tmp_path: Path) -> None:
    rejected = _obligation(datetime(2026, 12, 2, 14, 30, tzinfo=UTC))
    blocked = _obligation(datetime(2026, 12, 3, 14, 30, tzinfo=UTC), deposit=True)
    institution = Institution(name="Example Exchange LLC", address="1 Main St, New York, NY", contact_name="C. Officer")
    now = datetime(2026, 12, 14, 15, 0, tzinfo=UTC)
    paths = write_drafts([blocked, rejected], tmp_path, institution, now)

    assert [path.name for path in paths] == [
        f"2026-12-16_rejected_transaction_{rejected.obligation_id}.json",
        f"2026-12-17_blocked_property_{blocked.obligation_id}.json",
    ]
    first = json.loads(paths[0].read_text())
    assert first["due_at_utc"] == "2026-12-17T04:59:59.999999+00:00" and first["business_days_left"] == 3
    form = first["form"]
    assert form["reporting_institution"]["name"] == "Example Exchange LLC"
    assert form["date_of_rejection"] == "2026-12-02"
    assert form["legal_authority"]["programs"] == ["DPRK3"]
    assert (
        form["sanctions_targets"][0]["entry_id"] == "27307" and form["sanctions_targets"][0]["name"] == "Lazarus Group"
    )
    transaction = form["rejected_transaction"]
    assert (transaction["amount"], transaction["value_usd"], transaction["asset"]) == ("12500.5", "12498.75", "USDT")
    assert transaction["account_or_reference_numbers"]["customer_account"] == "acct-0042"
    assert [party["role"] for party in form["parties"]] == ["originator", "beneficiary"]
    assert form["reason_for_rejection"].startswith("rejected: ")
    assert form["documentation"]["decision_id"] == rejected.evidence.decision_id
    assert form["documentation"]["watchlist_version"] == "v20261128-1"
    assert first["to_complete"] == [
        "reporting_institution.contact_phone",
        "reporting_institution.contact_email",
        "legal_authority.citations",
    ]
    second = json.loads(paths[1].read_text())
    assert second["form"]["date_blocked"] == "2026-12-03"
    assert "held_at" in second["form"]["blocked_property"]
    assert second["form"]["reason_for_blocking"].startswith("blocked (frozen): ")

    with (tmp_path / SUMMARY_FILE).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["obligation_id"] for row in rows] == [rejected.obligation_id, blocked.obligation_id]
    assert rows[1]["sanctions_targets"] == "Garantex Europe OU (ofac-sdn 36025)"
    assert rows[1]["draft"] == paths[1].name and rows[0]["usd_value"] == "12498.75"


@dataclass
class _Future:
    value: Any = None
    error: int | None = None

    def result(self, timeout: float | None = None) -> Any:
        del timeout
        if self.error is not None:
            raise KafkaException(KafkaError(self.error))
        return self.value


@dataclass
class _Entry:
    value: str


@dataclass
class FakeAdmin:
    """AdminClient answers: the topic exists or not, its cleanup.policy, what creating and describing it return."""

    exists: bool = True
    policy: str = "compact"
    create_error: int | None = None
    describe_error: int | None = None
    created: list[dict[str, str]] = field(default_factory=list)

    def list_topics(self, topic: str, timeout: float) -> Any:
        del timeout
        error = None if self.exists else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)

        @dataclass
        class Meta:
            topics: dict[str, Any]

        @dataclass
        class TopicMeta:
            error: Any

        return Meta({topic: TopicMeta(error)})

    def create_topics(self, topics: Sequence[Any], **kwargs: Any) -> dict[str, _Future]:
        del kwargs
        self.created += [dict(topic.config) for topic in topics]
        if self.create_error is None:
            self.exists = True
        return {topic.topic: _Future(error=self.create_error) for topic in topics}

    def describe_configs(self, resources: Sequence[Any], **kwargs: Any) -> dict[Any, _Future]:
        del kwargs
        return {r: _Future({"cleanup.policy": _Entry(self.policy)}, self.describe_error) for r in resources}


def test_the_obligations_topic_is_created_compacted_and_a_deleting_one_refused() -> None:
    missing = FakeAdmin(exists=False)
    assert ensure_compacted(missing, "compliance.obligations") == "created"  # type: ignore[arg-type]
    assert missing.created == [{"cleanup.policy": "compact"}]
    assert ensure_compacted(FakeAdmin(), "compliance.obligations") == "exists"  # type: ignore[arg-type]
    for policy in ("delete", "compact,delete"):
        expected = re.escape(f"cleanup.policy={policy}: obligations would be deleted")
        with pytest.raises(ObligationsTopicError, match=expected):
            ensure_compacted(FakeAdmin(policy=policy), "compliance.obligations")  # type: ignore[arg-type]


def test_refusals_stop_the_reporter_and_transient_errors_are_retried() -> None:
    topic = "compliance.obligations"
    refused = FakeAdmin(describe_error=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(ObligationsTopicError, match="DescribeConfigs"):
        ensure_compacted(refused, topic)  # type: ignore[arg-type]
    not_allowed = FakeAdmin(exists=False, create_error=KafkaError.CLUSTER_AUTHORIZATION_FAILED)
    with pytest.raises(ObligationsTopicError, match="could not be created"):
        ensure_compacted(not_allowed, topic)  # type: ignore[arg-type]
    raced = FakeAdmin(exists=False, create_error=KafkaError.TOPIC_ALREADY_EXISTS, policy="delete")
    with pytest.raises(ObligationsTopicError, match=r"cleanup\.policy=delete"):  # created meanwhile, checked anyway
        ensure_compacted(raced, topic)  # type: ignore[arg-type]
    for transient in (
        FakeAdmin(exists=False, create_error=KafkaError._TIMED_OUT),
        FakeAdmin(describe_error=KafkaError._TRANSPORT),
    ):
        with pytest.raises(KafkaException):  # the caller backs off and tries again
            ensure_compacted(transient, topic)  # type: ignore[arg-type]
