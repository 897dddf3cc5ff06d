"""Where a screener process's time per event goes: CPU per thread and a sampled breakdown of the loop thread.

Two measurements taken around one benchmark round, in the measured process itself:

- CPU time per OS thread (utime + stime from /proc/<pid>/task/<tid>/stat), grouped by what the thread is: the loop
  (the main thread), kafka-python's network I/O threads, kafka-python's producer sender (exactly-once), librdkafka's
  threads (the at-least-once producer, C), others. Exact, and it sees C threads that a Python profiler cannot.
- A sampling profile of the main thread (sys._current_frames every `interval` seconds): each sample is attributed to
  the first stage its stack is in, innermost frame first, or to "waiting" when the thread sits in a blocking call.
  Statistical, over all threads' GIL contention included; it says which part of the loop the wall time is spent in.

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

# Main-thread stack -> stage: the first rule matching a frame, from the innermost frame outwards. A rule is
# (stage, path fragment of the frame's file, function names or None for any).
_WAITING = {"wait", "select", "poll", "sleep", "flush", "_wait_for_tstate_lock", "acquire", "result"}
_RULES: tuple[tuple[str, str, frozenset[str] | None], ...] = (
    ("watchlist lookup (Redis round trip)", "/redis/", None),
    ("Avro decode", "screener/codec.py", frozenset({"decode", "_decode", "read_record", "decode_value"})),
    ("Avro encode (decision, flag)", "screener/codec.py", frozenset({"encode", "_encode", "write"})),
    ("Avro decode/encode (fastavro)", "/fastavro/", None),
    ("normalize + related keys (domain)", "screening/addresses.py", None),
    ("normalize + related keys (domain)", "screening/related.py", None),
    ("decide (domain)", "screening/", None),
    ("pipeline bookkeeping", "screener/pipeline.py", None),
    ("produce: kafka-python send (exactly-once)", "kafka/producer/", None),
    ("produce: librdkafka produce/poll (at-least-once)", "screener/emitter.py", None),
    ("commit: transaction (exactly-once)", "screener/exactly_once.py", None),
    ("consumer: fetch + parse records (kafka-python)", "kafka/consumer/", None),
    ("consumer: fetch + parse records (kafka-python)", "kafka/record/", None),
    ("consumer: kafka-python (other)", "/kafka/", None),
    ("loop bookkeeping + metrics", "/prometheus_client/", None),
    ("loop bookkeeping + metrics", "screener/", None),
)


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


def _stage(frame: FrameType | None) -> str:
    """The stage of the innermost matching frame; "waiting ..." when the innermost frame is a blocking call of a
    library (a poll or flush that waits, an Event wait)."""
    waiting = frame is not None and frame.f_code.co_name in _WAITING and "aml_screener" not in frame.f_code.co_filename
    while frame is not None:
        filename, function = frame.f_code.co_filename, frame.f_code.co_name
        for stage, fragment, functions in _RULES:
            if fragment in filename and (functions is None or function in functions):
                if waiting and stage.startswith(("consumer", "produce", "commit")):
                    return f"waiting in {stage.split(':')[0]}"
                return stage
        frame = frame.f_back
    return "waiting (idle poll)" if waiting else "other"


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
