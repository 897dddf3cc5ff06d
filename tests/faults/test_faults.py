"""Fault injection on real components: a 3-broker Kafka-protocol cluster (RF 3), a real redis-server and real
`aml-screener run` processes. Every scenario streams a known workload (>= 20,000 events, a known share to listed
addresses, some invalid addresses and malformed records) while the fault happens, then judges the outputs with the
one accounting oracle (tests/faults/oracle.py): nothing lost, no listed address ever `clear`, the flagged set exact,
duplicates recognisable by their decision id. `make faults` runs this file and prints the table per run."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from aml_screener.devstack.generator import GeneratedEvent
from aml_screener.devstack.mock_kafka import ApiKey, KafkaError
from aml_screener.devstack.stack import KAFKA_PYTHON_API_VERSION, EmbeddedStack
from aml_screener.screener.codec import WithdrawalDecoder
from aml_screener.screener.errors import DecodeError
from tests.faults.oracle import Row, account, assert_sound
from tests.faults.poison import mutate, valid_payload
from tests.integration.harness import (
    INPUT,
    TOPICS,
    OutputReader,
    ScreenerProcess,
    all_decided,
    generate,
    produce,
    produce_raw,
)
from tests.integration.harness import load_bundled_watchlist as load_watchlist
from tests.pipeline_support import CATALOG, REPOSITORY

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# `make faults` runs the full suite (AML_FAULTS_FULL=1: 20,000 events per scenario, Redis paused 30 s, two storm
# waves); `make test` (and CI) runs the same scenarios reduced to keep CI within minutes.
FULL = os.environ.get("AML_FAULTS_FULL") == "1"
EVENTS = int(os.environ.get("AML_FAULTS_EVENTS", "20000" if FULL else "5000"))
REDIS_PAUSE_S = 30 if FULL else 10
STORM_WAVES = 2 if FULL else 1
SEED = int(os.environ.get("AML_FAULTS_SEED", "20261123"))
# Paced input: 2,500 events/s, so faults land while the stream flows (the screener alone does ~15,000/s).
_CHUNK, _PAUSE = 250, 0.1


class PacedLoad(threading.Thread):
    """Produces the events at a steady pace; `stop()` ends it early (then only `sent` events count)."""

    def __init__(self, bootstrap: str, events: list[GeneratedEvent], pause: float = _PAUSE) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.events, self.pause = bootstrap, events, pause
        self.error: Exception | None = None
        self.sent = 0
        self._stop_requested = threading.Event()

    def run(self) -> None:
        try:
            for start in range(0, len(self.events), _CHUNK):
                if self._stop_requested.is_set():
                    return
                chunk = self.events[start : start + _CHUNK]
                produce(self.bootstrap, chunk)
                self.sent += len(chunk)
                time.sleep(self.pause)
        except Exception as exc:  # surfaced by finish()
            self.error = exc

    def stop(self) -> list[GeneratedEvent]:
        self._stop_requested.set()
        self.join(60)
        return self.events[: self.sent]

    def stop_after_faults(self, minimum: int = 0) -> list[GeneratedEvent]:
        """The faults are over, and the stream must still have been flowing: keep it going one more second (and
        until `minimum` events were sent), then stop. Returns the events sent (the oracle's input)."""
        assert self.is_alive(), f"the faults outlasted the stream ({self.sent} sent, error {self.error!r})"
        time.sleep(1.0)
        while self.sent < minimum and self.is_alive():
            time.sleep(0.1)
        return self.stop()


# Scenarios whose faults take a while draw from a pool larger than they need and stop the stream after the faults.
POOL = max(2 * EVENTS, 40_000)


def workload(cluster: EmbeddedStack, seed: int, count: int = EVENTS) -> list[GeneratedEvent]:
    return generate(load_watchlist(cluster.redis_url), count, seed=seed, hit_share=0.05)


def finish(
    scenario: str,
    events: list[GeneratedEvent],
    reader: OutputReader,
    report: Callable[[Row], None],
    notes: str,
    *,
    load: PacedLoad | None = None,
    timeout: float = 180,
) -> Row:
    if load is not None:
        load.join(120)
        assert load.error is None, f"the load generator failed: {load.error}"
    reader.read_until(all_decided(events), timeout, f"{scenario}: every event decided or dead-lettered")
    outputs = reader.settle(1.5)  # late duplicates
    row = account(scenario, events, outputs, notes)
    report(row)
    assert_sound(row)
    return row


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_screeners_killed_with_sigkill_mid_batch_lose_nothing(cluster, screeners, reader, report):
    rng = random.Random(SEED)
    pool = workload(cluster, seed=SEED, count=POOL)
    current = screeners("kill-0", AML_KAFKA_MAX_POLL_RECORDS="500")
    current.wait_assigned()
    load = PacedLoad(cluster.bootstrap_servers, pool)
    load.start()
    kills = 3
    for index in range(1, kills + 1):
        time.sleep(rng.uniform(0.8, 2.0))
        current.kill()  # SIGKILL: no drain, no commit, no LeaveGroup
        current = screeners(f"kill-{index}", AML_KAFKA_MAX_POLL_RECORDS="500")
    events = load.stop_after_faults(EVENTS)
    finish("SIGKILL x3 mid-batch, restart", events, reader, report, f"{kills} x SIGKILL + restart", load=load)
    assert {decision["screener"] for decision in reader.outputs.decisions} >= {"kill-0", f"kill-{kills}"}
    assert current.terminate() == 0


def test_broker_failover_and_injected_request_errors_lose_nothing(cluster, screeners, reader, report, group):
    pool = workload(cluster, seed=SEED + 1, count=POOL)
    screener = screeners("failover")
    screener.wait_assigned()
    kafka = cluster.kafka
    load = PacedLoad(cluster.bootstrap_servers, pool)
    load.start()
    time.sleep(1.5)
    victim = kafka.partition_leader(INPUT, 0)
    coordinator = kafka.group_coordinator(group)
    kafka.fail_over(victim, groups=[group])  # leadership (and the coordinator, if hosted) move to live replicas
    moved = kafka.partition_leader(INPUT, 0)
    time.sleep(3)
    kafka.broker_up(victim)
    time.sleep(1)
    errors = {
        ApiKey.PRODUCE: [KafkaError.NOT_LEADER_OR_FOLLOWER, KafkaError.REQUEST_TIMED_OUT] * 3,
        ApiKey.FETCH: [KafkaError.NOT_LEADER_OR_FOLLOWER, KafkaError.REQUEST_TIMED_OUT] * 3,
        ApiKey.OFFSET_COMMIT: [KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.REQUEST_TIMED_OUT] * 3,
        ApiKey.HEARTBEAT: [KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR],
        ApiKey.FIND_COORDINATOR: [KafkaError.COORDINATOR_NOT_AVAILABLE] * 2,
    }
    for api, codes in errors.items():
        kafka.push_request_errors(api, codes)
    injected = sum(len(codes) for codes in errors.values())
    events = load.stop_after_faults(EVENTS)
    notes = (
        f"broker {victim} down 3 s (input p0 leader {victim}->{moved}, coordinator was {coordinator}); "
        f"{injected} injected errors on Produce/Fetch/OffsetCommit/Heartbeat/FindCoordinator"
    )
    finish("broker failover + request errors", events, reader, report, notes, load=load)
    assert moved != victim
    assert screener.terminate() == 0


def committed_offsets(cluster: EmbeddedStack, group: str) -> int:
    consumer = KafkaConsumer(
        bootstrap_servers=cluster.bootstrap_servers.split(","),
        api_version=KAFKA_PYTHON_API_VERSION,
        group_id=group,
        enable_auto_commit=False,
    )
    try:
        return sum(consumer.committed(TopicPartition(INPUT, p)) or 0 for p in range(TOPICS[INPUT]))
    finally:
        consumer.close()


def test_output_topic_refusing_writes_commits_nothing_past_unacknowledged_outputs(
    cluster, screeners, reader, report, group
):
    events = workload(cluster, seed=SEED + 2)
    produce(cluster.bootstrap_servers, events)  # the whole input is waiting
    kafka = cluster.kafka
    # Every produce request is refused (retriable) until cleared: outputs cannot be acknowledged.
    kafka.push_request_errors(ApiKey.PRODUCE, [KafkaError.NOT_ENOUGH_REPLICAS] * 5_000)
    first = screeners("out-1")
    first.wait_until(lambda: first.metric("aml_screener_events_consumed_total", topic=INPUT) > 0, 45, "consuming")
    time.sleep(4)
    reader.settle(0.5)
    committed_during = committed_offsets(cluster, group)
    decided_during = len(reader.outputs.decisions)
    consumed = first.metric("aml_screener_events_consumed_total", topic=INPUT)
    assert committed_during == 0, "no offset is committed while the outputs are unacknowledged"
    assert decided_during == 0
    assert 0 < consumed <= 4 * 2000 + 2000, "the in-flight window bounds what is read ahead (max 4 batches + 1)"
    first.kill()  # crash while holding unacknowledged outputs: they must be re-read, not lost
    kafka.clear_request_errors(ApiKey.PRODUCE)
    second = screeners("out-2")
    notes = f"Produce refused ~4 s (NOT_ENOUGH_REPLICAS), {int(consumed):,} read ahead, SIGKILL during, restart"
    finish("output topic refusing writes", events, reader, report, notes)
    assert committed_offsets(cluster, group) == len(events)
    assert second.terminate() == 0


def test_redis_killed_and_restarted_then_paused_never_clears_and_resumes(cluster, screeners, reader, report):
    pool = workload(cluster, seed=SEED + 3, count=POOL)
    screener = screeners("redis")
    screener.wait_assigned()
    load = PacedLoad(cluster.bootstrap_servers, pool)
    load.start()
    time.sleep(1.5)
    cluster.redis.kill()  # SIGKILL; the append-only file keeps the watchlist
    screener.wait_until(lambda: screener.probe("/readyz")[0] == 503, 10, "not ready while Redis is down")
    time.sleep(2)
    cluster.redis.start()
    screener.wait_until(lambda: screener.probe("/readyz")[0] == 200, 20, "ready again after Redis restarted")
    time.sleep(1)
    cluster.redis.pause_clients(3_000)  # Redis slow: every command waits 3 s (the screener times out at 0.5 s)
    screener.wait_until(lambda: screener.probe("/readyz")[1]["fail_closed"], 10, "fail closed while Redis is slow")
    events = load.stop_after_faults(EVENTS)
    notes = "redis-server SIGKILL, down 2 s, restart (AOF); then CLIENT PAUSE 3 s"
    finish("Redis killed/restarted + paused", events, reader, report, notes, load=load)
    assert screener.metric("aml_screener_fail_closed_pauses_total", reason="redis_unavailable") >= 2
    assert screener.probe("/readyz")[0] == 200
    assert screener.terminate() == 0


def test_rebalance_storm_1_3_1_while_events_flow(cluster, screeners, reader, report):
    pool = workload(cluster, seed=SEED + 4, count=60_000 * STORM_WAVES)  # outlasts the storm; stopped after it
    base = screeners("storm-0")
    base.wait_assigned()
    load = PacedLoad(cluster.bootstrap_servers, pool, pause=0.25)  # 1,000 events/s: 100 s of input at most
    load.start()
    members = 0
    for wave in range(STORM_WAVES):
        extra = [screeners(f"storm-{wave}-{i}") for i in (1, 2)]
        members += len(extra)
        for screener in extra:
            screener.wait_assigned(timeout=60)
        time.sleep(1.5)
        for screener in extra:
            assert screener.terminate() == 0, "a member leaving during the storm exits cleanly"
        time.sleep(1)
    events = load.stop_after_faults(EVENTS)
    notes = f"{members} members joined (each got partitions) and left, in {STORM_WAVES} wave(s)"
    finish(f"rebalance storm 1->3->1 (x{STORM_WAVES})", events, reader, report, notes, load=load)
    deciders = {decision["screener"] for decision in reader.outputs.decisions}
    assert len(deciders) >= 3, f"the joining members took part: {sorted(deciders)}"
    assert base.terminate() == 0


def decisions_made(screener: ScreenerProcess) -> float:
    return sum(
        screener.metric("aml_screener_decisions_total", decision=outcome)
        for outcome in ("clear", "flagged", "unscreenable")
    )


@pytest.mark.timeout(400)
def test_memory_stays_bounded_while_redis_is_paused_under_load(cluster, screeners, reader, report):
    """Back-pressure: with the watchlist unreachable the partitions are paused, so memory does not grow with the
    backlog; the screener resumes by itself when Redis answers again."""
    bound = 300 * 1024 * 1024
    events = workload(cluster, seed=SEED + 5, count=(REDIS_PAUSE_S + 8) * 2_500)
    screener = screeners("memory")
    screener.wait_assigned()
    assert screener.proc is not None
    load = PacedLoad(cluster.bootstrap_servers, events)
    load.start()
    time.sleep(3)
    before = rss_bytes(screener.proc.pid)
    cluster.redis.pause_clients(REDIS_PAUSE_S * 1000)
    paused_at = time.monotonic()
    peak, decided_at_pause, fail_closed_seen = before, None, False
    while time.monotonic() - paused_at < REDIS_PAUSE_S - 2:
        peak = max(peak, rss_bytes(screener.proc.pid))
        if decided_at_pause is None and time.monotonic() - paused_at > 2:
            decided_at_pause = decisions_made(screener)  # the batch in hand when the pause began is done by now
        fail_closed_seen = fail_closed_seen or screener.metric("aml_screener_fail_closed") == 1
        time.sleep(0.5)
    assert decided_at_pause is not None
    assert decisions_made(screener) == decided_at_pause, "no decision while Redis does not answer"
    assert fail_closed_seen
    notes = (
        f"CLIENT PAUSE {REDIS_PAUSE_S} s at 2,500 events/s: RSS {before / 2**20:.0f} -> peak {peak / 2**20:.0f} MiB "
        f"(bound {bound / 2**20:.0f} MiB)"
    )
    try:
        finish(f"Redis paused {REDIS_PAUSE_S} s under load", events, reader, report, notes, load=load, timeout=200)
    except AssertionError:
        print(screener.log_tail(60))
        raise
    assert peak < bound, f"RSS peaked at {peak / 2**20:.0f} MiB"
    assert peak - before < 100 * 1024 * 1024, "memory does not grow with the backlog"
    assert screener.terminate() == 0


def test_poison_records_in_the_stream_are_dead_lettered_with_their_reason_and_crash_nothing(
    cluster, screeners, reader, report
):
    rng = random.Random(SEED + 6)
    events = workload(cluster, seed=SEED + 6)
    decoder = WithdrawalDecoder(REPOSITORY, CATALOG, max_message_bytes=65_536)
    poison: dict[str, str] = {}  # key -> the reason the real decoder gives
    values: list[tuple[bytes | None, bytes | None]] = []
    while len(poison) < len(events) // 10:
        value = mutate(valid_payload(f"p-{len(poison)}"), rng)
        try:
            decoder.decode(value)
        except DecodeError as exc:
            key = f"poison-{len(poison)}"
            poison[key] = exc.reason.value
            values.append((key.encode(), value))
    stream: list[tuple[bytes | None, bytes | None]] = [(event.key, event.value) for event in events]
    for position, item in zip(sorted(rng.sample(range(len(stream)), len(values)), reverse=True), values, strict=True):
        stream.insert(position, item)
    screener = screeners("poison")
    screener.wait_assigned()
    produce_raw(cluster.bootstrap_servers, stream)

    def poison_dead_lettered(outputs) -> bool:
        return len({record.key.decode() for record in outputs.dead_letters} & poison.keys()) == len(poison)

    reader.read_until(poison_dead_lettered, 120, "every poison record dead-lettered")
    reasons = Counter(poison.values())
    row = finish(
        "poison records (mutated Avro)",
        events,
        reader,
        report,
        f"{len(poison):,} poison records: " + ", ".join(f"{reason} {count}" for reason, count in reasons.most_common()),
    )
    row.events_in += len(poison)
    got = {
        record.key.decode(): dict(record.headers)["aml.dlq.reason"].decode() for record in reader.outputs.dead_letters
    }
    assert {key: got[key] for key in poison} == poison, "each dead-lettered with the reason the decoder gives"
    assert screener.metric("aml_screener_loop_errors_total", where="batch") == 0, "no batch failed"
    assert screener.terminate() == 0, "the process survived the whole stream"
