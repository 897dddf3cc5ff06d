"""`make bench` part F: the pre-screen API under load from wrk (a C load generator, its own process).

Set-up: the embedded stack (the broker in its own process, a real redis-server with the bundled OFAC sample), a real
`aml-screener api` process, and, for every run but the first, the stream running beside it: a real `aml-screener
run` screening a steady AML_BENCH_STREAM_RATE withdrawals/s from a producer process, on the same Redis and the same
two cores.

Runs (each `seconds` long; bodies cycle through 200 single-address requests, 5 % of them listed, or 20 batches of
100 addresses):
- single, paced ~1,000 requests/s, without the stream (the floor);
- single, paced ~1,000 requests/s, with the stream (the issue's target: p99 <= 5 ms);
- single, as fast as one connection set goes (closed loop: throughput);
- batch of 100, paced ~100 requests/s (10,000 addresses/s), and as fast as it goes.

Pacing: wrk's `delay()` holds each connection for a fixed time between requests, so the rate is connections /
(delay + latency): slightly under the target while answers are fast. wrk measures latency from sending a request
to its answer (a paced connection waits its delay first, so a stall of the API delays the next send rather than
being counted by every request that should have been sent meanwhile: a closed-loop tool under-reports such stalls,
"coordinated omission"); the API's own histogram (aml_screener_api_request_duration_seconds) is read too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from aml_screener.demo.sample import sample_listings
from aml_screener.devstack.api_process import ApiProcess
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.process import child_process_kwargs
from aml_screener.devstack.screener_process import screener_env, start_screener, wait_until_consuming
from bench.stats import histogram_quantiles

SINGLE_BODIES = 200
BATCH_BODIES = 20
BATCH_SIZE = 100
LISTED_SHARE = 0.05

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non_2xx":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"""


def _addresses(count: int, rng: random.Random) -> list[dict[str, str]]:
    listed = [key for key, _listing in sample_listings() if key.startswith("evm:")]
    out = []
    for _ in range(count):
        if rng.random() < LISTED_SHARE:
            out.append({"network": "ethereum", "address": rng.choice(listed)[4:]})
        else:
            out.append({"network": "ethereum", "address": "0x" + rng.randbytes(20).hex()})
    return out


def _script(path: Path, bodies: list[str], key: str, delay_ms: int) -> Path:
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["X-API-Key"] = "{key}"',
        "local bodies = {",
        *(f"  [==[{body}]==]," for body in bodies),
        "}",
        "local i = 0",
        "request = function()",
        "  i = i % #bodies + 1",
        "  return wrk.format(nil, nil, nil, bodies[i])",
        "end",
    ]
    if delay_ms:
        lines.append(f"delay = function() return {delay_ms} end")
    path.write_text("\n".join(lines) + _DONE)
    return path


def _cpu_seconds(api: ApiProcess) -> float:
    return _metric(api.metrics(), "process_cpu_seconds_total")


def _run(api: ApiProcess, url: str, script: Path, *, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run, with what the API process spent (CPU per request) and how busy the machine was (load average:
    the machine is shared; a load above its 2 cores means every process waits for a CPU)."""
    load_before, cpu_before = os.getloadavg()[0], _cpu_seconds(api)
    result = _wrk(url, script, connections=connections, seconds=seconds)
    cpu = _cpu_seconds(api) - cpu_before
    result["api_cpu_us_per_request"] = cpu / max(result["requests"], 1) * 1e6
    result["api_cpu_share_of_one_core"] = cpu / (result["duration_us"] / 1e6)
    result["load_average_1m"] = [load_before, os.getloadavg()[0]]
    return result


def _wrk(url: str, script: Path, *, connections: int, seconds: int) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk); scripts/bootstrap.sh installs it")
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    result["per_second"] = result["requests"] / (result["duration_us"] / 1e6)
    result["connections"] = connections
    return result


def _server_histogram(api: ApiProcess, endpoint: str) -> dict[str, float]:
    lines = [line for line in api.metrics().splitlines() if f'endpoint="{endpoint}"' in line]
    return histogram_quantiles("\n".join(lines), "aml_screener_api_request_duration_seconds")


def part_e(stack: Any, seconds: int, stream_rate: int, seed: int) -> dict[str, Any]:
    """Runs against an EmbeddedStack with the watchlist loaded (bench.run._stack_with_watchlist)."""
    rng = random.Random(seed)
    singles = [json.dumps({"addresses": [address]}) for address in _addresses(SINGLE_BODIES, rng)]
    batches = [json.dumps({"addresses": _addresses(BATCH_SIZE, rng)}) for _ in range(BATCH_BODIES)]
    report: dict[str, Any] = {"seconds": seconds, "stream_rate": stream_rate}
    work = Path(tempfile.mkdtemp(prefix="aml-bench-api-"))
    with ApiProcess(stack.redis_url, env={"AML_LOG_LEVEL": "WARNING"}, directory=work) as api:
        api.wait_ready()
        url = api.url + "/v1/screen/addresses"
        # 20 connections, each sending every 20 ms: at most 1,000 requests/s.
        single_paced = _script(work / "single-paced.lua", singles, api.key, 20)
        print("  single address, paced ~1,000/s, no stream", flush=True)
        report["single_paced_no_stream"] = _run(api, url, single_paced, connections=20, seconds=seconds)
        stream, producer = _start_stream(stack, stream_rate, seconds * 5 + 60, seed, work)
        try:
            print(f"  the stream runs beside it: {stream_rate} withdrawals/s", flush=True)
            before = _server_histogram(api, "addresses")
            report["single_paced"] = _run(api, url, single_paced, connections=20, seconds=seconds)
            report["single_paced"]["server_histogram_ms_all_runs_so_far"] = _server_histogram(api, "addresses")
            report["server_histogram_before_ms"] = before
            print("  single address, closed loop (throughput)", flush=True)
            single_max = _script(work / "single-max.lua", singles, api.key, 0)
            report["single_max"] = _run(api, url, single_max, connections=8, seconds=seconds)
            print("  batches of 100, paced ~100/s", flush=True)
            batch_paced = _script(work / "batch-paced.lua", batches, api.key, 100)
            report["batch100_paced"] = _run(api, url, batch_paced, connections=10, seconds=seconds)
            print("  batches of 100, closed loop (throughput)", flush=True)
            batch_max = _script(work / "batch-max.lua", batches, api.key, 0)
            report["batch100_max"] = _run(api, url, batch_max, connections=4, seconds=seconds)
        finally:
            producer.terminate()
            producer.wait(30)
            stream.terminate()
            stream.wait(30)
        report["api_cpu_seconds"] = _metric(api.metrics(), "process_cpu_seconds_total")
    return report


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return float("nan")


def _start_stream(
    stack: Any, rate: int, seconds: int, seed: int, work: Path
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A screener and a producer at ``rate`` withdrawals/s for ``seconds`` (ended early by the caller)."""
    port = free_port()
    # Withdrawals only: the bench stack has no deposit topics (the screener would wait for them).
    extra = {"AML_LOG_LEVEL": "WARNING", "AML_KAFKA_DEPOSIT_TOPIC": ""}
    env = screener_env(stack.bootstrap_servers, stack.redis_url, port, extra=extra)
    with (work / "screener.log").open("wb") as log:
        screener = start_screener(env, log)
    wait_until_consuming(port, screener, 60)
    producer = subprocess.Popen(
        [sys.executable, "-m", "bench.workers", "produce", stack.bootstrap_servers, "withdrawals.requested",
         str(rate), str(seconds), str(seed)],
        stdout=subprocess.DEVNULL,
        env=dict(os.environ),
        **child_process_kwargs(),
    )  # fmt: skip
    return screener, producer


def lines(report: dict[str, Any]) -> list[str]:
    """The table rows of docs/benchmarks.md."""
    rows = []
    names = {
        "single_paced_no_stream": "1 address, paced ~1,000/s, stream off",
        "single_paced": "1 address, paced ~1,000/s, stream on",
        "single_max": "1 address, closed loop (8 connections), stream on",
        "batch100_paced": "100 addresses, paced ~100/s, stream on",
        "batch100_max": "100 addresses, closed loop (4 connections), stream on",
    }
    for key, name in names.items():
        run = report.get(key)
        if run is None:
            continue
        rows.append(
            f"| {name} | {run['per_second']:,.0f} req/s | {run['p50_us'] / 1000:.2f} ms "
            f"| {run['p99_us'] / 1000:.2f} ms | {run['p999_us'] / 1000:.2f} ms "
            f"| {run['non_2xx'] + run['socket_errors']} | {run['api_cpu_us_per_request']:,.0f} us "
            f"| {run['load_average_1m'][0]:.1f} |"
        )
    return rows
