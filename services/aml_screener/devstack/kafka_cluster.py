"""A real Apache Kafka cluster on loopback: one JVM per node, KRaft, started and stopped by the calling process.

This module is responsible for running the broker that production runs (the jars come from
:mod:`aml_screener.devstack.kafka_dist`) for the integration tests, the fault-injection suite, the benchmarks and
``aml-screener devstack --broker kafka``:

* storage formatted with ``kafka.tools.StorageTool`` and one ``kafka.Kafka`` OS process per node, each node a
  combined broker and controller (KRaft) with a static voter set, on free loopback ports;
* settings that keep production semantics (replication factor 3 and ``min.insync.replicas=2`` on a 3-node
  cluster, no auto-created topics, no unclean leader election) and make tests quick on 2 shared cores (internal
  topics with 3 partitions instead of 50, no initial rebalance delay, a small heap, fewer threads);
* start-up that returns only when every node is registered as a broker and the internal topics exist;
* per-node control for fault tests: ``kill -9`` and restart, SIGSTOP/SIGCONT, graceful stop, and who leads a
  partition, coordinates a group or is the active controller;
* teardown of every process on :meth:`KafkaCluster.close`, on interpreter exit and (PR_SET_PDEATHSIG) when the
  parent itself is killed; the node logs are kept when asked (``keep_logs``), e.g. after a failed test.

Nodes are numbered 1..N (``node.id``), like the mock's brokers. Every method may be called from any thread: the
JVMs are started from one long-lived launcher thread, because PR_SET_PDEATHSIG fires when the *thread* that
forked a child exits, and a node restarted from a short-lived test thread would otherwise die with it.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from aml_screener.devstack.kafka_dist import KafkaDistribution, resolve
from aml_screener.devstack.ports import LOOPBACK, free_port
from aml_screener.devstack.process import child_process_kwargs

__all__ = ["KafkaCluster", "KafkaClusterError", "KafkaNode", "production_broker_config"]

# Heap per node. Three nodes at 384 MiB stay near 2 GB RSS in all; the tests' load (a few thousand small records
# per second) never needs more. Raise it for benchmarks (heap_mb=...).
DEFAULT_HEAP_MB: Final = 384
# How long a node that stops heartbeating (killed, frozen) stays a registered broker before the controller fences
# it, moves its leaderships and shrinks the ISRs. Kafka's default is 9 s; 6 s keeps fault tests short while staying
# far above a GC or scheduling stall on a loaded 2-core machine (heartbeats go every second, see below).
DEFAULT_SESSION_TIMEOUT_MS: Final = 6_000


def production_broker_config(nodes: int) -> dict[str, str]:
    """The broker settings with production semantics that the tests run with, and that docs/operations.md and
    docker/compose.yaml recommend (tests/deploy asserts they agree): replication factor min(3, nodes) for new and
    internal topics, min.insync.replicas min(2, nodes) (acks=all survives one node down; two refuse writes), no
    unclean leader election (an out-of-sync replica never becomes leader and loses acknowledged records), no
    auto-created topics (a misspelt topic fails instead of appearing with one partition)."""
    rf, min_isr = str(min(3, nodes)), str(min(2, nodes))
    return {
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "auto.create.topics.enable": "false",
        "unclean.leader.election.enable": "false",
    }


class KafkaClusterError(RuntimeError):
    """A node did not start, did not register, or a cluster operation failed (the message says which)."""


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what ``kafka-storage random-uuid``
    prints). Never one starting with "-": StorageTool's argument parser reads it as an option (format failed with
    "--cluster-id: expected one argument", 1 start in 64); Kafka's own Uuid.randomUuid() redraws those too."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaNode:
    """One node's ports, files and process. Use the cluster's methods to start, stop or signal it."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        """The node's log4j log (``server.log``); ``console.log`` beside it holds JVM output and crashes."""
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        """The JVM exists (it may be frozen by SIGSTOP)."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def log_tail(self, lines: int = 40) -> str:
        text = []
        for path in (self.directory / "console.log", self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.send_signal(signal.SIGCONT)  # a frozen JVM must be able to die
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _cleanup(processes: list[subprocess.Popen[bytes]], directory: Path, remove: list[bool]) -> None:
    for process in processes:
        _kill(process)
    if remove[0]:
        shutil.rmtree(directory, ignore_errors=True)


class KafkaCluster:
    """``nodes`` combined broker+controller JVMs of Apache Kafka on loopback.

    Replication defaults follow the node count: RF ``min(3, nodes)`` and ``min.insync.replicas`` ``min(2, nodes)``
    for new topics and for the internal topics, so a 3-node cluster has production semantics (one node may fail
    without losing writes with ``acks=all``; two may not). ``broker_config`` adds or overrides server properties.

    Use as a context manager or call :meth:`start` and :meth:`close`.
    """

    # A cold JVM starts, formats nothing, joins the quorum and registers in 5-15 s on an idle 2-core machine;
    # three of them under a concurrent test load take longer. 120 s only trips when something is really wrong.
    START_TIMEOUT_S = 120.0
    # One admin request on loopback answers in milliseconds; 15 s tolerates a controller election in between.
    ADMIN_TIMEOUT_S = 15.0
    # StorageTool format is one short JVM run (~1-2 s); 60 s covers a badly loaded machine.
    FORMAT_TIMEOUT_S = 60.0
    # Between readiness probes: short against the seconds a node needs, long enough not to load the machine.
    _PROBE_INTERVAL_S = 0.25
    # A graceful stop (SIGTERM) moves leaderships away first: a few seconds; after 30 s the node is killed.
    STOP_TIMEOUT_S = 30.0

    def __init__(
        self,
        nodes: int = 3,
        *,
        directory: Path | None = None,
        heap_mb: int = DEFAULT_HEAP_MB,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        broker_config: Mapping[str, str] | None = None,
        distribution: KafkaDistribution | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        self._dist = distribution
        self._directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="aml-kafka-"))
        self._heap_mb = heap_mb
        self._session_timeout_ms = session_timeout_ms
        self._extra_config = dict(broker_config or {})
        self._lock = threading.RLock()
        self._started = False
        self._closed = False
        self._cluster_id = _cluster_id()
        self._nodes = [
            KafkaNode(node_id, free_port(), free_port(), self._directory / f"node-{node_id}")
            for node_id in range(1, nodes + 1)
        ]
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-launcher")
        self._admin: AdminClient | None = None
        self._down: set[int] = set()  # nodes killed, stopped or frozen on purpose (not an error while waiting)
        self._frozen: set[int] = set()
        # Safety net for a forgotten close(): kill the JVMs when this object is collected or the interpreter exits.
        self._live: list[subprocess.Popen[bytes]] = []
        self._remove_directory = [directory is None]
        self._finalizer = weakref.finalize(self, _cleanup, self._live, self._directory, self._remove_directory)

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...``: every node's client listener, in node-id order."""
        return ",".join(node.address for node in self._nodes)

    @property
    def broker_count(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> Sequence[KafkaNode]:
        return tuple(self._nodes)

    @property
    def directory(self) -> Path:
        """Configs, data and logs of every node (``node-<id>/``)."""
        return self._directory

    @property
    def version(self) -> str:
        return self._distribution().version

    @property
    def replication_factor(self) -> int:
        return min(3, len(self._nodes))

    @property
    def min_insync_replicas(self) -> int:
        return min(2, len(self._nodes))

    def node(self, node_id: int) -> KafkaNode:
        if not 1 <= node_id <= len(self._nodes):
            raise ValueError(f"node_id must be 1..{len(self._nodes)}, got {node_id}")
        return self._nodes[node_id - 1]

    def _distribution(self) -> KafkaDistribution:
        if self._dist is None:
            self._dist = resolve()
        return self._dist

    # -- configuration --------------------------------------------------------------------------------------------

    def server_properties(self, node: KafkaNode) -> dict[str, str]:
        """The node's ``server.properties`` (see the class docstring for the choices)."""
        voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in self._nodes)
        config = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{node.address},CONTROLLER://{LOOPBACK}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{node.address}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data_dir),
            # Production semantics: what docs/operations.md and docker/compose.yaml recommend (tests/deploy checks).
            **production_broker_config(len(self._nodes)),
            # Quick on 2 cores: internal topics default to 50 partitions x RF replicas each, which takes many
            # seconds to create and keeps every node busy; 3 partitions serve any test load.
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.num.partitions": "3",
            "num.partitions": "1",
            # A group forms as soon as its first member joins (the broker default waits 3 s for more).
            "group.initial.rebalance.delay.ms": "0",
            # Failure detection (see DEFAULT_SESSION_TIMEOUT_MS); heartbeats at a sixth of it.
            "broker.session.timeout.ms": str(self._session_timeout_ms),
            "broker.heartbeat.interval.ms": str(max(500, self._session_timeout_ms // 6)),
            # A follower that stops fetching (frozen, partitioned) leaves the ISR after 10 s instead of 30 s.
            "replica.lag.time.max.ms": "10000",
            # Fewer threads than the defaults (3 network, 8 I/O): the machine has 2 cores for all three nodes.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            # Tests stream a few hundred MB at most; small segments are not needed, but no 1 GiB preallocation.
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        config.update(self._extra_config)
        return config

    def _write_config(self, node: KafkaNode) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{key}={value}\n" for key, value in self.server_properties(node).items())
        node.config_path.write_text(text)

    def _java(self, node: KafkaNode, main: str, *args: str, heap_mb: int) -> list[str]:
        dist = self._distribution()
        return [
            dist.java,
            f"-Xms{heap_mb}m",
            f"-Xmx{heap_mb}m",
            # Serial GC: no parallel GC threads competing for 2 cores; pauses on a few hundred MiB are short.
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile=file:{dist.log4j_config}",
            f"-Dkafka.logs.dir={node.directory}",
            "-cp",
            dist.classpath,
            main,
            *args,
        ]

    def _format(self, node: KafkaNode) -> None:
        argv = self._java(
            node,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self._cluster_id,
            "-c",
            str(node.config_path),
            "--ignore-formatted",
            heap_mb=128,
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=self.FORMAT_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise KafkaClusterError(
                f"formatting node {node.node_id} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            )

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Format every node, start them all and wait until each is a registered broker and the internal topics
        exist. On failure everything started is stopped again (and the node logs are quoted in the error)."""
        with self._lock:
            if self._closed:
                raise KafkaClusterError("KafkaCluster is closed")
            if self._started:
                return self
            try:
                self._distribution()
                for node in self._nodes:
                    self._write_config(node)
                # The formats are independent short JVM runs: in parallel they take the time of one.
                with ThreadPoolExecutor(max_workers=len(self._nodes)) as pool:
                    list(pool.map(self._format, self._nodes))
                for node in self._nodes:
                    self._spawn(node)
                self.wait_until_ready(self.START_TIMEOUT_S)
                self._warm_internal_topics()
            except BaseException:
                self._kill_all()
                raise
            self._started = True
            return self

    def _spawn(self, node: KafkaNode) -> None:
        argv = self._java(node, "kafka.Kafka", str(node.config_path), heap_mb=self._heap_mb)

        def launch() -> subprocess.Popen[bytes]:
            with (node.directory / "console.log").open("ab") as console:
                return subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    # Own session: a Ctrl-C in the terminal reaches only the Python parent, which then stops the
                    # nodes itself (close()); the JVMs must not each start a shutdown of their own meanwhile.
                    start_new_session=True,
                    **child_process_kwargs(signal.SIGKILL),  # gone with the parent, even after its kill -9
                )

        process = self._launcher.submit(launch).result()
        node.process = process
        self._live.append(process)

    def _kill_all(self) -> None:
        for node in self._nodes:
            if node.process is not None:
                _kill(node.process)

    def close(self, *, keep_logs: bool = False) -> None:
        """Kill every node (the data is thrown away, so no graceful shutdown is needed) and delete the cluster's
        directory, unless ``keep_logs`` (then it stays for reading; its path is :attr:`directory`). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._admin = None
            self._kill_all()
            self._launcher.shutdown(wait=True)
            if keep_logs:
                self._remove_directory[0] = False
                for node in self._nodes:
                    shutil.rmtree(node.data_dir, ignore_errors=True)  # logs stay, the data need not
            self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- readiness ------------------------------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        """A confluent-kafka AdminClient on this cluster (created once, reused)."""
        with self._lock:
            if self._admin is None:
                self._admin = AdminClient(self._client_config())
            return self._admin

    def _client_config(self) -> dict[str, Any]:
        # Level 2 (critical only): the cluster's own clients talk to nodes that are starting, killed or frozen on
        # purpose, and librdkafka would log every refused connection; failures still raise from the calls.
        # Bootstrapped on the nodes that are not frozen: a frozen JVM's socket still accepts connections (the kernel
        # answers) but never replies, and an admin client whose first connection landed there timed out its metadata
        # request (15 s) on a loaded machine while the other nodes were fine. It learns every node from them.
        with self._lock:
            frozen = set(self._frozen)
        alive = [node.address for node in self._nodes if node.node_id not in frozen] or [self.bootstrap_servers]
        return {"bootstrap.servers": ",".join(alive), "log.connection.close": False, "log_level": 2}

    def registered_brokers(self) -> set[int]:
        """Ids of the brokers the cluster metadata lists now (a fenced or dead node drops out)."""
        metadata = self.admin().list_topics(timeout=self.ADMIN_TIMEOUT_S)
        return set(metadata.brokers)

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for node in self._nodes:
                if node.process is not None and node.process.poll() is not None and node.process in self._expected:
                    raise KafkaClusterError(
                        f"node {node.node_id} exited with {node.process.returncode} waiting for {what}:\n"
                        + node.log_tail()
                    )
            try:
                if predicate():
                    return
            except (KafkaException, OSError) as exc:
                last_error = exc
            time.sleep(self._PROBE_INTERVAL_S)
        tails = "\n".join(f"--- node {n.node_id} ---\n{n.log_tail(15)}" for n in self._nodes)
        raise KafkaClusterError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error=}):\n{tails}")

    @property
    def _expected(self) -> set[subprocess.Popen[bytes]]:
        """Processes that should be running (not killed on purpose by a fault test)."""
        return {n.process for n in self._nodes if n.process is not None and n.node_id not in self._down}

    def wait_until_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every running node is a registered broker."""
        wanted = {n.node_id for n in self._nodes if n.running and n.node_id not in self._down}
        self._wait(lambda: wanted <= self.registered_brokers(), timeout, f"brokers {sorted(wanted)} to register")

    def _warm_internal_topics(self) -> None:
        """Create ``__consumer_offsets`` and ``__transaction_state`` now, while every node is up: they are created
        on first use with RF 3, which fails while a node is down (a fault test would then see no coordinator)."""
        base = self._client_config()
        consumer = Consumer({**base, "group.id": "aml-embedded-warm-up", "enable.auto.commit": False})
        try:
            # Looking up a group's committed offsets needs its coordinator, which creates the offsets topic.
            self._wait(
                lambda: consumer.committed([ConfluentTopicPartition("__warm-up", 0)], timeout=5) is not None,
                self.START_TIMEOUT_S,
                "the consumer offsets topic",
            )
        finally:
            consumer.close()
        producer = Producer({**base, "transactional.id": "aml-embedded-warm-up"})
        # InitProducerId with a transactional id finds the transaction coordinator, creating its topic.
        producer.init_transactions(self.START_TIMEOUT_S)

    # -- per-node control (fault injection) -------------------------------------------------------------------------

    def _mark_down(self, node_id: int) -> None:
        with self._lock:
            self._down.add(node_id)

    def _mark_up(self, node_id: int) -> None:
        with self._lock:
            self._down.discard(node_id)

    def kill(self, node_id: int) -> None:
        """``kill -9`` the node: no controlled shutdown, no flush. The controller notices after the session
        timeout, fences it, moves its leaderships and shrinks the ISRs."""
        node = self.node(node_id)
        with self._lock:
            self._mark_down(node_id)
            if node.process is not None:
                _kill(node.process)

    def stop(self, node_id: int, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the node gracefully (SIGTERM: controlled shutdown, leaderships handed over first)."""
        node = self.node(node_id)
        with self._lock:
            self._mark_down(node_id)
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    _kill(node.process)

    def restart(self, node_id: int, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> None:
        """Start a stopped or killed node again on the same ports and data; with ``wait`` until it is registered
        again (it then catches up as a follower; see :meth:`wait_until_fully_replicated`)."""
        node = self.node(node_id)
        with self._lock:
            if node.running:
                raise KafkaClusterError(f"node {node_id} is running (pid {node.pid}); kill or stop it first")
            self._spawn(node)
            self._mark_up(node_id)
        if wait:
            self._wait(lambda: node_id in self.registered_brokers(), timeout, f"node {node_id} to register again")

    def freeze(self, node_id: int) -> None:
        """SIGSTOP the node's JVM: its sockets stay open but nothing answers (a GC pause or a hung host)."""
        node = self.node(node_id)
        if node.process is None or not node.running:
            raise KafkaClusterError(f"node {node_id} is not running")
        node.process.send_signal(signal.SIGSTOP)
        self._mark_down(node_id)
        self._frozen.add(node_id)
        # The admin client's open connection to this node now hangs, and librdkafka may keep routing requests to
        # it; a new client never counts the frozen node usable (its ApiVersions handshake gets no answer).
        with self._lock:
            self._admin = None

    def thaw(self, node_id: int) -> None:
        """SIGCONT a frozen node; it resumes where it stopped (and is unfenced at its next heartbeat)."""
        node = self.node(node_id)
        if node.process is None or not node.running:
            raise KafkaClusterError(f"node {node_id} is not running")
        node.process.send_signal(signal.SIGCONT)
        self._frozen.discard(node_id)
        self._mark_up(node_id)

    def heal(self, timeout: float = START_TIMEOUT_S) -> list[int]:
        """Undo every node fault: thaw frozen nodes, restart killed or stopped ones, then wait until all are
        registered and every partition is fully replicated. Returns the nodes it had to repair. A test sharing
        the cluster calls this when it ends, so the next test finds the cluster whole."""
        repaired = []
        for node in self._nodes:
            if node.node_id in self._frozen:
                self.thaw(node.node_id)
                repaired.append(node.node_id)
            elif not node.running:
                self.restart(node.node_id, wait=False)
                repaired.append(node.node_id)
        if repaired:
            self.wait_until_ready(timeout)
        self.wait_until_fully_replicated(timeout)
        return repaired

    # -- who does what ------------------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        """Create a topic (RF defaults to :attr:`replication_factor`) and wait until every partition has a leader
        known to the cluster's metadata."""
        rf = self.replication_factor if replication_factor is None else replication_factor
        if not 1 <= rf <= len(self._nodes):
            raise ValueError(f"replication_factor must be 1..{len(self._nodes)}, got {rf}")
        topic = NewTopic(name, num_partitions=partitions, replication_factor=rf, config=dict(config or {}))
        future = self.admin().create_topics([topic], operation_timeout=self.ADMIN_TIMEOUT_S)[name]
        try:
            future.result(self.ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaClusterError(f"create_topic({name!r}, {partitions}, {rf}): {exc}") from None

        def led() -> bool:
            meta = self.admin().list_topics(name, timeout=self.ADMIN_TIMEOUT_S).topics.get(name)
            return (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            )

        self._wait(led, self.ADMIN_TIMEOUT_S, f"leaders for every partition of {name}")

    def _partition(self, topic: str, partition: int) -> Any:
        """The partition's metadata. Each node replays the metadata log on its own, so a node asked right after a
        topic was created may not know it yet: an unknown topic is asked for again until ADMIN_TIMEOUT_S."""
        deadline = time.monotonic() + self.ADMIN_TIMEOUT_S
        while True:
            meta = self.admin().list_topics(topic, timeout=self.ADMIN_TIMEOUT_S).topics.get(topic)
            if meta is not None and meta.error is None and partition in meta.partitions:
                return meta.partitions[partition]
            if time.monotonic() > deadline:
                raise KafkaClusterError(f"{topic}[{partition}] is unknown: {meta.error if meta else 'no such topic'}")
            time.sleep(self._PROBE_INTERVAL_S)

    def partition_leader(self, topic: str, partition: int) -> int:
        """The node leading ``topic[partition]`` now, per the cluster metadata (-1 when leaderless)."""
        return int(self._partition(topic, partition).leader)

    def in_sync_replicas(self, topic: str, partition: int) -> list[int]:
        return [int(r) for r in self._partition(topic, partition).isrs]

    def group_coordinator(self, group: str) -> int:
        """The node coordinating consumer group ``group`` (the leader of its ``__consumer_offsets`` partition). The
        group need not exist yet: the coordinator is a function of the group id."""
        future = self.admin().describe_consumer_groups([group], request_timeout=self.ADMIN_TIMEOUT_S)[group]
        return int(future.result(self.ADMIN_TIMEOUT_S).coordinator.id)

    @contextlib.contextmanager
    def _kafka_python_admin(self) -> Iterator[Any]:
        """kafka-python's admin client on the nodes up now, for the two requests confluent-kafka lacks here
        (DescribeQuorum, IncrementalAlterConfigs without private imports)."""
        from kafka.admin import KafkaAdminClient  # noqa: PLC0415  (only these rarely used requests need it)

        admin = KafkaAdminClient(
            bootstrap_servers=[n.address for n in self._nodes if n.running and n.node_id not in self._down],
            request_timeout_ms=int(self.ADMIN_TIMEOUT_S * 1000),
        )
        try:
            yield admin
        finally:
            admin.close()

    def active_controller(self) -> int:
        """The node leading the KRaft metadata quorum (``DescribeQuorum``, as ``kafka-metadata-quorum`` shows).

        Until the controller fences a node that was just killed, the metadata still lists it and the request may be
        sent there and refused: the client then tries another node (the dead one is in reconnect back-off), until
        ADMIN_TIMEOUT_S."""
        from kafka.errors import KafkaError  # noqa: PLC0415

        deadline = time.monotonic() + self.ADMIN_TIMEOUT_S
        with self._kafka_python_admin() as admin:
            while True:
                try:
                    quorum = admin.describe_metadata_quorum()
                    break
                except KafkaError as exc:
                    if time.monotonic() > deadline:
                        raise KafkaClusterError(f"DescribeQuorum failed: {exc}") from exc
                    time.sleep(self._PROBE_INTERVAL_S)
        leader = int(quorum["topics"][0]["partitions"][0]["leader_id"])
        if leader < 0:
            raise KafkaClusterError("the metadata quorum has no leader right now")
        return leader

    def alter_topic_config(self, topic: str, config: Mapping[str, str]) -> None:
        """Set topic-level configuration (``IncrementalAlterConfigs``), e.g. ``min.insync.replicas``."""
        from kafka.admin import ConfigResource, ConfigResourceType  # noqa: PLC0415

        with self._kafka_python_admin() as admin:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=dict(config))])

    def under_replicated(self, topics: Sequence[str] | None = None) -> list[tuple[str, int]]:
        """Partitions (of ``topics``, default all) whose ISR is smaller than their replica set."""
        metadata = self.admin().list_topics(timeout=self.ADMIN_TIMEOUT_S)
        return [
            (name, p.id)
            for name, topic in metadata.topics.items()
            if topics is None or name in topics
            for p in topic.partitions.values()
            if len(p.isrs) < len(p.replicas)
        ]

    def wait_until_fully_replicated(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until every partition's ISR holds all its replicas again (after a restart, a thaw)."""
        self._wait(lambda: not self.under_replicated(), timeout, "every partition to be fully replicated")

    def logged(self, *fragments: str) -> list[str]:
        """Lines of every node's server.log that contain all ``fragments`` (what the brokers saw, e.g. a group
        member's explicit LeaveGroup, which the group coordinator logs)."""
        found = []
        for node in self._nodes:
            with contextlib.suppress(OSError):
                found += [
                    line
                    for line in node.log_path.read_text(errors="replace").splitlines()
                    if all(fragment in line for fragment in fragments)
                ]
        return found

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "not started")
        return f"KafkaCluster(nodes={len(self._nodes)}, {self.bootstrap_servers}, {state})"
