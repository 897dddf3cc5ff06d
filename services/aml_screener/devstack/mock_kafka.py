"""The embedded Kafka-protocol broker: librdkafka's mock cluster, driven through ctypes.

No Apache Kafka can run on the development and CI machines, so the demo, the integration tests and the
benchmarks talk to the mock cluster that ships inside the confluent-kafka wheel
(``confluent_kafka.libs/librdkafka-*.so*``). It is a real TCP server speaking the Kafka protocol (produce,
idempotent produce, fetch, consumer groups with offset commits, metadata), so unmodified kafka-python and
confluent-kafka clients connect to it through ``bootstrap_servers``.

This module is responsible for:

* :class:`MockKafkaCluster`: one mock cluster inside the calling process, plus its fault-injection knobs
  (broker down/up, per-API error stacks, leader moves, latency).
* A command-line entry point (``python -m aml_screener.devstack.mock_kafka``) that runs a cluster in a
  child process and takes JSON-line commands on stdin, answering each with one JSON line on stdout.
* :class:`MockKafkaClusterProcess`: a client with the same methods as :class:`MockKafkaCluster` that starts
  that child and proxies every call, so a benchmark keeps the broker's threads out of the measured process and
  a test can inject faults into a broker living in another process.

Broker ids in the mock start at 1 and run up to and including the broker count (librdkafka numbers them that
way; there is no broker 0). Where the C API accepts ``-1`` as a broker id it means "all brokers" (down/up/rtt)
or "no leader" (partition leader).

What the mock does NOT do like Apache Kafka (found by trying, with kafka-python 3.0.12 and librdkafka 2.16):

* ``broker_down`` moves no leadership and drops the broker from Metadata answers, so clients are told about a
  leader that is not in the broker list. kafka-python 3 consumers then raise ``UnknownBrokerIdError`` from
  ``poll()`` and its producer stalls even after ``broker_up``. Use :meth:`MockKafkaCluster.fail_over`, which
  also moves leaders (and, for the groups named, coordinators) the way a controller would.
* Group coordinators never move by themselves: coordinator = ``crc32(group.id) % brokers + 1``, up or down.
* OffsetCommit v6+ whose CommittedLeaderEpoch is older than the partition's current leader epoch is refused
  with FENCED_LEADER_EPOCH (Kafka stores the epoch without checking). After a leader move a consumer cannot
  commit a partition until it has consumed a record written under the new leader.
* A rebalance of a group that already has members holds every JoinGroup for ``session.timeout.ms - 1 s``
  before electing a leader, even when all members have rejoined; kafka-python's default session timeout for
  api_version < 3.0 is 30 s (see ``stack.KAFKA_PYTHON_MOCK_CONSUMER_SETTINGS``).
* A follower's SyncGroup that arrives after the leader's is answered INVALID_REQUEST (the group is already
  stable), which kafka-python 3 raises from ``poll()``: groups with several kafka-python members fail to form
  in some runs (2 of 6 here). Single-member groups are reliable.
* ``set_apiversion`` cannot steer kafka-python clients with a pinned ``api_version`` (they ignore advertised
  ranges; a request above the range makes the mock close the connection).
* No CreateTopics (use :meth:`MockKafkaCluster.create_topic`; auto-created topics get 4 partitions); no
  faithful transactions; a bounded log per partition (about 40k small records), see docs/DESIGN notes.
* Errors pushed for Metadata are consumed but not put into the answer (only their RTT/DISCONNECT act);
  use :meth:`MockKafkaCluster.set_topic_error` instead.

The mock's C API is marked experimental by librdkafka (no ABI promise), so every function used here has its
``argtypes``/``restype`` declared from ``src/rdkafka_mock.h`` of the librdkafka version bundled with
confluent-kafka 2.16 (librdkafka 2.16.0), and optional functions are looked up lazily so a wheel without them
fails only when that knob is used.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import glob
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, NamedTuple, Protocol, Self

from aml_screener.devstack.process import set_parent_death_signal

__all__ = [
    "ApiKey",
    "KafkaClusterControl",
    "KafkaError",
    "MockKafkaCluster",
    "MockKafkaClusterError",
    "MockKafkaClusterProcess",
    "MockRequest",
    "main",
]


class ApiKey(IntEnum):
    """Kafka protocol request types (the ``ApiKey`` field of every request header)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    INIT_PRODUCER_ID = 22
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28


class KafkaError(IntEnum):
    """Kafka protocol error codes (as numbered by Apache Kafka's ``Errors`` enum), for error injection.

    ``DISCONNECT`` is not a protocol code: it is librdkafka's ``RD_KAFKA_RESP_ERR__TRANSPORT``, which the mock
    answers by closing the client's connection instead of sending a response.
    """

    DISCONNECT = -195
    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    BROKER_NOT_AVAILABLE = 8
    REPLICA_NOT_AVAILABLE = 9
    MESSAGE_TOO_LARGE = 10
    NETWORK_EXCEPTION = 13
    COORDINATOR_LOAD_IN_PROGRESS = 14
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    ILLEGAL_GENERATION = 22
    UNKNOWN_MEMBER_ID = 25
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75


class MockKafkaClusterError(RuntimeError):
    """The mock cluster could not be created, rejected a command, or its child process failed."""


class MockRequest(NamedTuple):
    """One request the mock received while request tracking was on."""

    broker_id: int
    api_key: int
    timestamp_us: int  # librdkafka's monotonic clock, microseconds


class KafkaClusterControl(Protocol):
    """What both the in-process cluster and the subprocess proxy offer (type of ``EmbeddedStack.kafka``)."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def broker_count(self) -> int: ...
    def create_topic(self, name: str, partitions: int, replication_factor: int | None = None) -> None: ...
    def broker_down(self, broker_id: int) -> None: ...
    def broker_up(self, broker_id: int) -> None: ...
    def fail_over(self, broker_id: int, groups: Sequence[str] = ()) -> None: ...
    def partition_leader(self, topic: str, partition: int) -> int: ...
    def group_coordinator(self, group: str) -> int: ...
    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None: ...
    def push_broker_request_error_rtts(
        self, broker_id: int, api_key: int, errors_and_rtts: Sequence[tuple[int, int]]
    ) -> None: ...
    def clear_request_errors(self, api_key: int) -> None: ...
    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None: ...
    def set_partition_follower(self, topic: str, partition: int, broker_id: int) -> None: ...
    def set_broker_rtt(self, broker_id: int, ms: int) -> None: ...
    def set_coordinator(self, key_type: str, key: str, broker_id: int) -> None: ...
    def set_topic_error(self, topic: str, error: int) -> None: ...
    def set_group_initial_rebalance_delay_ms(self, ms: int) -> None: ...
    def start_request_tracking(self) -> None: ...
    def stop_request_tracking(self) -> None: ...
    def requests(self) -> list[MockRequest]: ...
    def clear_requests(self) -> None: ...
    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------------
# ctypes binding

_P = ctypes.c_void_p
_STR = ctypes.c_char_p
_I16 = ctypes.c_int16
_I32 = ctypes.c_int32
_INT = ctypes.c_int
_SIZE = ctypes.c_size_t
_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_ERRSTR_SIZE = 512  # librdkafka's own examples use 512 bytes for errstr buffers

# name -> (restype, argtypes), copied from src/rdkafka.h and src/rdkafka_mock.h (librdkafka 2.16).
# rd_kafka_resp_err_t is a C enum, i.e. an int.
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "rd_kafka_conf_new": (_P, []),
    "rd_kafka_conf_destroy": (None, [_P]),
    "rd_kafka_conf_set": (_INT, [_P, _STR, _STR, _STR, _SIZE]),
    "rd_kafka_new": (_P, [_INT, _P, _STR, _SIZE]),
    "rd_kafka_destroy": (None, [_P]),
    "rd_kafka_err2str": (_STR, [_INT]),
    "rd_kafka_mock_cluster_new": (_P, [_P, _INT]),
    "rd_kafka_mock_cluster_destroy": (None, [_P]),
    "rd_kafka_mock_cluster_bootstraps": (_STR, [_P]),
    "rd_kafka_mock_topic_create": (_INT, [_P, _STR, _INT, _INT]),
    "rd_kafka_mock_topic_set_error": (None, [_P, _STR, _INT]),
    "rd_kafka_mock_broker_set_down": (_INT, [_P, _I32]),
    "rd_kafka_mock_broker_set_up": (_INT, [_P, _I32]),
    "rd_kafka_mock_broker_set_rtt": (_INT, [_P, _I32, _INT]),
    "rd_kafka_mock_clear_request_errors": (None, [_P, _I16]),
    "rd_kafka_mock_push_request_errors_array": (None, [_P, _I16, _SIZE, ctypes.POINTER(_INT)]),
    # Variadic: only the fixed arguments are declared; the (err, rtt_ms) pairs are passed as c_int, which is
    # what C's default argument promotion makes of both an enum and an int.
    "rd_kafka_mock_broker_push_request_error_rtts": (_INT, [_P, _I32, _I16, _SIZE]),
    "rd_kafka_mock_partition_set_leader": (_INT, [_P, _STR, _I32, _I32]),
    "rd_kafka_mock_partition_set_follower": (_INT, [_P, _STR, _I32, _I32]),
    "rd_kafka_mock_coordinator_set": (_INT, [_P, _STR, _STR, _I32]),
    "rd_kafka_mock_group_initial_rebalance_delay_ms": (None, [_P, _I32]),
    "rd_kafka_mock_set_apiversion": (_INT, [_P, _I16, _I16, _I16]),
    "rd_kafka_mock_start_request_tracking": (None, [_P]),
    "rd_kafka_mock_stop_request_tracking": (None, [_P]),
    "rd_kafka_mock_clear_requests": (None, [_P]),
    "rd_kafka_mock_get_requests": (ctypes.POINTER(_P), [_P, ctypes.POINTER(_SIZE)]),
    "rd_kafka_mock_request_id": (_I32, [_P]),
    "rd_kafka_mock_request_api_key": (_I16, [_P]),
    "rd_kafka_mock_request_timestamp": (ctypes.c_int64, [_P]),
    "rd_kafka_mock_request_destroy_array": (None, [ctypes.POINTER(_P), _SIZE]),
}

_lib_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def find_librdkafka() -> str:
    """Path of the librdkafka shared object bundled with the installed confluent-kafka wheel.

    Falls back to a system ``librdkafka`` (``apt-get install librdkafka1``) when confluent-kafka was built
    against one instead of shipping its own copy.
    """
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is not None and spec.origin is not None:
        site_dir = Path(spec.origin).parent.parent
        candidates = sorted(glob.glob(str(site_dir / "confluent_kafka.libs" / "librdkafka*.so*")))
        if candidates:
            return candidates[0]
    system = ctypes.util.find_library("rdkafka")
    if system is not None:
        return system
    raise MockKafkaClusterError(
        "librdkafka not found: install the confluent-kafka wheel (pip install 'confluent-kafka>=2.5,<3'), "
        "which bundles it, or the system library (apt-get install librdkafka1)"
    )


def _library() -> ctypes.CDLL:
    """Load librdkafka once per process and declare the signatures of the functions we call.

    The wheel's copy is the very file confluent_kafka's extension module links against, so dlopen hands back
    the already-loaded library when confluent_kafka was imported first; there is one librdkafka per process.
    """
    global _lib  # noqa: PLW0603  (one loaded library per process, guarded by _lib_lock)
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(find_librdkafka())
            for name, (restype, argtypes) in _SIGNATURES.items():
                func = getattr(lib, name, None)
                if func is None:  # optional (newer) functions: fail only when used, see _func()
                    continue
                func.restype = restype
                func.argtypes = argtypes
            _lib = lib
        return _lib


def _func(name: str) -> Any:
    lib = _library()
    func = getattr(lib, name, None)
    if func is None:
        raise MockKafkaClusterError(f"{name} is not exported by this librdkafka ({find_librdkafka()})")
    return func


def _err2str(err: int) -> str:
    raw: bytes | None = _func("rd_kafka_err2str")(err)
    return raw.decode("utf-8", "replace") if raw else f"error {err}"


def _check(err: int, what: str) -> None:
    if err != 0:
        raise MockKafkaClusterError(f"{what} failed: {_err2str(err)} ({err})")


# --------------------------------------------------------------------------------------------------------
# In-process cluster


class MockKafkaCluster:
    """One librdkafka mock cluster running on background C threads of this process.

    Broker ids are 1..``brokers`` (the mock starts numbering at 1). The mock serialises every call on its own
    lock, and the Python-side bookkeeping (leaders, down brokers) has a lock of its own, so all methods may be
    called from any thread. Use as a context manager or call :meth:`close`.

    Leaders are pinned at :meth:`create_topic` (partition ``p`` is led by broker ``p % brokers + 1`` when that
    broker holds one of its replicas), so tests are deterministic and :meth:`fail_over` knows what to move.
    The mock itself would pick a random replica.
    """

    def __init__(self, brokers: int = 1, *, group_initial_rebalance_delay_ms: int = 0) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, got {brokers}")
        self._brokers = brokers
        self._lock = threading.RLock()
        self._closed = False
        self._down: set[int] = set()
        self._replicas: dict[str, list[tuple[int, ...]]] = {}
        self._leaders: dict[str, list[int]] = {}
        self._pinned_coordinators: dict[tuple[str, str], int] = {}
        self._bootstrap_servers = ""
        self._rk, self._mcluster = self._create(brokers)
        bootstraps: bytes | None = _func("rd_kafka_mock_cluster_bootstraps")(self._mcluster)
        if not bootstraps:
            self._destroy()
            raise MockKafkaClusterError("mock cluster reported no bootstrap servers")
        self._bootstrap_servers = bootstraps.decode("ascii")
        # Kafka's broker default is 3 s; the mock copies it. Tests want a group to form as soon as the first
        # member joins, so 0 is the default here (a later member still triggers an ordinary rebalance).
        self.set_group_initial_rebalance_delay_ms(group_initial_rebalance_delay_ms)

    @staticmethod
    def _create(brokers: int) -> tuple[int, int]:
        conf = _func("rd_kafka_conf_new")()
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        # The handle only hosts the mock (it never connects anywhere), so it has no bootstrap.servers and
        # librdkafka would print a CONFWARN notice (level 5) about that. Level 4 drops notices but keeps
        # warnings and errors from the mock brokers on stderr.
        settings = {"log_level": "4", "client.id": "aml-screener-mock-cluster"}
        for key, value in settings.items():
            res = _func("rd_kafka_conf_set")(conf, key.encode(), value.encode(), errstr, ctypes.sizeof(errstr))
            if res != _RD_KAFKA_CONF_OK:
                _func("rd_kafka_conf_destroy")(conf)
                raise MockKafkaClusterError(f"rd_kafka_conf_set({key}) failed: {errstr.value.decode()}")
        # On success rd_kafka_new takes ownership of conf; on failure the caller still owns it.
        rk = _func("rd_kafka_new")(_RD_KAFKA_PRODUCER, conf, errstr, ctypes.sizeof(errstr))
        if not rk:
            _func("rd_kafka_conf_destroy")(conf)
            raise MockKafkaClusterError(f"rd_kafka_new failed: {errstr.value.decode()}")
        mcluster = _func("rd_kafka_mock_cluster_new")(rk, brokers)
        if not mcluster:
            _func("rd_kafka_destroy")(rk)
            raise MockKafkaClusterError(f"rd_kafka_mock_cluster_new({brokers}) failed")
        return int(rk), int(mcluster)

    # -- properties ---------------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:p1,127.0.0.1:p2,..."``, one listener per broker, in broker-id order."""
        return self._bootstrap_servers

    @property
    def broker_count(self) -> int:
        return self._brokers

    @property
    def closed(self) -> bool:
        return self._closed

    def _handle(self) -> int:
        if self._closed:
            raise MockKafkaClusterError("mock cluster is closed")
        return self._mcluster

    # librdkafka's mock thread sleeps in poll() for up to 1 s between timer events and is woken for a command
    # by a queue wake-up fd that now and then does not fire: without help, 2-4 of ~780 commands took exactly
    # 1.0 s under CPU load (and some idle runs, e.g. set_partition_leader). Any socket event also makes the
    # thread serve its command queue, so a command that has not returned after 10 ms (they normally take
    # ~20 us) gets a TCP connection to each broker listener as a nudge: 0 stalls in the same runs.
    _WAKEUP_AFTER_S = 0.01
    # A loopback connect succeeds or is refused at once; 0.5 s only bounds a listener with a full backlog.
    _NUDGE_CONNECT_TIMEOUT_S = 0.5

    def _cmd(self, name: str, *args: Any) -> Any:
        """Call the mock API function ``name`` on this cluster, nudging the mock thread if it dozes."""
        func = _func(name)
        handle = self._handle()
        timer = threading.Timer(self._WAKEUP_AFTER_S, self._nudge)
        timer.daemon = True
        timer.start()
        try:
            return func(handle, *args)
        finally:
            timer.cancel()

    def _nudge(self) -> None:
        for address in filter(None, self._bootstrap_servers.split(",")):
            host, _, port = address.rpartition(":")
            with contextlib.suppress(OSError, ValueError):
                socket.create_connection((host, int(port)), timeout=self._NUDGE_CONNECT_TIMEOUT_S).close()

    def _check_broker(self, broker_id: int, *, allow_all: bool = False) -> None:
        if allow_all and broker_id == -1:
            return
        if not 1 <= broker_id <= self._brokers:
            hint = " or -1 for all" if allow_all else ""
            raise ValueError(f"broker_id must be 1..{self._brokers}{hint} (ids start at 1), got {broker_id}")

    # -- topics -------------------------------------------------------------------------------------------

    def _replica_set(self, partition: int, rf: int) -> tuple[int, ...]:
        # Same placement as the mock's rd_kafka_mock_partition_assign_replicas(): rf consecutive brokers
        # starting at index (partition * rf) % brokers, wrapping around.
        first = (partition * rf) % self._brokers
        return tuple((first + k) % self._brokers + 1 for k in range(rf))

    def create_topic(self, name: str, partitions: int, replication_factor: int | None = None) -> None:
        """Create ``name`` with ``partitions`` partitions; RF defaults to ``min(3, brokers)``.

        The mock has no CreateTopics API, so topics are created here. Producing to an unknown topic also
        auto-creates it (mock default: 4 partitions, RF 3 capped at the broker count), but then neither
        :meth:`partition_leader` nor :meth:`fail_over` know about it. Creating an existing topic fails.
        """
        rf = min(3, self._brokers) if replication_factor is None else replication_factor
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        if not 1 <= rf <= self._brokers:
            raise ValueError(f"replication_factor must be 1..{self._brokers}, got {rf}")
        with self._lock:
            if name in self._replicas:
                raise MockKafkaClusterError(f"topic {name!r} already exists")
            err = self._cmd("rd_kafka_mock_topic_create", name.encode(), partitions, rf)
            _check(err, f"create_topic({name!r}, {partitions}, {rf})")
            self._replicas[name] = [self._replica_set(p, rf) for p in range(partitions)]
            self._leaders[name] = [-1] * partitions
            for p, replicas in enumerate(self._replicas[name]):
                preferred = p % self._brokers + 1
                self.set_partition_leader(name, p, preferred if preferred in replicas else replicas[0])

    def partition_leader(self, topic: str, partition: int) -> int:
        """The leader this object last set for a partition of a topic created through :meth:`create_topic`."""
        with self._lock:
            try:
                return self._leaders[topic][partition]
            except (KeyError, IndexError):
                raise MockKafkaClusterError(f"{topic}[{partition}] was not created by create_topic") from None

    def set_topic_error(self, topic: str, error: int) -> None:
        """Make Metadata answers carry ``error`` for ``topic`` (``KafkaError.NONE`` clears it)."""
        self._cmd("rd_kafka_mock_topic_set_error", topic.encode(), int(error))

    # -- brokers ------------------------------------------------------------------------------------------

    def broker_down(self, broker_id: int) -> None:
        """Close the broker's connections and refuse new ones (``-1``: all brokers).

        Leadership does NOT move, and the broker also disappears from Metadata answers, so clients are told
        about a leader that is not in the broker list, which real Kafka never does (kafka-python 3 consumers
        raise ``UnknownBrokerIdError`` from ``poll()``). To simulate a crashed broker use :meth:`fail_over`.
        """
        self._check_broker(broker_id, allow_all=True)
        with self._lock:
            _check(self._cmd("rd_kafka_mock_broker_set_down", broker_id), f"broker_down({broker_id})")
            self._down.update(range(1, self._brokers + 1) if broker_id == -1 else (broker_id,))

    def broker_up(self, broker_id: int) -> None:
        """Accept connections again on the broker's original port (``-1``: all brokers).

        Leadership is not moved back (as in Kafka until its preferred-leader election runs).
        """
        self._check_broker(broker_id, allow_all=True)
        with self._lock:
            _check(self._cmd("rd_kafka_mock_broker_set_up", broker_id), f"broker_up({broker_id})")
            self._down.difference_update(range(1, self._brokers + 1) if broker_id == -1 else (broker_id,))

    def _next_live(self, candidates: Sequence[int], after: int) -> int:
        """First broker of ``candidates`` (rotated to start after ``after``) that is not down, else -1."""
        if after in candidates:
            i = candidates.index(after)
            candidates = [*candidates[i + 1 :], *candidates[:i]]
        return next((b for b in candidates if b not in self._down), -1)

    def fail_over(self, broker_id: int, groups: Sequence[str] = ()) -> None:
        """Crash a broker the way a Kafka controller would see it.

        Moves leadership of every partition the broker led (topics from :meth:`create_topic`) to the next
        live replica, or leaves the partition leaderless when no replica is live, moves the coordinator of
        each group in ``groups`` that it hosted to the next live broker, then takes the broker down. The mock
        keeps one log per partition, so no acknowledged record is lost. :meth:`broker_up` brings it back as
        a follower.
        """
        self._check_broker(broker_id)
        with self._lock:
            everyone = list(range(1, self._brokers + 1))
            coordinator_moves = {
                group: self._next_live(everyone, broker_id)
                for group in groups
                if self.group_coordinator(group) == broker_id
            }
            if -1 in coordinator_moves.values():
                raise MockKafkaClusterError(f"no live broker left to coordinate {sorted(coordinator_moves)}")
            # Leaders and coordinators move first, the broker goes down last: Metadata answered in between
            # must never name a leader missing from the broker list (kafka-python 3 cannot handle that).
            for topic, leaders in self._leaders.items():
                for p, leader in enumerate(leaders):
                    if leader == broker_id:
                        self.set_partition_leader(topic, p, self._next_live(self._replicas[topic][p], broker_id))
            for group, new_coordinator in coordinator_moves.items():
                self.set_coordinator("group", group, new_coordinator)
            self.broker_down(broker_id)

    def set_broker_rtt(self, broker_id: int, ms: int) -> None:
        """Delay every response of the broker by ``ms`` milliseconds (``-1``: all brokers; 0 removes it)."""
        self._check_broker(broker_id, allow_all=True)
        if ms < 0:
            raise ValueError(f"rtt must be >= 0 ms, got {ms}")
        err = self._cmd("rd_kafka_mock_broker_set_rtt", broker_id, ms)
        _check(err, f"set_broker_rtt({broker_id}, {ms})")

    # -- partitions and coordinators -----------------------------------------------------------------------

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        """Move the partition's leadership (``-1``: leaderless). Data stays: the mock keeps one log per
        partition, not one per replica. Beware: the mock creates ``topic`` if it does not exist."""
        self._check_broker(broker_id, allow_all=True)
        with self._lock:
            err = self._cmd("rd_kafka_mock_partition_set_leader", topic.encode(), partition, broker_id)
            _check(err, f"set_partition_leader({topic!r}, {partition}, {broker_id})")
            leaders = self._leaders.get(topic)
            if leaders is not None and 0 <= partition < len(leaders):
                leaders[partition] = broker_id

    def set_partition_follower(self, topic: str, partition: int, broker_id: int) -> None:
        """Set the preferred read replica returned to fetchers (KIP-392 follower fetching)."""
        err = self._cmd("rd_kafka_mock_partition_set_follower", topic.encode(), partition, broker_id)
        _check(err, f"set_partition_follower({topic!r}, {partition}, {broker_id})")

    def set_coordinator(self, key_type: str, key: str, broker_id: int) -> None:
        """Pin the coordinator of a ``"group"`` (group.id) or ``"transaction"`` (transactional.id).

        The mock keeps group membership and committed offsets cluster-wide, so moving a coordinator loses
        neither; clients see NOT_COORDINATOR and look it up again.
        """
        if key_type not in ("group", "transaction"):
            raise ValueError(f"key_type must be 'group' or 'transaction', got {key_type!r}")
        self._check_broker(broker_id)
        with self._lock:
            err = self._cmd("rd_kafka_mock_coordinator_set", key_type.encode(), key.encode(), broker_id)
            _check(err, f"set_coordinator({key_type!r}, {key!r}, {broker_id})")
            self._pinned_coordinators[(key_type, key)] = broker_id

    def group_coordinator(self, group: str) -> int:
        """The broker coordinating ``group``: as pinned by :meth:`set_coordinator`, else the mock's own
        choice, ``crc32(group) % brokers + 1`` (rd_kafka_mock_cluster_get_coord(), up or down)."""
        with self._lock:
            pinned = self._pinned_coordinators.get(("group", group))
        return pinned if pinned is not None else zlib.crc32(group.encode()) % self._brokers + 1

    def set_group_initial_rebalance_delay_ms(self, ms: int) -> None:
        """Broker setting ``group.initial.rebalance.delay.ms`` for the whole cluster."""
        if ms < 0:
            raise ValueError(f"delay must be >= 0 ms, got {ms}")
        self._cmd("rd_kafka_mock_group_initial_rebalance_delay_ms", ms)

    def set_apiversion(self, api_key: int, min_version: int, max_version: int) -> None:
        """Restrict the advertised version range of one API (``-1, -1`` disables it)."""
        err = self._cmd("rd_kafka_mock_set_apiversion", int(api_key), min_version, max_version)
        _check(err, f"set_apiversion({api_key}, {min_version}, {max_version})")

    # -- error injection ----------------------------------------------------------------------------------

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        """The next ``len(errors)`` requests of ``api_key`` (to any broker) fail with these codes, in order.

        Use ``KafkaError.NONE`` entries to let requests through between failures and ``KafkaError.DISCONNECT``
        to drop the connection instead of answering. A failed Produce request appends nothing.
        """
        if not errors:
            return
        array = (_INT * len(errors))(*(int(e) for e in errors))
        self._cmd("rd_kafka_mock_push_request_errors_array", int(api_key), len(errors), array)

    def push_broker_request_error_rtts(
        self, broker_id: int, api_key: int, errors_and_rtts: Sequence[tuple[int, int]]
    ) -> None:
        """Like :meth:`push_request_errors` for one broker, each entry also delaying its answer by rtt ms.

        ``(KafkaError.NONE, 500)`` therefore injects latency into a single request. Broker stacks take
        precedence over the cluster-wide stack.
        """
        self._check_broker(broker_id)
        if not errors_and_rtts:
            return
        varargs: list[ctypes.c_int] = []
        for err, rtt in errors_and_rtts:
            varargs += [_INT(int(err)), _INT(int(rtt))]
        res = self._cmd(
            "rd_kafka_mock_broker_push_request_error_rtts",
            broker_id,
            int(api_key),
            len(errors_and_rtts),
            *varargs,
        )
        _check(res, f"push_broker_request_error_rtts({broker_id}, {api_key})")

    def clear_request_errors(self, api_key: int) -> None:
        """Drop the not yet consumed cluster-wide errors pushed for ``api_key``."""
        self._cmd("rd_kafka_mock_clear_request_errors", int(api_key))

    # -- request tracking ---------------------------------------------------------------------------------

    def start_request_tracking(self) -> None:
        """Record every request from now on (memory grows with traffic: track short test sections only)."""
        self._cmd("rd_kafka_mock_start_request_tracking")

    def stop_request_tracking(self) -> None:
        """Stop recording. librdkafka 2.16 also discards what was recorded: read :meth:`requests` first."""
        self._cmd("rd_kafka_mock_stop_request_tracking")

    def clear_requests(self) -> None:
        self._cmd("rd_kafka_mock_clear_requests")

    def requests(self) -> list[MockRequest]:
        """The requests recorded since tracking started or was last cleared, oldest first."""
        count = _SIZE(0)
        array = self._cmd("rd_kafka_mock_get_requests", ctypes.byref(count))
        if not array:
            return []
        try:
            return [
                MockRequest(
                    int(_func("rd_kafka_mock_request_id")(array[i])),
                    int(_func("rd_kafka_mock_request_api_key")(array[i])),
                    int(_func("rd_kafka_mock_request_timestamp")(array[i])),
                )
                for i in range(count.value)
            ]
        finally:
            _func("rd_kafka_mock_request_destroy_array")(array, count.value)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def _destroy(self) -> None:
        # Cluster first: it logs through rk and must not outlive it. Its shutdown is a command to the mock
        # thread like any other, so it gets the same nudge (see _cmd).
        timer = threading.Timer(self._WAKEUP_AFTER_S, self._nudge)
        timer.daemon = True
        timer.start()
        try:
            _func("rd_kafka_mock_cluster_destroy")(self._mcluster)
        finally:
            timer.cancel()
        _func("rd_kafka_destroy")(self._rk)

    def close(self) -> None:
        """Stop the brokers (clients see connection refused). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._destroy()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._bootstrap_servers
        return f"MockKafkaCluster(brokers={self._brokers}, {state})"


# --------------------------------------------------------------------------------------------------------
# Child-process server: JSON lines on stdin/stdout

# Methods a MockKafkaClusterProcess may call in the child. Anything else is refused, so the channel cannot be
# used to call arbitrary attributes.
_REMOTE_OPS = frozenset(
    {
        "create_topic",
        "broker_down",
        "broker_up",
        "fail_over",
        "partition_leader",
        "group_coordinator",
        "push_request_errors",
        "push_broker_request_error_rtts",
        "clear_request_errors",
        "set_partition_leader",
        "set_partition_follower",
        "set_broker_rtt",
        "set_coordinator",
        "set_topic_error",
        "set_group_initial_rebalance_delay_ms",
        "set_apiversion",
        "start_request_tracking",
        "stop_request_tracking",
        "requests",
        "clear_requests",
    }
)


class _StopServing(Exception):
    """Raised from the SIGTERM handler to leave the blocking stdin read."""


def _parse_topic(spec: str) -> tuple[str, int, int | None]:
    """``NAME:PARTITIONS[:RF]`` -> (name, partitions, rf or None)."""
    parts = spec.rsplit(":", 2)
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"topic must be NAME:PARTITIONS[:RF], got {spec!r}")
    if len(parts) == 3 and not parts[1].isdigit():  # a ':' inside NAME, no RF given
        parts = [f"{parts[0]}:{parts[1]}", parts[2]]
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"topic must be NAME:PARTITIONS[:RF], got {spec!r}") from None
    return parts[0], numbers[0], numbers[1] if len(numbers) > 1 else None


def _dispatch(cluster: MockKafkaCluster, request: dict[str, Any]) -> dict[str, Any]:
    op = request.pop("op", None)
    if op == "ping":
        return {"ok": True}
    if op not in _REMOTE_OPS:
        return {"ok": False, "error": f"unknown op {op!r}"}
    if op == "push_broker_request_error_rtts":
        request["errors_and_rtts"] = [tuple(pair) for pair in request.get("errors_and_rtts", [])]
    try:
        result = getattr(cluster, op)(**request)
    except (MockKafkaClusterError, ValueError, TypeError, ctypes.ArgumentError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True} if result is None else {"ok": True, "result": result}


def _reply_to(cluster: MockKafkaCluster, line: str) -> dict[str, Any] | None:
    """The answer to one command line, or None for ``{"op": "close"}``."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"ok": False, "error": f"bad command: {exc}"}
    if not isinstance(request, dict):
        return {"ok": False, "error": "bad command: not a JSON object"}
    if request.get("op") == "close":
        return None
    return _dispatch(cluster, request)


def _serve(cluster: MockKafkaCluster, stdin: IO[str], stdout: IO[str]) -> None:
    for line in stdin:
        if not line.strip():
            continue
        reply = _reply_to(cluster, line)
        stdout.write(json.dumps({"ok": True} if reply is None else reply) + "\n")
        stdout.flush()
        if reply is None:
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Run a mock cluster until stdin reaches EOF, a ``{"op": "close"}`` command, SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m aml_screener.devstack.mock_kafka",
        description="Run a librdkafka mock Kafka cluster; JSON-line commands on stdin, replies on stdout.",
    )
    parser.add_argument("--brokers", type=int, default=1, help="broker count; broker ids are 1..N")
    parser.add_argument("--topic", action="append", default=[], type=_parse_topic, metavar="NAME:PARTITIONS[:RF]")
    parser.add_argument("--rebalance-delay-ms", type=int, default=0, help="group.initial.rebalance.delay.ms")
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process dies (Linux PR_SET_PDEATHSIG)"
    )
    args = parser.parse_args(argv)

    if args.parent_pid is not None:
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != args.parent_pid:  # the parent died before prctl took effect
            return 1

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        raise _StopServing

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        with MockKafkaCluster(args.brokers, group_initial_rebalance_delay_ms=args.rebalance_delay_ms) as cl:
            try:
                for name, partitions, rf in args.topic:
                    cl.create_topic(name, partitions, rf)
                hello = {
                    "bootstrap_servers": cl.bootstrap_servers,
                    "brokers": args.brokers,
                    "pid": os.getpid(),
                }
                sys.stdout.write(json.dumps(hello) + "\n")
                sys.stdout.flush()
                _serve(cl, sys.stdin, sys.stdout)
            finally:
                # A second signal while the brokers shut down must not abort the clean-up half-way.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
    except _StopServing:
        pass
    except BrokenPipeError:  # the parent went away between two replies
        pass
    except MockKafkaClusterError as exc:
        sys.stderr.write(f"mock_kafka: {exc}\n")
        return 2
    return 0


# --------------------------------------------------------------------------------------------------------
# Parent-side proxy


def _package_root() -> str:
    """The directory that holds the ``aml_screener`` package, for the child's PYTHONPATH."""
    return str(Path(__file__).resolve().parents[2])


class MockKafkaClusterProcess:
    """A :class:`MockKafkaCluster` in a child Python process, controlled over its stdin/stdout.

    Same methods as :class:`MockKafkaCluster`, each one JSON-line round trip. The child exits when
    :meth:`close` is called, when this process exits or is killed (stdin EOF, and PR_SET_PDEATHSIG on
    Linux), or on SIGTERM.

    PR_SET_PDEATHSIG fires when the *thread* that started the child exits, so create this object on a thread
    that lives as long as the cluster should (normally the main thread).
    """

    # Python start-up plus cluster creation takes ~0.2 s here; 30 s only matters on a badly overloaded host.
    START_TIMEOUT_S = 30.0
    # Every command is a few microseconds of work in the child; 10 s means the child is wedged.
    CALL_TIMEOUT_S = 10.0
    # Closing the cluster joins its broker threads (~10 ms); after 5 s the child is killed.
    CLOSE_TIMEOUT_S = 5.0

    def __init__(
        self,
        brokers: int = 1,
        *,
        topics: Sequence[tuple[str, int, int | None]] = (),
        group_initial_rebalance_delay_ms: int = 0,
        python: str | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, got {brokers}")
        self._brokers = brokers
        self._lock = threading.Lock()
        self._closed = False
        self._buffer = bytearray()
        argv = [
            python or sys.executable,
            "-m",
            "aml_screener.devstack.mock_kafka",
            "--brokers",
            str(brokers),
            "--rebalance-delay-ms",
            str(group_initial_rebalance_delay_ms),
            "--parent-pid",
            str(os.getpid()),
        ]
        for name, partitions, rf in topics:
            argv += ["--topic", f"{name}:{partitions}" + ("" if rf is None else f":{rf}")]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # inherit: librdkafka warnings and tracebacks stay visible
            env=env,
            bufsize=0,
            close_fds=True,
            # Own session: Ctrl-C in a terminal signals the whole foreground process group, and the broker
            # must outlive the parent's graceful drain (flush, commit) that follows a Ctrl-C.
            start_new_session=True,
        )
        try:
            hello = self._read_json(self.START_TIMEOUT_S, "start-up")
            self._bootstrap_servers = str(hello["bootstrap_servers"])
        except BaseException:
            self._terminate()
            raise

    # -- plumbing -----------------------------------------------------------------------------------------

    def _read_json(self, timeout: float, what: str) -> dict[str, Any]:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MockKafkaClusterError(f"mock cluster child (pid {self._proc.pid}) {what} timed out")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)  # replies are < 1 kB except requests(); read what is there
            if not chunk:
                code = self._proc.wait(timeout=self.CLOSE_TIMEOUT_S)
                raise MockKafkaClusterError(
                    f"mock cluster child (pid {self._proc.pid}) exited with {code} during {what}"
                )
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise MockKafkaClusterError(f"mock cluster child sent {line!r}")
        return reply

    def _call(self, op: str, **params: Any) -> Any:
        with self._lock:
            if self._closed:
                raise MockKafkaClusterError("mock cluster process is closed")
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps({"op": op, **params}) + "\n").encode())
            except BrokenPipeError:
                raise MockKafkaClusterError(
                    f"mock cluster child (pid {self._proc.pid}) is gone (exit code {self._proc.poll()})"
                ) from None
            reply = self._read_json(self.CALL_TIMEOUT_S, op)
        if not reply.get("ok"):
            raise MockKafkaClusterError(f"{op} failed in mock cluster child: {reply.get('error')}")
        return reply.get("result")

    # -- properties ---------------------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap_servers

    @property
    def broker_count(self) -> int:
        return self._brokers

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def closed(self) -> bool:
        return self._closed

    # -- proxied methods (see MockKafkaCluster for their meaning) -------------------------------------------

    def ping(self) -> None:
        self._call("ping")

    def create_topic(self, name: str, partitions: int, replication_factor: int | None = None) -> None:
        self._call("create_topic", name=name, partitions=partitions, replication_factor=replication_factor)

    def broker_down(self, broker_id: int) -> None:
        self._call("broker_down", broker_id=broker_id)

    def broker_up(self, broker_id: int) -> None:
        self._call("broker_up", broker_id=broker_id)

    def fail_over(self, broker_id: int, groups: Sequence[str] = ()) -> None:
        self._call("fail_over", broker_id=broker_id, groups=list(groups))

    def partition_leader(self, topic: str, partition: int) -> int:
        return int(self._call("partition_leader", topic=topic, partition=partition))

    def group_coordinator(self, group: str) -> int:
        return int(self._call("group_coordinator", group=group))

    def set_broker_rtt(self, broker_id: int, ms: int) -> None:
        self._call("set_broker_rtt", broker_id=broker_id, ms=ms)

    def push_request_errors(self, api_key: int, errors: Sequence[int]) -> None:
        self._call("push_request_errors", api_key=int(api_key), errors=[int(e) for e in errors])

    def push_broker_request_error_rtts(
        self, broker_id: int, api_key: int, errors_and_rtts: Sequence[tuple[int, int]]
    ) -> None:
        pairs = [[int(e), int(r)] for e, r in errors_and_rtts]
        self._call("push_broker_request_error_rtts", broker_id=broker_id, api_key=int(api_key), errors_and_rtts=pairs)

    def clear_request_errors(self, api_key: int) -> None:
        self._call("clear_request_errors", api_key=int(api_key))

    def set_partition_leader(self, topic: str, partition: int, broker_id: int) -> None:
        self._call("set_partition_leader", topic=topic, partition=partition, broker_id=broker_id)

    def set_partition_follower(self, topic: str, partition: int, broker_id: int) -> None:
        self._call("set_partition_follower", topic=topic, partition=partition, broker_id=broker_id)

    def set_coordinator(self, key_type: str, key: str, broker_id: int) -> None:
        self._call("set_coordinator", key_type=key_type, key=key, broker_id=broker_id)

    def set_topic_error(self, topic: str, error: int) -> None:
        self._call("set_topic_error", topic=topic, error=int(error))

    def set_group_initial_rebalance_delay_ms(self, ms: int) -> None:
        self._call("set_group_initial_rebalance_delay_ms", ms=ms)

    def set_apiversion(self, api_key: int, min_version: int, max_version: int) -> None:
        self._call("set_apiversion", api_key=int(api_key), min_version=min_version, max_version=max_version)

    def start_request_tracking(self) -> None:
        self._call("start_request_tracking")

    def stop_request_tracking(self) -> None:
        self._call("stop_request_tracking")

    def clear_requests(self) -> None:
        self._call("clear_requests")

    def requests(self) -> list[MockRequest]:
        return [MockRequest(int(b), int(k), int(t)) for b, k, t in self._call("requests")]

    # -- lifecycle ----------------------------------------------------------------------------------------

    def _terminate(self) -> None:
        proc = self._proc
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # EOF: the child closes its cluster and exits 0
        try:
            proc.wait(timeout=self.CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=self.CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        """Stop the child (EOF on its stdin, then SIGTERM, then SIGKILL) and reap it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._terminate()

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MockKafkaClusterProcess(brokers={self._brokers}, pid={self._proc.pid})"


if __name__ == "__main__":
    sys.exit(main())
