"""`aml-screener report` end to end on the real Kafka cluster: `report serve` as a process records the obligations of
flagged events (produced directly to the flagged topics, with the action set, as the action policy will), keeps them
in a compacted topic it creates, exports them as metrics, and rebuilds its state from that topic after a restart;
`list`, `drafts` and `file` work on the same topic, and a filed obligation stays filed when its flagged event is
read again."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]
from kafka import TopicPartition

from aml_screener.reporting.deadlines import eastern_date
from aml_screener.reporting.obligations import ObligationKind, ObligationStatus, obligation_from_flagged
from tests.integration.harness import IsolatedStack
from tests.integration.reporting_process import (
    ReporterProcess,
    committed,
    list_json,
    produce_values,
    read_topic,
    reporting_env,
    run_report,
    unique_obligations_topic,
)
from tests.reporting_support import decoded, deposit_flagged, encode, theft_match, withdrawal_flagged

pytestmark = pytest.mark.integration

INSTITUTION = {
    "AML_REPORTING_INSTITUTION_NAME": "Example Exchange LLC",
    "AML_REPORTING_INSTITUTION_ADDRESS": "1 Main Street, New York, NY 10001",
    "AML_REPORTING_CONTACT_NAME": "Chief Compliance Officer",
    "AML_REPORTING_CONTACT_PHONE": "+1 212 555 0100",
    "AML_REPORTING_CONTACT_EMAIL": "compliance@example.com",
}


def open_count(reporter: ReporterProcess, kind: ObligationKind) -> float:
    return reporter.metric("aml_screener_reporting_open_obligations", kind=kind.value)


def test_report_serve_records_obligations_and_rebuilds_them_after_a_restart(stack: IsolatedStack, tmp_path: Path):
    cluster = stack.cluster
    obligations_topic = unique_obligations_topic()  # left to the reporter to create
    group = f"aml-reporting-test-{uuid.uuid4().hex[:8]}"
    serve_env = {**reporting_env(obligations_topic, group), **INSTITUTION}
    reporters: list[ReporterProcess] = []

    def start(instance: str) -> ReporterProcess:
        process = ReporterProcess(stack, group=group, instance=instance, env=serve_env)
        reporters.append(process.start())
        return process

    try:
        now = datetime.now(UTC)
        rejected = withdrawal_flagged(action="reject", flagged_at=now - timedelta(days=30))  # long overdue
        frozen = deposit_flagged(action="freeze", flagged_at=now)  # due in two weeks
        produce_values(
            stack.bootstrap_servers,
            stack.topics.flagged,
            [
                (rejected["event_id"].encode(), encode(rejected)),
                (b"held", encode(withdrawal_flagged(action="hold"))),
                (b"theft", encode(withdrawal_flagged(action="reject", matches=[theft_match()]))),
                (b"garbage", b"\x00\x00\x00\x00\x63not avro"),
            ],
        )
        produce_values(stack.bootstrap_servers, stack.topics.deposit_flagged, [(b"d1", encode(frozen))])
        expected_rejected = obligation_from_flagged(decoded(rejected))
        expected_frozen = obligation_from_flagged(decoded(frozen))
        assert expected_rejected is not None and expected_frozen is not None

        first = start("r1")
        env = first.env  # the one-shot commands get the same settings
        first.wait_ready()
        first.wait_until(
            lambda: (
                open_count(first, ObligationKind.REJECTED_TRANSACTION) == 1
                and open_count(first, ObligationKind.BLOCKED_PROPERTY) == 1
            ),
            60,
            "both obligations recorded",
        )

        # The state topic: created compacted, one value per obligation, exactly what the flagged events oblige.
        resource = ConfigResource(ConfigResource.Type.TOPIC, obligations_topic)
        configs = cluster.admin().describe_configs([resource])[resource].result(15)
        assert configs["cleanup.policy"].value == "compact"
        records = read_topic(stack, obligations_topic)
        assert {key for key, _ in records} == {expected_rejected.obligation_id, expected_frozen.obligation_id}
        by_id = {key: value for key, value in records}
        recorded = by_id[expected_rejected.obligation_id]
        assert recorded is not None and recorded.status is ObligationStatus.OPEN
        assert recorded.model_dump(exclude={"evidence"}) == expected_rejected.model_dump(exclude={"evidence"})
        # Where it was read (the first record of its partition) and where its input was.
        assert (recorded.evidence.flagged_topic, recorded.evidence.flagged_offset) == (stack.topics.flagged, 0)
        # The flagged offsets are committed (after the writes were acknowledged): every record was handled.
        flagged_partitions = [TopicPartition(stack.topics.flagged, p) for p in range(2)]
        flagged_partitions.append(TopicPartition(stack.topics.deposit_flagged, 0))
        first.wait_until(
            lambda: sum(max(offset, 0) for offset in committed(stack, group, flagged_partitions).values()) == 5,
            30,
            "all five flagged records committed",
        )
        assert first.metric("aml_screener_reporting_unreadable_records_total", topic=stack.topics.flagged) == 1

        # Metrics: one overdue, the next deadline the overdue one's, nothing due soon.
        assert first.metric("aml_screener_reporting_overdue_obligations", kind="rejected_transaction") == 1
        assert first.metric("aml_screener_reporting_overdue_obligations", kind="blocked_property") == 0
        assert first.metric("aml_screener_reporting_due_soon_obligations", kind="blocked_property") == 0
        assert first.metric("aml_screener_reporting_next_due_timestamp_seconds") == pytest.approx(
            expected_rejected.due_at.timestamp()
        )
        assert first.probe("/healthz")[0] == 200

        # list and drafts, from the topic, by separate processes.
        listed = list_json(env, "open")
        assert [o.obligation_id for o in listed] == [expected_rejected.obligation_id, expected_frozen.obligation_id]
        out = tmp_path / "drafts"
        result = run_report(env, "drafts", "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["drafts"] == 2
        drafts = {path.name: json.loads(path.read_text()) for path in out.glob("*.json")}
        assert len(drafts) == 2
        rejected_draft = next(d for d in drafts.values() if d["kind"] == "rejected_transaction")
        assert rejected_draft["form"]["reporting_institution"]["name"] == "Example Exchange LLC"
        assert rejected_draft["form"]["sanctions_targets"][0]["name"] == "Lazarus Group"
        assert rejected_draft["to_complete"] == ["legal_authority.citations"]
        with (out / "summary.csv").open(newline="") as handle:
            assert len(list(csv.DictReader(handle))) == 2
        today = eastern_date(now).isoformat()  # a --since date is a date in Washington
        since_today = run_report(env, "drafts", "--out", str(tmp_path / "recent"), "--since", today)
        assert json.loads(since_today.stdout)["drafts"] == 1, since_today.stderr

        # file: a new value on the topic; the running reporter follows it.
        unknown = run_report(env, "file", "00000000-0000-0000-0000-000000000000")
        assert unknown.returncode == 1 and "no obligation" in unknown.stderr
        filed = run_report(
            env, "file", expected_rejected.obligation_id[:13], "--reference", "ORS-2026-0042", "--by", "analyst"
        )
        assert filed.returncode == 0, filed.stderr
        first.wait_until(
            lambda: open_count(first, ObligationKind.REJECTED_TRANSACTION) == 0, 30, "the filing seen by serve"
        )
        assert first.metric("aml_screener_reporting_overdue_obligations", kind="rejected_transaction") == 0
        assert first.metric("aml_screener_reporting_next_due_timestamp_seconds") == pytest.approx(
            expected_frozen.due_at.timestamp()
        )
        again = run_report(env, "file", expected_rejected.obligation_id)
        assert again.returncode == 0 and "filed already" in again.stdout

        # The rejected withdrawal's flagged event read again (a screener re-emitting it after a crash): the
        # filed obligation stays filed, nothing is written.
        produce_values(
            stack.bootstrap_servers, stack.topics.flagged, [(rejected["event_id"].encode(), encode(rejected))]
        )
        first.wait_until(
            lambda: sum(max(offset, 0) for offset in committed(stack, group, flagged_partitions).values()) == 6,
            30,
            "the duplicate committed",
        )
        values = [
            value for key, value in read_topic(stack, obligations_topic) if key == expected_rejected.obligation_id
        ]
        assert [value.status if value else None for value in values] == [ObligationStatus.OPEN, ObligationStatus.FILED]
        assert values[-1] is not None and values[-1].filing is not None
        assert values[-1].filing.reference == "ORS-2026-0042" and values[-1].filing.filed_by == "analyst"
        assert open_count(first, ObligationKind.REJECTED_TRANSACTION) == 0

        assert first.terminate() == 0

        # Restart: the state comes back from the topic (one filed, one open), and new events still get recorded.
        second = start("r2")
        body = second.wait_ready()
        assert body["obligations"] == 2
        assert open_count(second, ObligationKind.REJECTED_TRANSACTION) == 0
        assert open_count(second, ObligationKind.BLOCKED_PROPERTY) == 1
        assert second.metric("aml_screener_reporting_known_obligations") == 2
        later = deposit_flagged(action="freeze", flagged_at=datetime.now(UTC))
        produce_values(stack.bootstrap_servers, stack.topics.deposit_flagged, [(b"d2", encode(later))])
        second.wait_until(
            lambda: open_count(second, ObligationKind.BLOCKED_PROPERTY) == 2, 60, "a new obligation after restart"
        )
        assert second.metric("aml_screener_reporting_obligations_recorded_total", kind="blocked_property") == 1
        assert [o.status for o in list_json(env)].count(ObligationStatus.OPEN) == 2
        assert second.terminate() == 0
    finally:
        for process in reporters:
            process.close()


def test_report_serve_refuses_an_obligations_topic_that_is_not_compacted(stack: IsolatedStack) -> None:
    obligations_topic = unique_obligations_topic()
    stack.cluster.create_topic(obligations_topic, 1)  # cleanup.policy=delete: obligations would expire
    group = f"aml-reporting-test-{uuid.uuid4().hex[:8]}"
    process = ReporterProcess(stack, group=group, instance="r1", env=reporting_env(obligations_topic, group)).start()
    try:
        assert process.proc is not None
        assert process.proc.wait(60) == 2
        assert "cleanup.policy=delete" in process.log.read_text()
        assert "AML_KAFKA_OBLIGATIONS_TOPIC" in process.log.read_text()
    finally:
        process.close()
