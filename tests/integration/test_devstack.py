"""The embedded stack itself: the librdkafka mock cluster with real kafka-python/confluent-kafka clients, its
fault injection, the subprocess variant, and the redis-server launcher. Every process a test starts must be
gone when the test ends (checked by an autouse fixture)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aml_screener.devstack import redis_server as redis_server_module
from aml_screener.devstack.mock_kafka import (
    ApiKey,
    KafkaError,
    MockKafkaCluster,
    MockKafkaClusterError,
    MockKafkaClusterProcess,
)
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.redis_server import RedisServer, RedisServerError, RedisServerNotInstalledError
from aml_screener.devstack.stack import (
    KAFKA_PYTHON_API_VERSION,
    KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS,
    EmbeddedStack,
)

TOPIC = "withdrawals"
PARTITIONS = 4

# kafka-python defaults are tuned for real clusters (30 s request timeout, 30 s max reconnect back-off).
# These keep a failure visible within a few seconds and let clients find a broker that comes back quickly.
CLIENT_TIMEOUTS = {
    "request_timeout_ms": 5_000,  # a loopback mock answers in <1 ms; 5 s means it is really gone
    "reconnect_backoff_max_ms": 500,  # a restarted broker is found again within 0.5 s
    "retry_backoff_ms": 50,  # retries after injected errors happen fast
}
# Upper bound for "the consumer has seen everything": a few hundred ms is typical (group join + fetches);
# 15 s leaves room for a loaded CI box while staying under pytest's timeout.
CONSUME_DEADLINE_S = 15.0
# After a coordinator or leader move kafka-python needs a metadata refresh and, for commits, records from the
# new leader epoch (see test_leader_failover_loses_nothing); 10 s is far beyond the ~0.5 s measured.
COMMIT_DEADLINE_S = 10.0


# -- process bookkeeping ------------------------------------------------------------------------------------


def _live_children(pid: int) -> set[int]:
    """PIDs of non-zombie direct children of ``pid`` (from /proc)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z":
            children.add(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout  # PDEATHSIG/EOF exits take milliseconds; 5 s is generous
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)  # poll interval: fine-grained enough, cheap on CPU
    return False


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every redis-server / mock child a test starts must be stopped when the test ends."""
    before = _live_children(os.getpid())
    yield
    leftovers = _live_children(os.getpid()) - before
    for pid in leftovers:  # do not let one failure leak into the next tests
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running: {leftovers}"


# -- Kafka helpers ------------------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(brokers=3) as mock:
        mock.create_topic(TOPIC, PARTITIONS, replication_factor=3)
        yield mock


def make_producer(bootstrap: str, **overrides) -> KafkaProducer:
    config = {
        "bootstrap_servers": bootstrap,
        "api_version": KAFKA_PYTHON_API_VERSION,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "delivery_timeout_ms": 15_000,  # a stuck record fails the test long before pytest's timeout
        "max_block_ms": 10_000,  # metadata for a new topic is there in ms; 10 s means the broker is gone
        **CLIENT_TIMEOUTS,
        **overrides,
    }
    return KafkaProducer(**config)


def make_consumer(bootstrap: str, group: str, **overrides) -> KafkaConsumer:
    config = {
        "bootstrap_servers": bootstrap,
        "api_version": KAFKA_PYTHON_API_VERSION,
        "group_id": group,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "fetch_max_wait_ms": 100,  # an idle partition answers after 100 ms instead of 500 ms
        **KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS,  # a rebalance on the mock stalls session timeout - 1 s
        **CLIENT_TIMEOUTS,
        **overrides,
    }
    consumer = KafkaConsumer(**config)
    # Topic metadata first: joining without it gives an empty assignment and a rejoin, which the mock holds
    # for session_timeout_ms - 1 s (seen under CPU load as "No partition metadata for topic").
    assert consumer.partitions_for_topic(TOPIC) == set(range(PARTITIONS))
    consumer.subscribe([TOPIC])
    return consumer


def produce(producer: KafkaProducer, tag: str, count: int) -> list[bytes]:
    """Send ``count`` keyed records (keys spread over every partition) and wait until all are acknowledged."""
    values = [f"{tag}-{i}".encode() for i in range(count)]
    futures = [producer.send(TOPIC, key=f"k{i}".encode(), value=v) for i, v in enumerate(values)]
    producer.flush(timeout=15)  # bounded like delivery_timeout_ms above
    for future in futures:
        future.get(timeout=0)  # raises if any record failed
    return values


def consume(consumer: KafkaConsumer, into: list[bytes], until_count: int) -> None:
    deadline = time.monotonic() + CONSUME_DEADLINE_S
    while len(into) < until_count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=100).values():  # short polls re-check the deadline
            into.extend(r.value for r in records)
    assert len(into) >= until_count, f"consumed {len(into)} of {until_count} records in {CONSUME_DEADLINE_S}s"


def commit_until_ok(consumer: KafkaConsumer) -> None:
    deadline = time.monotonic() + COMMIT_DEADLINE_S
    while True:
        try:
            consumer.commit()
        except Exception:
            if time.monotonic() > deadline:
                raise
            consumer.poll(timeout_ms=100)  # lets the client refresh metadata / find the coordinator
        else:
            return


def assert_committed_at_end(consumer: KafkaConsumer) -> None:
    partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    ends = consumer.end_offsets(partitions)
    committed = {tp: consumer.committed(tp) for tp in partitions}
    assert committed == ends


# -- Kafka --------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_kafka_python_round_trip_through_three_brokers(cluster: MockKafkaCluster) -> None:
    assert len(cluster.bootstrap_servers.split(",")) == 3
    assert [cluster.partition_leader(TOPIC, p) for p in range(PARTITIONS)] == [1, 2, 3, 1]
    producer = make_producer(cluster.bootstrap_servers)
    consumer = make_consumer(cluster.bootstrap_servers, "round-trip")
    try:
        sent = produce(producer, "rt", 2_000)
        got: list[bytes] = []
        consume(consumer, got, len(sent))
        assert Counter(got) == Counter(sent)  # every record exactly once
        assert {tp.partition for tp in consumer.assignment()} == set(range(PARTITIONS))
        commit_until_ok(consumer)
        assert_committed_at_end(consumer)
    finally:
        consumer.close()
        producer.close()


@pytest.mark.integration
def test_confluent_producer_delivers_to_the_cluster(cluster: MockKafkaCluster) -> None:
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 15_000,  # bound a stuck delivery well under pytest's timeout
        }
    )
    errors: list[object] = []
    delivered: list[int] = []

    def on_delivery(err: object, msg: confluent_kafka.Message) -> None:
        partition = msg.partition()
        if err is not None or partition is None:
            errors.append(err)
        else:
            delivered.append(partition)

    sent = [f"ck-{i}".encode() for i in range(1_000)]
    for i, value in enumerate(sent):
        producer.produce(TOPIC, key=f"k{i}".encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(15) == 0  # nothing left in the queue after 15 s (takes ~20 ms)
    del producer  # destroy the client before the cluster goes away (no disconnect noise)
    assert not errors
    assert len(delivered) == len(sent) and set(delivered) == set(range(PARTITIONS))

    consumer = make_consumer(cluster.bootstrap_servers, "confluent-check")
    try:
        got: list[bytes] = []
        consume(consumer, got, len(sent))
        assert Counter(got) == Counter(sent)
    finally:
        consumer.close()


@pytest.mark.integration
def test_leader_failover_loses_nothing(cluster: MockKafkaCluster) -> None:
    group = "failover"
    victim = cluster.group_coordinator(group)  # the coordinator broker, which also leads >= 1 partition
    led_by_victim = [p for p in range(PARTITIONS) if cluster.partition_leader(TOPIC, p) == victim]
    assert led_by_victim

    producer = make_producer(cluster.bootstrap_servers)
    consumer = make_consumer(cluster.bootstrap_servers, group)
    got: list[bytes] = []
    try:
        sent = produce(producer, "before", 300)
        consume(consumer, got, len(sent))
        commit_until_ok(consumer)

        cluster.fail_over(victim, groups=[group])
        assert all(cluster.partition_leader(TOPIC, p) != victim for p in range(PARTITIONS))
        assert cluster.group_coordinator(group) != victim
        sent += produce(producer, "during", 300)
        consume(consumer, got, len(sent))

        cluster.broker_up(victim)
        sent += produce(producer, "after", 300)
        consume(consumer, got, len(sent))
        assert Counter(got) == Counter(sent)  # nothing lost, nothing duplicated

        # The mock fences OffsetCommit v7 carrying an older leader epoch (real Kafka does not); the last
        # records consumed from every partition come from the new epochs, so the commit goes through.
        commit_until_ok(consumer)
        assert_committed_at_end(consumer)
    finally:
        consumer.close()
        producer.close()


@pytest.mark.integration
def test_injected_produce_errors_are_retried_exactly_once(cluster: MockKafkaCluster) -> None:
    producer = make_producer(cluster.bootstrap_servers)
    consumer = make_consumer(cluster.bootstrap_servers, "retries")
    try:
        produce(producer, "warm-up", 1)  # producer id and metadata in place before counting requests
        injected = [
            KafkaError.NOT_ENOUGH_REPLICAS,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.NOT_LEADER_OR_FOLLOWER,
            KafkaError.DISCONNECT,
            KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ]
        cluster.start_request_tracking()
        cluster.push_request_errors(ApiKey.PRODUCE, injected)
        sent = produce(producer, "retried", 500)
        produce_requests = sum(1 for r in cluster.requests() if r.api_key == ApiKey.PRODUCE)
        cluster.stop_request_tracking()
        assert produce_requests > len(injected)  # every injected error cost one request, then success

        got: list[bytes] = []
        consume(consumer, got, len(sent) + 1)
        consumer.poll(timeout_ms=300)  # anything duplicated would arrive now
        got.extend(r.value for records in consumer.poll(timeout_ms=300).values() for r in records)
        assert Counter(got) == Counter([b"warm-up-0", *sent])  # exactly once each
        ends = consumer.end_offsets([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
        assert sum(ends.values()) == len(sent) + 1  # the log itself has no duplicates
    finally:
        consumer.close()
        producer.close()


@pytest.mark.integration
def test_latency_injection(cluster: MockKafkaCluster) -> None:
    producer = make_producer(cluster.bootstrap_servers, linger_ms=0)
    try:
        produce(producer, "warm-up", 1)
        leader = cluster.partition_leader(TOPIC, 0)

        def produce_seconds() -> float:
            started = time.monotonic()
            producer.send(TOPIC, value=b"x", partition=0).get(timeout=10)  # bounded; ~0.3 s expected
            return time.monotonic() - started

        cluster.set_broker_rtt(leader, 300)
        assert produce_seconds() >= 0.29  # 300 ms injected, minus timer granularity
        cluster.set_broker_rtt(leader, 0)
        assert produce_seconds() < 0.2  # ~2 ms without injected latency
        cluster.push_broker_request_error_rtts(leader, ApiKey.PRODUCE, [(KafkaError.NONE, 250)])
        assert produce_seconds() >= 0.24  # one delayed answer...
        assert produce_seconds() < 0.2  # ...then back to normal
    finally:
        producer.close()


@pytest.mark.integration
def test_cluster_in_subprocess_is_controlled_and_reaped() -> None:
    started = time.monotonic()
    mock = MockKafkaClusterProcess(3, topics=[(TOPIC, PARTITIONS, 3)])
    try:
        assert time.monotonic() - started < 5  # ~0.1 s measured
        assert _alive(mock.pid)
        assert os.getpgid(mock.pid) != os.getpgid(0)  # a terminal Ctrl-C does not reach the broker
        assert mock.partition_leader(TOPIC, 0) == 1
        with pytest.raises(MockKafkaClusterError, match=r"broker_id must be 1\.\.3"):
            mock.broker_down(0)  # ids start at 1
        with pytest.raises(MockKafkaClusterError, match="already exists"):
            mock.create_topic(TOPIC, 2)

        producer = make_producer(mock.bootstrap_servers)
        consumer = make_consumer(mock.bootstrap_servers, "subprocess")
        try:
            mock.push_request_errors(ApiKey.PRODUCE, [KafkaError.NOT_ENOUGH_REPLICAS])
            sent = produce(producer, "a", 200)
            mock.fail_over(2)
            assert mock.partition_leader(TOPIC, 1) == 3
            sent += produce(producer, "b", 200)
            mock.broker_up(2)
            got: list[bytes] = []
            consume(consumer, got, len(sent))
            assert Counter(got) == Counter(sent)
        finally:
            consumer.close()
            producer.close()
    finally:
        mock.close()
    mock.close()  # idempotent
    assert mock.returncode == 0  # clean exit on stdin EOF
    assert not _alive(mock.pid)
    with pytest.raises(MockKafkaClusterError, match="closed"):
        mock.broker_up(1)


@pytest.mark.integration
def test_mock_cluster_command_line_protocol() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aml_screener.devstack.mock_kafka", "--brokers", "2", "--topic", "a.b:3:2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        hello = json.loads(proc.stdout.readline())
        assert len(hello["bootstrap_servers"].split(",")) == 2

        def call(line: str) -> dict[str, object]:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            reply: dict[str, object] = json.loads(proc.stdout.readline())
            return reply

        assert call('{"op": "broker_down", "broker_id": 2}') == {"ok": True}
        assert call('{"op": "broker_up", "broker_id": 2}') == {"ok": True}
        assert call('{"op": "partition_leader", "topic": "a.b", "partition": 2}') == {"ok": True, "result": 1}
        assert call('{"op": "push_request_errors", "api_key": 0, "errors": [6, 7]}') == {"ok": True}
        assert call('{"op": "create_topic", "name": "c", "partitions": 1}') == {"ok": True}
        assert call('{"op": "__class__"}')["ok"] is False  # only the listed operations are callable
        assert call('{"op": "broker_down", "broker_id": 9}')["ok"] is False
        assert call("not json")["ok"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0  # SIGTERM closes the cluster and exits 0 within ms
        assert proc.stderr is not None
        assert proc.stderr.read() == ""  # no CONFWARN or other librdkafka noise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_children_die_with_their_parent_even_on_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, time
        from aml_screener.devstack.mock_kafka import MockKafkaClusterProcess
        from aml_screener.devstack.redis_server import RedisServer
        mock = MockKafkaClusterProcess(1)
        server = RedisServer().start()
        print(json.dumps({"mock": mock.pid, "redis": server.pid, "dir": str(server.directory)}), flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert _alive(pids["mock"]) and _alive(pids["redis"])
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally, no close()
        parent.wait()
    assert _wait_gone(pids["mock"]), "mock cluster child survived its parent"
    assert _wait_gone(pids["redis"]), "redis-server survived its parent"
    shutil.rmtree(pids["dir"])  # a SIGKILLed owner cannot clean up its temporary directory


# -- Redis --------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_redis_server_stop_start_kill_on_the_same_port() -> None:
    with RedisServer() as server:
        port, directory = server.port, server.directory
        assert port != 6379 and server.url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(server.url, socket_timeout=2)  # loopback answers in <1 ms
        assert client.ping()
        client.sadd("watchlist", "addr-1")
        first_pid = server.pid
        assert first_pid is not None
        assert os.getpgid(first_pid) != os.getpgid(0)  # a terminal Ctrl-C does not reach Redis

        server.stop()
        assert not server.running and not _alive(first_pid)
        with pytest.raises(redis.ConnectionError):
            client.ping()

        server.start()
        assert server.port == port and server.pid != first_pid
        assert client.ping()  # redis-py reconnects to the same address
        assert client.smembers("watchlist") == set()  # persistence is off: the restart is empty
        assert not list(directory.glob("*.rdb")) and not list(directory.glob("*.aof"))

        client.set("k", "v")
        second_pid = server.pid
        assert second_pid is not None
        server.kill()
        assert not _alive(second_pid)
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        server.start()
        assert client.get("k") is None

        started = time.monotonic()
        server.pause_clients(300)
        assert client.ping()
        assert time.monotonic() - started >= 0.25  # the PING waited for the pause to end
        client.close()
    assert not directory.exists()
    server.close()  # idempotent
    with pytest.raises(RedisServerError, match="closed"):
        server.start()


@pytest.mark.integration
def test_redis_server_with_extra_args_and_clear_errors() -> None:
    with RedisServer(extra_args=["--requirepass", "s3cret"], password="s3cret") as server:
        assert server.client().ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url).ping()
        assert redis.Redis.from_url(server.url_for(password="s3cret")).ping()

    with (
        pytest.raises(RedisServerError, match="Bad directive"),  # the console output is quoted
        RedisServer(extra_args=["--no-such-directive", "1"]),
    ):
        pass

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with (
            pytest.raises(RedisServerError, match="already in use"),
            RedisServer(port=taken.getsockname()[1]),
        ):
            pass


@pytest.mark.integration
def test_missing_redis_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(redis_server_module, "_FALLBACK_DIRS", ())
    with pytest.raises(RedisServerNotInstalledError, match="apt-get install redis-server"):
        RedisServer()


# -- the combined stack -------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("broker_in_subprocess", [False, True], ids=["in-process", "subprocess"])
def test_embedded_stack_round_trip_and_cleanup_on_error(broker_in_subprocess: bool) -> None:
    stack = EmbeddedStack(brokers=1, topics={TOPIC: 2}, broker_in_subprocess=broker_in_subprocess)
    with pytest.raises(RuntimeError, match="not started"):
        _ = stack.bootstrap_servers
    with pytest.raises(KeyboardInterrupt), stack:
        redis_pid = stack.redis.pid
        assert redis_pid is not None
        assert redis.Redis.from_url(stack.redis_url).ping()
        producer = KafkaProducer(**stack.kafka_python_config(), **CLIENT_TIMEOUTS)
        producer.send(TOPIC, b"x").get(timeout=10)  # ~ms; 10 s means the broker is unreachable
        producer.close()
        delivered = threading.Event()

        def on_delivery(err: object, _msg: object) -> None:
            if err is None:
                delivered.set()

        confluent = confluent_kafka.Producer(stack.confluent_config())
        confluent.produce(TOPIC, b"y", on_delivery=on_delivery)
        confluent.flush(10)  # delivery takes ms; 10 s bounds a dead broker
        del confluent
        assert delivered.is_set()
        raise KeyboardInterrupt  # Ctrl-C in the middle of a demo
    assert redis_pid is not None and not _alive(redis_pid)
    with pytest.raises(RuntimeError, match="not started"):
        _ = stack.redis_url


@pytest.mark.integration
def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("broker", ["mock", "kafka"])
def test_devstack_prints_every_setting_the_projects_own_screeners_get(stack_factory, broker):
    """`aml-screener devstack` prints what the demo and the tests give their screeners on the embedded broker:
    on the mock its pin and timings too, on real Kafka none of them (a pin would cap the protocol)."""
    from aml_screener.devstack.cli import screener_settings
    from aml_screener.devstack.screener_process import screener_env

    stack = stack_factory(broker=broker).embedded
    own = screener_env(stack.bootstrap_servers, stack.redis_url, 9400, mock_broker=stack.is_mock)
    expected = {
        key: value
        for key, value in own.items()
        if key.startswith("AML_") and not key.startswith("AML_HTTP") and os.environ.get(key) != value
    }
    printed = screener_settings(stack)
    assert printed == expected
    mock_only = {"AML_KAFKA_API_VERSION", "AML_KAFKA_SESSION_TIMEOUT_MS", "AML_KAFKA_FETCH_MAX_WAIT_MS"}
    assert (mock_only <= set(printed)) is (broker == "mock")
    assert not (mock_only & set(printed)) or broker == "mock"
