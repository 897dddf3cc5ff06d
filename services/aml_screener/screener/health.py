"""HTTP endpoints for the platform: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

Served by the standard library's WSGI server in a daemon thread, with prometheus_client's WSGI app for /metrics
(the same combination prometheus_client's own start_http_server uses). The server only asks its state for
liveness and readiness (`Probes`), so `aml-screener report serve` serves its own state the same way.

- /healthz is 200 while the consumer loop makes progress. It is 503 when the loop has not come round for
  `stall_seconds` (stuck inside a call), when its iterations have been failing with errors for longer than that
  (a client error repeating without progress), or when an input partition has been unreadable (a record batch
  the Kafka client cannot parse: an unsupported codec, a corrupt batch) for longer than that. A fail-closed pause
  is *healthy* (the loop turns, waiting), so Kubernetes does not restart it.
- /readyz is 200 only when the screener can decide: watchlist present, Redis reachable, not fail-closed, and no
  input partition blocked by records the client cannot read (they wait undecided).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Probes(Protocol):
    """What /healthz and /readyz ask a service."""

    def liveness_problem(self) -> str | None:
        """Why the service counts as stuck, or None while it makes progress."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The JSON body of both probes."""
        ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready or not, and the JSON body of /readyz (with the reason)."""
        ...


class HasRegistry(Protocol):
    registry: CollectorRegistry


def loop_liveness_problem(
    now: float, last_loop: float, failing_since: float | None, stall_seconds: float
) -> str | None:
    """A consumer loop is stuck when it has not come round, or has kept failing, for longer than `stall_seconds`
    (monotonic times)."""
    if now - last_loop > stall_seconds:
        return "loop_stalled"
    if failing_since is not None and now - failing_since > stall_seconds:
        return "loop_failing"
    return None


@dataclass
class ServiceState:
    """What the loop tells the probes. Written by the loop thread, read by HTTP threads (plain attributes).

    Readiness has independent causes, each owned by one part of the screener: an *outage* (the watchlist or the
    schema registry cannot be consulted, or not yet: "starting"; set by the watchlist gate), *loop* errors that keep
    repeating (set by the loop's error tracker), and unreadable input partitions. The screener is ready when none
    applies; clearing one cause never hides another. `on_readiness` (the readiness gauge) hears every change.
    """

    failure_mode: str = "closed"  # what happens while the watchlist is unavailable: "closed" or "open"
    fail_closed: bool = False  # failing closed right now (an outage, consumption paused)
    fail_open: bool = False  # fail-open mode is passing events unscreened to the hold topic right now
    watchlist_version: str | None = None
    assigned_partitions: list[str] = field(default_factory=list)
    last_loop: float = field(default_factory=time.monotonic)
    stall_seconds: float = 60.0
    failing_since: float | None = None  # first of the loop's current run of consecutive errors
    # Input partitions whose next records the Kafka client cannot read: "topic-partition" -> offset, error and
    # when it was first seen (monotonic). Records behind them wait undecided, so the screener is not ready.
    unreadable: dict[str, tuple[int, str, float]] = field(default_factory=dict)
    outage: str | None = "starting"  # why the watchlist cannot be consulted; None when it can
    loop_failing: str | None = None  # e.g. "poll_failing" while loop errors repeat; None otherwise
    on_readiness: Callable[[bool], None] | None = None

    @property
    def ready(self) -> bool:
        """Nothing but unreadable input may stand in the way (see is_ready)."""
        return self.outage is None and self.loop_failing is None

    @property
    def not_ready_reason(self) -> str:
        return self.outage or self.loop_failing or ""

    def heartbeat(self) -> None:
        self.last_loop = time.monotonic()

    def loop_failed(self) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def loop_succeeded(self) -> None:
        self.failing_since = None

    def is_ready(self) -> bool:
        return self.ready and not self.unreadable

    def liveness_problem(self) -> str | None:
        """Why the loop counts as stuck, or None while it makes progress."""
        now = time.monotonic()
        problem = loop_liveness_problem(now, self.last_loop, self.failing_since, self.stall_seconds)
        if problem is not None:
            return problem
        if any(now - since > self.stall_seconds for _offset, _error, since in self.unreadable.values()):
            return "input_unreadable"
        return None

    def set_ready(self, version: str | None) -> None:
        """The watchlist answers (with this version): the outage cause is gone."""
        if self.outage is None and version == self.watchlist_version and not self.fail_closed and not self.fail_open:
            return
        self.outage, self.fail_closed, self.fail_open, self.watchlist_version = None, False, False, version
        self._changed()

    def set_not_ready(self, reason: str, fail_closed: bool, fail_open: bool = False) -> None:
        """The watchlist (or the schema registry) cannot be consulted, or not yet."""
        self.outage, self.fail_closed, self.fail_open = reason, fail_closed, fail_open
        self._changed()

    def set_loop_failing(self, reason: str | None) -> None:
        """Loop errors keep repeating (reason), or no longer (None)."""
        if reason != self.loop_failing:
            self.loop_failing = reason
            self._changed()

    def mark_unreadable(self, partition: str, offset: int, error: str) -> bool:
        """An input partition cannot be read past ``offset``; True when this is news (a new partition or offset)."""
        known = self.unreadable.get(partition)
        if known is not None and known[0] == offset:
            return False
        self.unreadable[partition] = (offset, error, time.monotonic())
        self._changed()
        return True

    def clear_unreadable(self, partition: str) -> None:
        if self.unreadable.pop(partition, None) is not None:
            self._changed()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        snapshot = self.snapshot()
        if self.ready and self.unreadable:
            snapshot["reason"] = "input_unreadable"
        return self.is_ready(), snapshot

    def _changed(self) -> None:
        if self.on_readiness is not None:
            self.on_readiness(self.is_ready())

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "ready": self.is_ready(),
            "reason": self.not_ready_reason or None,
            "fail_closed": self.fail_closed,
            "failure_mode": self.failure_mode,
            "fail_open": self.fail_open,
            "watchlist_version": self.watchlist_version,
            "assigned_partitions": self.assigned_partitions,
            "seconds_since_loop": round(now - self.last_loop, 3),
            "failing_seconds": None if self.failing_since is None else round(now - self.failing_since, 3),
            "unreadable_input": {
                partition: {"offset": offset, "error": error, "seconds": round(now - since, 3)}
                for partition, (offset, error, since) in self.unreadable.items()
            },
        }


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probe and scrape requests are not worth a log line each."""


class HealthServer:
    def __init__(self, host: str, port: int, state: Probes, metrics: HasRegistry) -> None:
        self.state = state
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._server = make_server(
            host, port, self._app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            problem = self.state.liveness_problem()
            body = {"alive": problem is None, "problem": problem, **self.state.snapshot()}
            return self._json(start_response, problem is None, body)
        if path == "/readyz":
            ready, body = self.state.readiness()
            return self._json(start_response, ready, body)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    @staticmethod
    def _json(start_response: StartResponse, ok: bool, body: dict[str, Any]) -> list[bytes]:
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(body).encode() + b"\n"]
