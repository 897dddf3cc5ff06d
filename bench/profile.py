"""Where a screener process's time per event goes: CPU per thread and a sampled breakdown of the loop thread.

Two measurements taken around one benchmark round, in the measured process itself:

- CPU time per OS thread (utime + stime from /proc/<pid>/task/<tid>/stat), grouped by what the thread is: the loop
  (the main thread), kafka-python's network I/O threads, kafka-python's producer sender (exactly-once), librdkafka's
  threads (the at-least-once producer, C), others. Exact, and it sees C threads that a Python profiler cannot.
- A sampling profile of the main thread (sys._current_frames every `interval` seconds): each sample is attributed to
  the innermost frame of the project's own code on its stack (which part of the loop called what runs), and counts as
  waiting when the innermost frame is a library's blocking call. Statistical, time lost to GIL contention with the
  other threads included; it says which part of the loop the wall time is spent in.

Used by bench/workers.py when AML_BENCH_PROFILE=1 (`make bench` runs one profiled round per variant).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

# Sampling period: 2 ms gives ~5,000 samples over a 10 s round at about 1 % overhead on the measured process.
_INTERVAL_SECONDS = 0.002
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Blocking calls: a sample whose innermost frame is one of these (in a library) is time spent waiting.
_WAITING = {"wait", "select", "poll", "sleep", "flush", "_wait_for_tstate_lock", "acquire", "result"}
# The stage of a sample is decided by the innermost frame of this project's code (which part of the loop called
# what the thread is executing), as (file fragment, stage, stage when waiting, stage when in a library call).
_OWN_CODE: tuple[tuple[str, str], ...] = (
    ("screener/lookup.py", "watchlist lookup (Redis round trip)"),
    ("screening/addresses.py", "normalize + related keys (domain)"),
    ("screening/related.py", "normalize + related keys (domain)"),
    ("screening/", "decide (domain)"),
    ("screener/codec.py", "Avro decode/encode"),
    ("screener/pipeline.py", "pipeline: outputs and bookkeeping"),
    ("screener/exactly_once.py", "produce: kafka-python send, builds record batches (exactly-once)"),
    ("screener/emitter.py", "produce: librdkafka produce/poll (at-least-once)"),
    ("screener/at_least_once.py", "sink bookkeeping (at-least-once)"),
    ("screener/metrics.py", "metrics"),
    ("screener/service.py", "loop bookkeeping + metrics"),
)


def _stage(frame: FrameType | None) -> str:
    """What the main thread was doing in this sample (see _OWN_CODE)."""
    waiting = frame is not None and frame.f_code.co_name in _WAITING and "aml_screener" not in frame.f_code.co_filename
    library: str | None = None  # the outermost library frame below our code: kafka-python, prometheus_client...
    while frame is not None:
        filename, function = frame.f_code.co_filename, frame.f_code.co_name
        if "aml_screener" in filename:
            return _own_stage(filename, function, waiting, library)
        library = filename
        frame = frame.f_back
    return "other"


def _own_stage(filename: str, function: str, waiting: bool, library: str | None) -> str:
    if "screener/codec.py" in filename:
        return "Avro decode" if "decode" in function or "read" in function else "Avro encode (decision, flag)"
    if "screener/exactly_once.py" in filename and waiting:
        return "waiting for the transaction (offsets, acknowledgements, commit)"
    if "screener/service.py" in filename and library is not None and "/kafka/" in library:
        return "waiting in consumer poll" if waiting else "consumer poll: fetch + parse records (kafka-python)"
    if library is not None and "/prometheus_client/" in library:
        return "metrics"
    for fragment, stage in _OWN_CODE:
        if fragment in filename:
            return f"waiting in {stage}" if waiting else stage
    return "other (our code)"


class Profile:
    """Start before the measured work, `stop()` after; `report(events)` gives microseconds per event."""

    def __init__(self, interval: float = _INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.samples: Counter[str] = Counter()
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._cpu_before = _thread_cpu()
        self._process_before = _process_cpu()
        self._started = time.perf_counter()
        self._elapsed = 0.0
        self._thread = threading.Thread(target=self._sample, name="bench-profiler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main or 0)
            if frame is not None:
                self.samples[_stage(frame)] += 1

    def stop(self) -> None:
        self._elapsed = time.perf_counter() - self._started
        self._stop.set()
        self._thread.join()
        self._cpu_after = _thread_cpu()
        self._process_after = _process_cpu()

    def report(self, events: int) -> dict[str, Any]:
        cpu: dict[str, float] = defaultdict(float)
        for tid, (kind, seconds) in self._cpu_after.items():
            cpu[kind] += seconds - self._cpu_before.get(tid, (kind, 0.0))[1]
        process = self._process_after - self._process_before
        # Threads that ended during the round (exactly-once's per-call helpers, which mostly wait) are in the
        # process total only.
        cpu["threads that ended during the round"] += max(0.0, process - sum(cpu.values()))
        total = sum(self.samples.values()) or 1
        return {
            "events": events,
            "wall_us_per_event": self._elapsed / events * 1e6,
            "cpu_us_per_event_by_thread": {
                kind: s / events * 1e6 for kind, s in sorted(cpu.items(), key=lambda kv: -kv[1])
            },
            "cpu_us_per_event_total": process / events * 1e6,
            "main_thread_wall_us_per_event_by_stage": {
                stage: count / total * self._elapsed / events * 1e6 for stage, count in self.samples.most_common()
            },
            "samples": total,
        }


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every live thread of this process, by native id, with what it is."""
    python_threads = {thread.native_id: thread for thread in threading.enumerate()}
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        tid = int(task.name)
        out[tid] = (
            _thread_kind(tid, comm, python_threads.get(tid)),
            (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS,
        )
    return out


def _thread_kind(tid: int, comm: str, thread: threading.Thread | None) -> str:
    if tid == os.getpid():
        kind = "loop (main thread)"
    elif comm.startswith("rdk:"):
        kind = "librdkafka threads (at-least-once producer, C)"
    elif thread is None:
        kind = f"other native ({comm})"
    elif type(thread).__module__.startswith("kafka.producer"):
        kind = "kafka-python producer sender (exactly-once)"
    elif thread.name.startswith("kafka-io"):
        kind = "kafka-python network I/O thread(s)"
    elif thread.name.startswith("bench-profiler"):
        kind = "profiler (measurement overhead)"
    else:
        kind = f"other ({thread.name})"
    return kind
