"""`make bench`: screener throughput vs a bare kafka-python consumer, and latency under steady load.

Part A (throughput): one prefilled input topic (default 100,000 events, 4 partitions) is read, in alternating
rounds, by (a) a bare kafka-python consumer with the screener's consumer settings and (b) the screener; each in
its own process, a new consumer group per round. Reported: events/s per round, medians, and the ratio of
medians (target: screener >= 0.8 x bare).

Part B (latency): fresh topics; the screener runs while a producer process sends a steady 5,000 events/s for
60 s and an observer process reads the decisions. Reported: p50/p95/p99 of
  - decided:  input record timestamp -> decision made (the decision's own decided_at);
  - visible:  input record timestamp -> decision readable by a downstream consumer (includes its fetch);
  - acked:    input record timestamp -> decision acknowledged by Kafka (screener histogram, bucket-interpolated).
Target: p99 <= 35 ms.

Parts C and D: watchlist scale and related-address matching (see their modules). Part E (bench/lookback.py):
sync -> last retroactive match over 10,000,000 history rows in a real PostgreSQL, with a real single-node Kafka.

The broker runs in its own process (mock cluster subprocess), Redis is a real redis-server. Results are written
to bench/results/<UTC timestamp>.json and printed as a table.
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
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import kafka
import redis
from confluent_kafka import Producer

from aml_screener.demo.sample import load_sample, sample_listings
from aml_screener.devstack.generator import EventGenerator
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.process import child_process_kwargs
from aml_screener.devstack.screener_process import screener_env, start_screener, wait_until_consuming
from aml_screener.devstack.stack import EmbeddedStack
from aml_screener.screener.codec import EventEncoder
from aml_screener.screener.schemas import WITHDRAWAL_REQUESTED, SchemaCatalog
from aml_screener.watchlist.store import WatchlistStore
from bench import lookback, related_cost

RESULTS = Path(__file__).resolve().parent / "results"
TOPICS = ["withdrawals.requested", "screening.decisions", "withdrawals.flagged", "withdrawals.requested.dlq"]


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


def prefill(stack: EmbeddedStack, count: int, seed: int) -> dict[str, int]:
    entry = SchemaCatalog().current(WITHDRAWAL_REQUESTED)
    generator = EventGenerator(
        sample_listings(), EventEncoder(entry.schema, entry.schema_id), seed=seed, clean_pool=50_000
    )
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 20, "log.connection.close": False})
    expected: dict[str, int] = {}
    size = 0
    for event in generator.stream(count):
        expected[event.expected.value] = expected.get(event.expected.value, 0) + 1
        size += len(event.value)
        while True:
            try:
                producer.produce(TOPICS[0], event.value, event.key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("prefill not delivered")
    expected["mean_value_bytes"] = size // count
    return expected


@contextlib.contextmanager
def _stack_with_watchlist() -> Iterator[EmbeddedStack]:
    """Fresh topics (4 input partitions), the broker in its own process, the bundled watchlist loaded."""
    topics = {TOPICS[0]: 4, TOPICS[1]: 4, TOPICS[2]: 1, TOPICS[3]: 1}
    with EmbeddedStack(brokers=1, topics=topics, broker_in_subprocess=True) as stack:
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        load_sample(WatchlistStore(client))
        yield stack


def part_a(events: int, rounds: int, seed: int) -> dict[str, Any]:
    with _stack_with_watchlist() as stack:
        mix = prefill(stack, events, seed)
        print(f"  prefilled {events} events ({mix})", flush=True)
        bare: list[dict[str, Any]] = []
        screener: list[dict[str, Any]] = []
        for index in range(rounds):
            bare.append(worker("bare", stack.bootstrap_servers, TOPICS[0], str(events), f"bare-{index}"))
            screener.append(
                worker("screener", stack.bootstrap_servers, stack.redis_url, str(events), f"screener-{index}")
            )
            bare_rate, screener_rate = bare[-1]["per_second"], screener[-1]["per_second"]
            print(f"  round {index + 1}: bare {bare_rate:,.0f}/s  screener {screener_rate:,.0f}/s", flush=True)
    bare_median = statistics.median(r["per_second"] for r in bare)
    screener_median = statistics.median(r["per_second"] for r in screener)
    per_event_us = {
        stage: statistics.median(r["stage_seconds"].get(stage, 0.0) for r in screener) / events * 1e6
        for stage in screener[0]["stage_seconds"]
    }
    return {
        "events": events,
        "rounds": rounds,
        "input_mix": mix,
        "bare_per_second": [r["per_second"] for r in bare],
        "screener_per_second": [r["per_second"] for r in screener],
        "bare_median": bare_median,
        "screener_median": screener_median,
        "ratio": screener_median / bare_median,
        "screener_stage_us_per_event": per_event_us,
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return {"p50": cuts[499], "p95": cuts[949], "p99": cuts[989], "max": max(values), "count": len(values)}


def _histogram_quantiles(metrics_text: str, name: str) -> dict[str, float]:
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {"count": total}
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        rank = q * total
        previous_bound, previous_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= rank:
                if bound == float("inf"):
                    out[label] = previous_bound * 1000
                else:  # linear interpolation inside the bucket, as PromQL's histogram_quantile does
                    fraction = (rank - previous_count) / max(count - previous_count, 1e-9)
                    out[label] = (previous_bound + (bound - previous_bound) * fraction) * 1000
                break
            previous_bound, previous_count = bound, count
    return out


def part_b(rate: int, seconds: int, seed: int) -> dict[str, Any]:
    with _stack_with_watchlist() as stack:
        port = free_port()
        env = screener_env(stack.bootstrap_servers, stack.redis_url, port, extra={"AML_LOG_LEVEL": "INFO"})
        RESULTS.mkdir(exist_ok=True)
        log_path = RESULTS / "latency-screener.log"
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
                    TOPICS[1],
                    "4",
                    str(seconds + 10),
                ],
                stdout=subprocess.PIPE,
                text=True,
                **child_process_kwargs(),
            )
            load = worker("produce", stack.bootstrap_servers, TOPICS[0], str(rate), str(seconds), str(seed))
            seen = json.loads((observer.communicate(timeout=seconds + 60)[0]).strip().splitlines()[-1])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                metrics_text = response.read().decode()
        finally:
            screener.terminate()
            screener.wait(30)
    return {
        "rate_target": rate,
        "seconds": seconds,
        "produced": load,
        "decided_ms": _quantiles(seen["decided_ms"]),
        "visible_ms": _quantiles(seen["visible_ms"]),
        "acked_ms_histogram": _histogram_quantiles(metrics_text, "aml_screener_end_to_end_latency_seconds"),
        "worst_visible_ms_per_second": seen["worst_visible_ms_per_second"],
        "screener_log": str(log_path),
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
    with _stack_with_watchlist() as stack:
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
        prefill(stack, events, seed)
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
    with _stack_with_watchlist() as stack:
        prefill(stack, events, seed)
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


def main() -> int:
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
    parser.add_argument("--skip-lookback", action="store_true")
    parser.add_argument("--lookback-rows", type=int, default=10_000_000)
    args = parser.parse_args()
    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    if not args.skip_throughput:
        print("part A: throughput, same prefilled topic, bare kafka-python consumer vs screener", flush=True)
        report["throughput"] = part_a(args.events, args.rounds, args.seed)
    if not args.skip_latency:
        runs = []
        for index in range(args.latency_runs):
            print(f"part B: latency at a steady {args.rate}/s for {args.seconds}s (run {index + 1})", flush=True)
            runs.append(part_b(args.rate, args.seconds, args.seed + index))
            print("  " + _latency_line(runs[-1]), flush=True)
        report["latency_runs"] = runs
        report["latency"] = {
            key: {q: statistics.median(run[key][q] for run in runs) for q in ("p50", "p95", "p99")}
            for key in ("decided_ms", "visible_ms", "acked_ms_histogram")
        } | {"produced": runs[0]["produced"], "seconds": args.seconds, "runs": len(runs)}
    if not args.skip_watchlist_scale:
        print(f"part C: watchlist scale (OFAC XML; synthetic {args.watchlist_size:,} addresses)", flush=True)
        with tempfile.TemporaryDirectory(prefix="aml-bench-") as work:
            report["watchlist_scale"] = part_c(args.watchlist_size, args.events, args.rounds, args.seed, Path(work))
    if not args.skip_related:
        print("part D: related-address matching, relations on vs off", flush=True)
        with tempfile.TemporaryDirectory(prefix="aml-bench-") as work:
            report["related"] = part_d(args.events, args.rounds, args.seed, args.related_sync_size, Path(work))
    if not args.skip_lookback:
        print(f"part E: lookback, sync -> last retroactive match over {args.lookback_rows:,} history rows", flush=True)
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


def _latency_line(run: dict[str, Any]) -> str:
    return "  ".join(
        f"{label} p50/p95/p99 {run[key]['p50']:.1f}/{run[key]['p95']:.1f}/{run[key]['p99']:.1f} ms"
        for key, label in (("decided_ms", "decided"), ("visible_ms", "visible"), ("acked_ms_histogram", "acked"))
    )


def print_table(report: dict[str, Any]) -> None:
    if "throughput" not in report:
        return
    a = report["throughput"]
    print("\n| measurement | value |\n|---|---|")
    print(f"| bare kafka-python consumer, median of {a['rounds']} | {a['bare_median']:,.0f} events/s |")
    print(f"| screener, median of {a['rounds']} | {a['screener_median']:,.0f} events/s |")
    print(f"| ratio screener / bare (target >= 0.8) | {a['ratio']:.2f} |")
    cpu = {k: v for k, v in a["screener_stage_us_per_event"].items() if k not in ("produce", "commit")}
    stages = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
    print(f"| screener CPU per event by stage, us | {stages} |")
    if "latency" in report:
        b = report["latency"]
        kinds = (("decided_ms", "decided"), ("visible_ms", "visible downstream"), ("acked_ms_histogram", "acked"))
        for key, label in kinds:
            q = b[key]
            if q:
                p50, p95, p99 = (q.get(name, 0.0) for name in ("p50", "p95", "p99"))
                row = f"latency {label}, median of {b['runs']} runs: p50 / p95 / p99"
                print(f"| {row} | {p50:.1f} / {p95:.1f} / {p99:.1f} ms |")
        print(f"| offered load | {b['produced']['per_second']:,.0f} events/s for {b['seconds']} s |")


if __name__ == "__main__":
    sys.exit(main())
