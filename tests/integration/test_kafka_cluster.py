"""The real Apache Kafka cluster of the embedded stack (devstack/kafka_cluster.py): it starts with production's
replication, survives what production survives (kill -9 of a partition leader, of the active controller, a frozen
node), refuses writes when the ISR falls below min.insync.replicas, and leaves no JVM behind, not even when the
process that started it is killed. kafka-python talks to it without an api_version pin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]  # no __all__ entry
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    KafkaTimeoutError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    RequestTimedOutError,
)

from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.kafka_dist import KAFKA_VERSION

pytestmark = pytest.mark.integration

# The controller fences a node that stopped heartbeating after broker.session.timeout.ms (6 s here); a loaded
# 2-core machine adds seconds to that. 45 s is far above both and well below the test timeout.
FAULT_DEADLINE_S = 45.0


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_all(cluster: KafkaCluster, topic: str, partitions: int) -> list[bytes]:
    """Every committed record of the topic, partition by partition (up to the end offsets at call time)."""
    consumer = KafkaConsumer(bootstrap_servers=cluster.bootstrap_servers, enable_auto_commit=False)
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(assigned)
        by_partition: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in assigned):
            assert time.monotonic() < deadline, "reading back timed out"
            for tp, records in consumer.poll(timeout_ms=500).items():
                by_partition[tp.partition] += [record.value for record in records]
        return [value for p in range(partitions) for value in by_partition[p]]
    finally:
        consumer.close()


def test_three_nodes_start_with_production_replication(kafka_cluster):
    cluster = kafka_cluster
    assert cluster.version == KAFKA_VERSION
    assert cluster.registered_brokers() == {1, 2, 3}
    topic = unique("rf3")
    cluster.create_topic(topic, 4)
    for partition in range(4):
        assert sorted(cluster.in_sync_replicas(topic, partition)) == [1, 2, 3], "RF 3, every replica in sync"
    leaders = {cluster.partition_leader(topic, p) for p in range(4)}
    assert len(leaders) >= 2, "leadership is spread over the nodes"
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = cluster.admin().describe_configs([resource])[resource].result(15)
    assert configs["min.insync.replicas"].value == "2"
    offsets = cluster.admin().list_topics("__consumer_offsets", timeout=15).topics["__consumer_offsets"]
    assert offsets.error is None, "the offsets topic is created at start-up, while every node is up"
    assert all(len(p.replicas) == 3 for p in offsets.partitions.values())
    assert 1 <= cluster.group_coordinator(unique("any-group")) <= 3
    assert 1 <= cluster.active_controller() <= 3


def test_kafka_python_negotiates_versions_without_a_pin(kafka_cluster):
    topic = unique("negotiate")
    kafka_cluster.create_topic(topic, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_cluster.bootstrap_servers, acks="all")
    producer.send(topic, b"hello").get(15)
    producer.close()
    assert read_all(kafka_cluster, topic, 1) == [b"hello"]
    consumer = KafkaConsumer(bootstrap_servers=kafka_cluster.bootstrap_servers)
    try:
        version = consumer.config["api_version"]
        assert version is None or version >= (4, 0), f"kafka-python probed {version}, not a capped pin"
    finally:
        consumer.close()


def test_an_acks_all_producer_survives_kill_9_of_the_partition_leader(kafka):
    """RF 3 + min.insync.replicas 2: losing the leader loses no acknowledged record; the restarted node catches up."""
    topic = unique("kill-leader")
    kafka.create_topic(topic, 1)
    victim = kafka.partition_leader(topic, 0)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    delivered: list[bytes] = []
    errors: list[str] = []

    def on_delivery(err, message) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append(message.value())

    total = 6_000

    def produce() -> None:
        for index in range(total):
            producer.produce(topic, str(index).encode(), on_delivery=on_delivery)
            producer.poll(0)
            if index % 100 == 99:
                time.sleep(0.05)  # ~2,000 records/s: the kill lands while the stream flows
        producer.flush(90)

    thread = threading.Thread(target=produce)
    thread.start()
    wait_for(lambda: len(delivered) >= 1_000, 30, "the first acknowledgements")
    kafka.kill(victim)
    thread.join(120)
    assert not errors, errors[:3]
    assert len(delivered) == total, "every record acknowledged despite the leader's kill -9"
    new_leader = kafka.partition_leader(topic, 0)
    assert new_leader not in (victim, -1), "leadership moved to a surviving replica"
    kafka.restart(victim)
    kafka.wait_until_fully_replicated(FAULT_DEADLINE_S)
    assert sorted(kafka.in_sync_replicas(topic, 0)) == [1, 2, 3], "the restarted node is back in the ISR"
    values = read_all(kafka, topic, 1)
    assert values == [str(i).encode() for i in range(total)], "in order, no loss, no duplicate (idempotence)"


def test_writes_are_refused_with_not_enough_replicas_when_the_isr_falls_below_min_insync(kafka):
    """A topic demanding all 3 replicas in sync (min.insync.replicas=3) loses one: the ISR shrinks to 2 and an
    acks=all producer gets NOT_ENOUGH_REPLICAS from the broker itself, until the node is back. A refused record
    is never written."""
    topic = unique("min-isr")
    kafka.create_topic(topic, 1, config={"min.insync.replicas": "3"})
    leader = kafka.partition_leader(topic, 0)
    follower = next(n for n in (1, 2, 3) if n != leader)
    # No retries, so the broker's answer reaches the test; a 3 s produce timeout bounds a probe in purgatory.
    producer = KafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        acks="all",
        retries=0,
        enable_idempotence=False,
        request_timeout_ms=3_000,
    )
    refused: list[bytes] = []
    try:
        producer.send(topic, b"before").get(15)
        kafka.kill(follower)
        wait_for(lambda: len(kafka.in_sync_replicas(topic, 0)) == 2, FAULT_DEADLINE_S, "the ISR to shrink to 2")
        # The metadata answering that query may come from a node that replayed the shrink before the leader did;
        # a probe reaching the leader in between is appended and waits for the dead follower (outcome unknown,
        # as for any timed-out produce). Probe until the leader itself refuses.
        deadline = time.monotonic() + FAULT_DEADLINE_S
        while not refused and time.monotonic() < deadline:
            probe = f"probe-{time.monotonic_ns()}".encode()
            try:
                producer.send(topic, probe).get(15)
            except NotEnoughReplicasError:
                refused.append(probe)
            except (KafkaTimeoutError, RequestTimedOutError, NotEnoughReplicasAfterAppendError):
                continue
            else:
                raise AssertionError("an acks=all write was acknowledged by 2 replicas of a min.insync=3 topic")
        assert refused, "the leader refused with NOT_ENOUGH_REPLICAS"
        kafka.restart(follower)
        kafka.wait_until_fully_replicated(FAULT_DEADLINE_S)
        # As above, the metadata can show the ISR whole before the leader itself has taken the follower back in: the
        # leader refuses until it has. Wait for the leader (bounded), then the write must succeed.
        deadline = time.monotonic() + FAULT_DEADLINE_S
        while True:
            try:
                producer.send(topic, b"after").get(15)
                break
            except NotEnoughReplicasError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        producer.close()
    values = read_all(kafka, topic, 1)
    assert values[0] == b"before" and values[-1] == b"after"
    assert not set(refused) & set(values), "a refused record was not written"


def test_a_frozen_node_is_fenced_and_rejoins_when_thawed(kafka):
    topic = unique("freeze")
    kafka.create_topic(topic, 3)
    victim = 3 if kafka.active_controller() != 3 else 2  # keep the controller: this is about a broker hanging
    kafka.freeze(victim)
    wait_for(lambda: victim not in kafka.registered_brokers(), FAULT_DEADLINE_S, f"node {victim} to be fenced")
    assert all(kafka.partition_leader(topic, p) != victim for p in range(3)), "no partition led by a frozen node"
    kafka.thaw(victim)
    wait_for(lambda: victim in kafka.registered_brokers(), FAULT_DEADLINE_S, f"node {victim} to register again")
    kafka.wait_until_fully_replicated(FAULT_DEADLINE_S)


def test_the_metadata_quorum_fails_over_when_the_active_controller_is_killed(kafka):
    controller = kafka.active_controller()
    kafka.kill(controller)
    wait_for(lambda: kafka.active_controller() not in (controller, -1), FAULT_DEADLINE_S, "a new active controller")
    wait_for(lambda: controller not in kafka.registered_brokers(), FAULT_DEADLINE_S, "the old controller fenced")
    topic = unique("after-failover")
    kafka.create_topic(topic, 2, replication_factor=2)  # topic creation needs a working controller
    assert {kafka.partition_leader(topic, p) for p in range(2)} <= {1, 2, 3} - {controller}


def _jvm_children(pid: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and "java" in (stat.parent / "comm").read_text():
            children.add(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_devstack_kafka_runs_by_hand_and_leaves_no_jvm_behind(how, tmp_path):
    """`aml-screener devstack --broker kafka` prints the AML_* variables (no api_version pin) of a working cluster;
    Ctrl-C stops its nodes, and so does a kill -9 of the command itself (PR_SET_PDEATHSIG)."""
    devstack = subprocess.Popen(
        [sys.executable, "-m", "aml_screener.cli", "devstack", "--broker", "kafka", "--brokers", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert devstack.stdout is not None
        text = ""
        deadline = time.monotonic() + 120
        while "Ctrl-C" not in text and time.monotonic() < deadline and devstack.poll() is None:
            text += devstack.stdout.readline()
        info = json.loads(text[text.index("{") : text.rindex("}") + 1])
        assert info["broker"] == "kafka" and info["kafka_version"] == KAFKA_VERSION
        assert "AML_KAFKA_API_VERSION" not in info["env"], "real Kafka needs no pin"
        bootstrap = info["env"]["AML_KAFKA_BOOTSTRAP_SERVERS"]
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        producer.send("withdrawals.requested", b"x").get(15)
        producer.close()
        jvms = _jvm_children(devstack.pid)
        assert len(jvms) == 1, "one JVM per node"
        if how == "ctrl-c":
            devstack.send_signal(signal.SIGINT)
            try:
                assert devstack.wait(60) == 0
            except subprocess.TimeoutExpired:
                devstack.send_signal(signal.SIGUSR1)  # its threads' stacks to stderr (captured): where it hangs
                time.sleep(1)
                raise
        else:
            devstack.kill()
            devstack.wait(10)
        wait_for(lambda: not any(_alive(pid) for pid in jvms), 30, "the node JVMs to be gone")
        if how == "ctrl-c":
            assert not Path(info["directory"]).exists(), "the cluster's files are removed"
        else:
            shutil.rmtree(info["directory"])  # a kill -9 leaves no chance to clean up; the test does it
    finally:
        if devstack.poll() is None:
            devstack.kill()
            devstack.wait(10)


def test_close_keeps_the_node_logs_when_asked():
    cluster = KafkaCluster(1).start()
    try:
        pid = cluster.node(1).pid
        assert pid is not None
    finally:
        cluster.close(keep_logs=True)
    try:
        assert not _alive(pid)
        log = cluster.node(1).log_path.read_text()
        assert "Kafka Server started" in log
        assert not cluster.node(1).data_dir.exists(), "the data is removed, the logs stay"
    finally:
        shutil.rmtree(cluster.directory, ignore_errors=True)
