"""`make bench`: throughput and latency of the screener on real Apache Kafka and on librdkafka's mock, at least
once and exactly once, side by side in one run; watchlist scale and related-address cost.

Part A (throughput), per broker: one prefilled input topic (default 100,000 events, 4 partitions) is read, in
alternating rounds, each in its own process with a new consumer group, by
  (a) a bare kafka-python consumer with the screener's consumer settings that does nothing per record;
  (p) a pass-through: the same consumer, one output per input (the input record) through the screener's own sink,
      acknowledged and committed (at-least-once), or in a transaction with the offsets (exactly-once): the limit of
      any consume-produce service on this machine;
  (s) the screener (same wiring as `aml-screener run`).
On real Kafka (p) and (s) run at-least-once and exactly-once; the mock runs (a) and (s) at-least-once (its
transactions are not faithful). Reported: events/s per round, medians, ratios of medians. After the timed rounds
one profiled screener round per guarantee says where the time per event goes (bench/profile.py).

Part B (latency): fresh topics; the screener runs while a producer process sends a steady 5,000 events/s for
60 s and an observer process reads the decisions (read_committed for exactly-once). Per broker and guarantee,
p50/p95/p99 of
  - decided:  input record timestamp -> decision made (the decision's own decided_at);
  - visible:  input record timestamp -> decision readable by a downstream consumer (includes its fetch; for
              exactly-once, the transaction's commit);
  - acked:    input record timestamp -> decision durable (screener histogram, bucket-interpolated).
Target: p99 <= 35 ms.

Parts C (watchlist scale), D (related-address cost) and E (a mixed stream of withdrawals and deposits vs
withdrawals only, end to end and in pipeline CPU time; bench/mixed_cost.py) run on the mock broker: what they
compare does not depend on the broker. The real cluster (3 nodes, KRaft, RF 3, min.insync.replicas 2:
devstack/kafka_cluster.py) is started once for parts A and B; the mock runs in a process of its own; Redis is a real
redis-server. Results are written to bench/results/<UTC timestamp>.json and printed as a table.
Part F (bench/api.py): the pre-screen API under wrk, the stream beside it. Part G (bench/lookback.py): sync -> last
retroactive match over 10,000,000 history rows in a real PostgreSQL, with a real single-node Kafka.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import kafka
import redis
from confluent_kafka import Producer

from aml_screener.demo.sample import load_sample, sample_listings
from aml_screener.devstack.generator import EventGenerator
from aml_screener.devstack.kafka_cluster import KafkaCluster
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.process import child_process_kwargs
from aml_screener.devstack.screener_process import screener_env, start_screener, wait_until_consuming
from aml_screener.devstack.stack import EmbeddedStack
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.schemas import DEPOSIT_RECEIVED, WITHDRAWAL_REQUESTED, SchemaCatalog
from aml_screener.screening.records import Direction
from aml_screener.watchlist.store import WatchlistStore
from bench import api as bench_api
from bench import lookback, mixed_cost, related_cost
from bench.stats import histogram_quantiles
from bench.workers import deposit_topic_names, topic_names

RESULTS = Path(__file__).resolve().parent / "results"
AT_LEAST_ONCE, EXACTLY_ONCE = "at_least_once", "exactly_once"


def worker(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.workers", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
        **child_process_kwargs(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "kafka_python": kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "load_average_at_start": os.getloadavg(),
    }


def prefill(
    stack: EmbeddedStack,
    count: int,
    seed: int,
    topic: str,
    *,
    deposit_topic: str | None = None,
    deposit_share: float = 0.0,
) -> dict[str, int]:
    """`count` generated events on the input topics (withdrawals on `topic`, and deposits on `deposit_topic` when
    `deposit_share` > 0); the mix of expected outcomes, and how many addresses they carry (a deposit has one per
    distinct source)."""
    catalog = SchemaCatalog()
    withdrawal, deposit = catalog.current(WITHDRAWAL_REQUESTED), catalog.current(DEPOSIT_RECEIVED)
    generator = EventGenerator(
        sample_listings(),
        EventEncoder(withdrawal.schema, withdrawal.schema_id),
        seed=seed,
        clean_pool=50_000,
        deposit_share=deposit_share,
        deposit_encoder=EventEncoder(deposit.schema, deposit.schema_id),
    )
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 20, "log.connection.close": False})
    topics = {Direction.WITHDRAWAL: topic, Direction.DEPOSIT: deposit_topic or topic}
    expected: dict[str, int] = {}
    size = 0
    for event in generator.stream(count):
        expected[event.expected.value] = expected.get(event.expected.value, 0) + 1
        expected[event.direction.value] = expected.get(event.direction.value, 0) + 1
        addresses = len(dict.fromkeys(event.sources)) if event.direction is Direction.DEPOSIT else 1
        expected["addresses"] = expected.get("addresses", 0) + addresses
        size += len(event.value)
        while True:
            try:
                producer.produce(topics[event.direction], event.value, event.key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("prefill not delivered")
    expected["mean_value_bytes"] = size // count
    return expected


@dataclass
class Broker:
    """Where a part runs: the real cluster (started once per run) or a mock of its own per stack."""

    cluster: KafkaCluster | None = None

    @property
    def label(self) -> str:
        if self.cluster is None:
            return "librdkafka mock"
        return f"Kafka {self.cluster.version} x{self.cluster.broker_count}"

    @property
    def key(self) -> str:
        return "mock" if self.cluster is None else "kafka"


@dataclass
class BenchStack:
    """A stack with the bundled watchlist loaded, its topic names, and the environment its workers need."""

    stack: EmbeddedStack
    topics: tuple[str, ...]  # input, decisions, flagged, dead letters
    deposit_topics: tuple[str, ...]  # deposit input, flagged, dead letters
    env: dict[str, str]

    def screener_topics_env(self) -> dict[str, str]:
        names = ("INPUT", "DECISIONS", "FLAGGED", "DEAD_LETTER", "DEPOSIT", "DEPOSIT_FLAGGED", "DEPOSIT_DEAD_LETTER")
        topics = (*self.topics, *self.deposit_topics)
        return {f"AML_KAFKA_{name}_TOPIC": topic for name, topic in zip(names, topics, strict=True)}


@contextlib.contextmanager
def _stack_with_watchlist(broker: Broker | None = None) -> Iterator[BenchStack]:
    """Fresh topics (4 input partitions for withdrawals and for deposits) and a fresh redis-server with the bundled
    watchlist: on the shared real cluster (topics of their own), or on a mock broker in its own process."""
    broker = broker or Broker()
    suffix = "" if broker.cluster is None else f".{uuid.uuid4().hex[:8]}"
    topics, deposit_topics = topic_names(suffix), deposit_topic_names(suffix)
    partitions = dict(zip((*topics, *deposit_topics), (4, 4, 1, 1, 4, 1, 1), strict=True))
    env = {"AML_BENCH_BROKER": broker.key, "AML_BENCH_TOPIC_SUFFIX": suffix}
    if broker.cluster is None:
        context = EmbeddedStack(brokers=1, topics=partitions, broker_in_subprocess=True)
    else:
        context = EmbeddedStack(kafka_cluster=broker.cluster, topics=partitions)
    with context as stack:
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        load_sample(WatchlistStore(client))
        try:
            yield BenchStack(stack, topics, deposit_topics, env)
        finally:
            if broker.cluster is not None:
                with contextlib.suppress(Exception):  # the cluster goes at the end of the run anyway
                    broker.cluster.admin().delete_topics(list(partitions), operation_timeout=0)


# Part A's variants per broker: (label, worker, AML_PROCESSING_GUARANTEE or None). The mock's transactions are not
# faithful (devstack/mock_kafka.py), so exactly-once runs on real Kafka only.
_VARIANTS = {
    "mock": [("bare", "bare", None), ("screener", "screener", AT_LEAST_ONCE)],
    "kafka": [
        ("bare", "bare", None),
        ("passthrough at-least-once", "passthrough", AT_LEAST_ONCE),
        ("screener at-least-once", "screener", AT_LEAST_ONCE),
        ("passthrough exactly-once", "passthrough", EXACTLY_ONCE),
        ("screener exactly-once", "screener", EXACTLY_ONCE),
    ],
}


def part_a(broker: Broker, events: int, rounds: int, seed: int) -> dict[str, Any]:
    """Throughput of every variant on one prefilled topic, in alternating rounds; then one profiled screener round
    per guarantee."""
    variants = _VARIANTS[broker.key]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in variants}
    with _stack_with_watchlist(broker) as bench:
        stack = bench.stack
        mix = prefill(stack, events, seed, bench.topics[0])
        print(f"  prefilled {events} events on {broker.label} ({mix})", flush=True)
        for index in range(rounds):
            for label, kind, guarantee in variants:
                env = dict(bench.env)
                if guarantee is not None:
                    env["AML_PROCESSING_GUARANTEE"] = guarantee
                group = f"{label.replace(' ', '-')}-{index}"
                if kind == "bare":
                    args = [stack.bootstrap_servers, bench.topics[0], str(events), group]
                elif kind == "passthrough":
                    args = [stack.bootstrap_servers, str(events), group]
                else:
                    args = [stack.bootstrap_servers, stack.redis_url, str(events), group]
                runs[label].append(worker(kind, *args, env=env))
            print(
                f"  round {index + 1}: "
                + "  ".join(f"{label} {runs[label][-1]['per_second']:,.0f}/s" for label, _, _ in variants),
                flush=True,
            )
        profiles: dict[str, Any] = {}
        for label, kind, guarantee in variants:
            if kind != "screener":
                continue
            env = {**bench.env, "AML_PROCESSING_GUARANTEE": str(guarantee), "AML_BENCH_PROFILE": "1"}
            args = [stack.bootstrap_servers, stack.redis_url, str(events), f"profile-{label.replace(' ', '-')}"]
            result = worker(kind, *args, env=env)
            profiles[label] = result["profile"] | {"per_second": result["per_second"]}
            print(f"  profiled {label}: {result['per_second']:,.0f}/s", flush=True)
    medians = {label: statistics.median(r["per_second"] for r in results) for label, results in runs.items()}
    screeners = [label for label, kind, _ in variants if kind == "screener"]
    per_event_us = {
        label: {
            stage: statistics.median(r["stage_seconds"].get(stage, 0.0) for r in runs[label]) / events * 1e6
            for stage in runs[label][0]["stage_seconds"]
        }
        for label in screeners
    }
    return {
        "broker": broker.label,
        "events": events,
        "rounds": rounds,
        "input_mix": mix,
        "per_second": {label: [r["per_second"] for r in results] for label, results in runs.items()},
        "median": medians,
        "ratios": _ratios(medians),
        "screener_stage_us_per_event": per_event_us,
        "profile": profiles,
        "load_average_at_end": os.getloadavg(),  # other work on this shared machine shows here
    }


def _ratios(medians: dict[str, float]) -> dict[str, float]:
    """The comparisons that matter, of medians measured side by side."""
    wanted = {
        "screener / bare": ("screener", "bare"),
        "screener at-least-once / bare": ("screener at-least-once", "bare"),
        "screener at-least-once / passthrough at-least-once": ("screener at-least-once", "passthrough at-least-once"),
        "screener exactly-once / passthrough exactly-once": ("screener exactly-once", "passthrough exactly-once"),
        "screener exactly-once / screener at-least-once": ("screener exactly-once", "screener at-least-once"),
        "passthrough exactly-once / passthrough at-least-once": (
            "passthrough exactly-once",
            "passthrough at-least-once",
        ),
        "passthrough at-least-once / bare": ("passthrough at-least-once", "bare"),
    }
    return {name: medians[a] / medians[b] for name, (a, b) in wanted.items() if a in medians and b in medians}


def _quantiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return {"p50": cuts[499], "p95": cuts[949], "p99": cuts[989], "max": max(values), "count": len(values)}


def part_b(broker: Broker, guarantee: str, rate: int, seconds: int, seed: int) -> dict[str, Any]:
    with _stack_with_watchlist(broker) as bench:
        stack = bench.stack
        port = free_port()
        env = screener_env(
            stack.bootstrap_servers,
            stack.redis_url,
            port,
            mock_broker=broker.cluster is None,
            extra={"AML_LOG_LEVEL": "INFO", "AML_PROCESSING_GUARANTEE": guarantee, **bench.screener_topics_env()},
        )
        RESULTS.mkdir(exist_ok=True)
        log_path = RESULTS / f"latency-screener-{broker.key}-{guarantee}.log"
        with log_path.open("wb") as log:
            screener = start_screener(env, log)
        try:
            wait_until_consuming(port, screener, 60)
            observer = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.workers",
                    "observe",
                    stack.bootstrap_servers,
                    bench.topics[1],
                    "4",
                    str(seconds + 10),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, **bench.env, "AML_PROCESSING_GUARANTEE": guarantee},
                **child_process_kwargs(),
            )
            load = worker("produce", stack.bootstrap_servers, bench.topics[0], str(rate), str(seconds), str(seed))
            seen = json.loads((observer.communicate(timeout=seconds + 60)[0]).strip().splitlines()[-1])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                metrics_text = response.read().decode()
        finally:
            screener.terminate()
            screener.wait(30)
    return {
        "broker": broker.label,
        "guarantee": guarantee,
        "rate_target": rate,
        "seconds": seconds,
        "produced": load,
        "decided_ms": _quantiles(seen["decided_ms"]),
        "visible_ms": _quantiles(seen["visible_ms"]),
        "acked_ms_histogram": histogram_quantiles(metrics_text, "aml_screener_end_to_end_latency_seconds"),
        "worst_visible_ms_per_second": seen["worst_visible_ms_per_second"],
        "screener_log": str(log_path),
        "load_average_at_end": os.getloadavg(),
    }


OFAC_XML = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "watchlists"
    / ("ofac_sdn_advanced_xml_2024-09-26/sdn_advanced.xml.bz2")
)


def _redis_used_memory(url: str) -> int:
    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


def part_c(watchlist_size: int, events: int, rounds: int, seed: int, work: Path) -> dict[str, Any]:
    """Watchlist scale: full OFAC XML sync; a synthetic N-address list's sync time, Redis memory, and screener
    throughput with it vs a 1,000-address list, alternating rounds on the same prefilled topic."""
    out: dict[str, Any] = {}
    with _stack_with_watchlist() as bench:
        stack = bench.stack
        if OFAC_XML.is_file():
            config = work / "ofac.toml"
            config.write_text(f'[[source]]\nname = "ofac-sdn"\nformat = "ofac-xml"\nlocation = "{OFAC_XML}"\n')
            out["ofac_xml_sync"] = worker("sync", stack.redis_url, "ofac:{wl}", str(config))
            print(f"  OFAC Advanced XML sync: {out['ofac_xml_sync']}", flush=True)
        lists = {}
        for name, size in (("small", 1_000), ("big", watchlist_size)):
            path = work / f"synthetic-{name}_ETH.txt"
            worker("synthetic_list", str(path), str(size), str(seed))
            config = work / f"{name}.toml"
            config.write_text(
                f'[[source]]\nname = "synthetic"\nformat = "address-list"\nlocation = "{path}"\n'
                f'category = "theft"\nasset = "ETH"\n'
            )
            before = _redis_used_memory(stack.redis_url)
            lists[name] = worker("sync", stack.redis_url, f"{name}:{{wl}}", str(config), timeout=3600)
            lists[name]["redis_used_memory_mb"] = (_redis_used_memory(stack.redis_url) - before) / 2**20
            path.unlink()
            print(f"  synthetic {size:,}-address list: {lists[name]}", flush=True)
        out["synthetic_lists"] = lists
        prefill(stack, events, seed, bench.topics[0])
        rates: dict[str, list[float]] = {"small": [], "big": []}
        for index in range(rounds):
            for name in ("small", "big"):
                result = worker(
                    "screener",
                    stack.bootstrap_servers,
                    stack.redis_url,
                    str(events),
                    f"{name}-{index}",
                    f"{name}:{{wl}}",
                )
                rates[name].append(result["per_second"])
            small, big = rates["small"][-1], rates["big"][-1]
            print(f"  round {index + 1}: 1k list {small:,.0f}/s  {watchlist_size:,} list {big:,.0f}/s", flush=True)
        out["screener_per_second"] = rates
        out["throughput_ratio_big_vs_small"] = statistics.median(rates["big"]) / statistics.median(rates["small"])
    return out


def part_d(events: int, rounds: int, seed: int, sync_size: int, work: Path) -> dict[str, Any]:
    """Related-address matching, relations on vs off side by side (bench/related_cost.py)."""
    out: dict[str, Any] = {"pipeline_cpu": related_cost.pipeline_cpu(50_000, 5, seed)}
    print("  " + related_cost.summary_lines(out)[0] + "\n  " + related_cost.summary_lines(out)[1], flush=True)
    with _stack_with_watchlist() as bench:
        stack = bench.stack
        prefill(stack, events, seed, bench.topics[0])
        rates: dict[str, list[float]] = {"on": [], "off": []}
        for index in range(rounds):
            for mode in ("off", "on"):
                result = worker(
                    "screener",
                    stack.bootstrap_servers,
                    stack.redis_url,
                    str(events),
                    f"related-{mode}-{index}",
                    env={related_cost.AML_BENCH_RELATIONS: mode},
                )
                rates[mode].append(result["per_second"])
            print(f"  round {index + 1}: relations off {rates['off'][-1]:,.0f}/s on {rates['on'][-1]:,.0f}/s")
        out["screener"] = {**rates, "ratio_on_off": statistics.median(rates["on"]) / statistics.median(rates["off"])}
        path = work / "synthetic_XBT.txt"
        worker("synthetic_list", str(path), str(sync_size), str(seed), "xbt")
        config = work / "xbt.toml"
        config.write_text(
            f'[[source]]\nname = "synthetic"\nformat = "address-list"\nlocation = "{path}"\ncategory = "theft"\n'
        )
        syncs: dict[str, dict[str, Any]] = {}
        for mode in ("off", "on"):
            before = _redis_used_memory(stack.redis_url)
            syncs[mode] = worker(
                "sync", stack.redis_url, f"xbt-{mode}:{{wl}}", str(config), env={related_cost.AML_BENCH_RELATIONS: mode}
            )
            syncs[mode]["redis_used_memory_mb"] = (_redis_used_memory(stack.redis_url) - before) / 2**20
        out["sync"] = {"addresses": sync_size, **syncs}
        if OFAC_XML.is_file():
            ofac = work / "ofac.toml"
            ofac.write_text(f'[[source]]\nname = "ofac-sdn"\nformat = "ofac-xml"\nlocation = "{OFAC_XML}"\n')
            ofac_seconds: dict[str, list[float]] = {"on": [], "off": []}
            for index in range(rounds):
                for mode in ("off", "on"):
                    result = worker(
                        "sync",
                        stack.redis_url,
                        f"ofac-{mode}-{index}:{{wl}}",
                        str(ofac),
                        env={related_cost.AML_BENCH_RELATIONS: mode},
                    )
                    ofac_seconds[mode].append(result["seconds"])
            out["ofac_xml_sync_seconds"] = ofac_seconds
    for line in related_cost.summary_lines(out)[2:]:
        print("  " + line, flush=True)
    return out


def part_e(events: int, rounds: int, seed: int, deposit_share: float) -> dict[str, Any]:
    """A mixed stream (withdrawals and deposits, every deposit source screened) vs withdrawals only: two prefilled
    input sets (on the mock: what is compared is the screener's own work), read by the screener in alternating
    rounds; before that, the batch pipeline's CPU time
    per event on the same two kinds of stream (bench/mixed_cost.py)."""
    cpu = mixed_cost.pipeline_cpu(50_000, 5, seed, deposit_share)
    print(
        "  pipeline CPU per event, median of 5: withdrawals {:.1f} us, mixed {:.1f} us ({:.1f} us per address)".format(
            cpu["withdrawals"]["median_us_per_event"],
            cpu["mixed"]["median_us_per_event"],
            cpu["mixed"]["median_us_per_address"],
        ),
        flush=True,
    )
    # Two stacks (each a mock broker of its own and a redis-server), both kept up so the rounds alternate.
    with _stack_with_watchlist() as plain, _stack_with_watchlist() as mixed:
        sets = {
            "withdrawals": (plain, prefill(plain.stack, events, seed, plain.topics[0])),
            "mixed": (
                mixed,
                prefill(
                    mixed.stack,
                    events,
                    seed,
                    mixed.topics[0],
                    deposit_topic=mixed.deposit_topics[0],
                    deposit_share=deposit_share,
                ),
            ),
        }
        for name, (_, mix) in sets.items():
            print(f"  prefilled {name}: {mix}", flush=True)
        rates: dict[str, list[float]] = {name: [] for name in sets}
        for index in range(rounds):
            for name, (bench, _) in sets.items():
                stack = bench.stack
                args = [stack.bootstrap_servers, stack.redis_url, str(events), f"{name}-{index}"]
                rates[name].append(worker("screener", *args, env=bench.env)["per_second"])
            print(
                f"  round {index + 1}: withdrawals {rates['withdrawals'][-1]:,.0f}/s  mixed {rates['mixed'][-1]:,.0f}/s"
            )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    addresses = {name: mix["addresses"] for name, (_, mix) in sets.items()}
    return {
        "pipeline_cpu": cpu,
        "events": events,
        "deposit_share": deposit_share,
        "input_mix": {name: mix for name, (_, mix) in sets.items()},
        "events_per_second": rates,
        "median_events_per_second": medians,
        "ratio_mixed_vs_withdrawals": medians["mixed"] / medians["withdrawals"],
        "median_addresses_per_second": {name: medians[name] * addresses[name] / events for name in sets},
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--watchlist-size", type=int, default=10_000_000)
    parser.add_argument("--skip-watchlist-scale", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-related", action="store_true")
    parser.add_argument("--related-sync-size", type=int, default=500_000)
    parser.add_argument("--brokers", type=int, default=3, help="nodes of the real Kafka cluster (parts A and B)")
    parser.add_argument("--skip-kafka", action="store_true", help="parts A and B on the mock only")
    parser.add_argument("--skip-mock", action="store_true", help="parts A and B on real Kafka only")
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--deposit-share", type=float, default=0.3, help="part E: share of deposits in the mix")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--api-only", action="store_true", help="only part F, the pre-screen API")
    parser.add_argument("--api-seconds", type=int, default=20, help="length of each wrk run of part F")
    parser.add_argument("--api-stream-rate", type=int, default=2_000, help="withdrawals/s the stream screens meanwhile")
    parser.add_argument("--skip-lookback", action="store_true")
    parser.add_argument("--lookback-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    if args.api_only:  # every other part off, whatever parts there are
        for name in vars(args):
            if name.startswith("skip_") and name != "skip_api":
                setattr(args, name, True)
    return args


def main() -> int:
    args = _arguments()
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    with contextlib.ExitStack() as running:
        brokers: list[Broker] = [] if args.skip_mock else [Broker()]
        needs_cluster = not (args.skip_throughput and args.skip_latency)
        if not args.skip_kafka and needs_cluster:
            cluster = running.enter_context(KafkaCluster(args.brokers))
            brokers.append(Broker(cluster))
            report["machine"]["kafka"] = (
                f"Apache Kafka {cluster.version}, {args.brokers} nodes (KRaft), RF 3, min.insync 2"
            )
        if not args.skip_throughput:
            report["throughput"] = {}
            for broker in brokers:
                print(f"part A: throughput on {broker.label}, same prefilled topic, every variant", flush=True)
                report["throughput"][broker.key] = part_a(broker, args.events, args.rounds, args.seed)
        if not args.skip_latency:
            report["latency"], report["latency_runs"] = latency(brokers, args)
    if not args.skip_watchlist_scale:
        print(f"part C: watchlist scale (OFAC XML; synthetic {args.watchlist_size:,} addresses)", flush=True)
        with tempfile.TemporaryDirectory(prefix="aml-bench-") as work:
            report["watchlist_scale"] = part_c(args.watchlist_size, args.events, args.rounds, args.seed, Path(work))
    if not args.skip_related:
        print("part D: related-address matching, relations on vs off", flush=True)
        with tempfile.TemporaryDirectory(prefix="aml-bench-") as work:
            report["related"] = part_d(args.events, args.rounds, args.seed, args.related_sync_size, Path(work))
    if not args.skip_mixed:
        print(f"part E: a mixed stream ({args.deposit_share:.0%} deposits) vs withdrawals only", flush=True)
        report["mixed"] = part_e(args.events, args.rounds, args.seed, args.deposit_share)
    if not args.skip_api:
        report["api"] = _part_f(args)
    if not args.skip_lookback:
        print(f"part G: lookback, sync -> last retroactive match over {args.lookback_rows:,} history rows", flush=True)
        with tempfile.TemporaryDirectory(prefix="aml-bench-") as work:
            report["lookback"] = lookback.run(args.lookback_rows, 1_000_000, args.seed, Path(work))
        for line in lookback.summary_lines(report["lookback"]):
            print("  " + line, flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{report['started'].replace(':', '').replace('-', '')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nresults: {path}")
    return 0


def latency(brokers: list[Broker], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part B for every broker and guarantee: medians of `--latency-runs` runs each, and the runs."""
    medians: dict[str, Any] = {}
    all_runs: dict[str, Any] = {}
    for broker in brokers:
        guarantees = [AT_LEAST_ONCE] if broker.cluster is None else [AT_LEAST_ONCE, EXACTLY_ONCE]
        for guarantee in guarantees:
            key = f"{broker.key}/{guarantee}"
            runs = []
            for index in range(args.latency_runs):
                print(
                    f"part B: latency on {broker.label}, {guarantee}, a steady {args.rate}/s for {args.seconds}s "
                    f"(run {index + 1})",
                    flush=True,
                )
                runs.append(part_b(broker, guarantee, args.rate, args.seconds, args.seed + index))
                print("  " + _latency_line(runs[-1]), flush=True)
            all_runs[key] = runs
            medians[key] = {
                kind: {q: statistics.median(run[kind][q] for run in runs) for q in ("p50", "p95", "p99")}
                for kind in ("decided_ms", "visible_ms", "acked_ms_histogram")
            } | {"produced": runs[0]["produced"], "seconds": args.seconds, "runs": len(runs)}
    return medians, all_runs


def _part_f(args: argparse.Namespace) -> dict[str, Any]:
    print("part F: the pre-screen API under wrk, the stream running beside it", flush=True)
    with _stack_with_watchlist() as bench:
        report = bench_api.part_e(bench.stack, args.api_seconds, args.api_stream_rate, args.seed)
    print("\n| API run | throughput | p50 | p99 | p99.9 | errors | API CPU per request | load average |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(bench_api.lines(report)))
    return report


def _latency_line(run: dict[str, Any]) -> str:
    return "  ".join(
        f"{label} p50/p95/p99 {run[key]['p50']:.1f}/{run[key]['p95']:.1f}/{run[key]['p99']:.1f} ms"
        for key, label in (("decided_ms", "decided"), ("visible_ms", "visible"), ("acked_ms_histogram", "acked"))
    )


def print_table(report: dict[str, Any]) -> None:
    print("\n| measurement | value |\n|---|---|")
    for a in report.get("throughput", {}).values():
        for label, median in a["median"].items():
            rounds = " / ".join(f"{rate:,.0f}" for rate in a["per_second"][label])
            print(f"| {a['broker']}: {label}, median of {a['rounds']} ({rounds}) | {median:,.0f} events/s |")
        for name, ratio in a["ratios"].items():
            print(f"| {a['broker']}: ratio {name} | {ratio:.2f} |")
        for label, stages in a["screener_stage_us_per_event"].items():
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if k not in ("produce", "commit"))
            print(f"| {a['broker']}: {label}, pipeline stages per event, us | {cpu} |")
        for label, profile in a["profile"].items():
            threads = ", ".join(f"{k} {v:.1f}" for k, v in profile["cpu_us_per_event_by_thread"].items())
            print(
                f"| {a['broker']}: {label} (profiled), CPU per event by thread, us | "
                f"{profile['cpu_us_per_event_total']:.1f} in all: {threads} |"
            )
            stages = ", ".join(f"{k} {v:.1f}" for k, v in profile["main_thread_wall_us_per_event_by_stage"].items())
            print(f"| {a['broker']}: {label} (profiled), loop thread wall time per event, us | {stages} |")
    for key, b in report.get("latency", {}).items():
        kinds = (("decided_ms", "decided"), ("visible_ms", "visible downstream"), ("acked_ms_histogram", "acked"))
        for kind, label in kinds:
            q = b[kind]
            if q:
                p50, p95, p99 = (q.get(name, 0.0) for name in ("p50", "p95", "p99"))
                row = f"{key}: latency {label}, median of {b['runs']} runs: p50 / p95 / p99"
                print(f"| {row} | {p50:.1f} / {p95:.1f} / {p99:.1f} ms |")
        print(f"| {key}: offered load | {b['produced']['per_second']:,.0f} events/s for {b['seconds']} s |")


if __name__ == "__main__":
    sys.exit(main())
