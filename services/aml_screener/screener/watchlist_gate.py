"""The watchlist gate: may the screener decide now, and if not, what does it do meanwhile?

While the watchlist cannot be consulted (Redis down or slow, no active version, a damaged table, or the schema
registry that decoding needs unreachable) the screener either fails closed (the default: decides nothing, pauses
its partitions and retries with back-off) or, by the operator's explicit choice (AML_WATCHLIST_FAILURE_MODE=open),
fails open (passes decodable events unscreened to the hold topic, never `clear`, and probes the watchlist on the
back-off whether or not records arrive). The gate owns that state machine and keeps the readiness probe and the
metrics in step with it; the loop (service.py) asks it what to do and tells it what happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aml_screener.infra.settings import FailureMode
from aml_screener.screener.backoff import Backoff
from aml_screener.screener.errors import LookupUnavailable
from aml_screener.screener.health import ServiceState
from aml_screener.screener.lookup import LookupResult
from aml_screener.screener.metrics import Metrics

log = logging.getLogger(__name__)


class WatchlistGate:
    def __init__(
        self,
        *,
        mode: FailureMode,
        metrics: Metrics,
        state: ServiceState,
        retry_max_seconds: float,
        hold_topic: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.metrics = metrics
        self.state = state
        self.hold_topic = hold_topic
        self.clock = clock
        self.closed_since: float | None = None
        self.open_since: float | None = None
        self.open_reason = ""
        self._open_backoff = Backoff(retry_max_seconds)
        self._open_retry_at = 0.0
        state.failure_mode = mode.value
        metrics.failure_mode.info({"mode": mode.value})

    @property
    def fails_open(self) -> bool:
        """The operator chose fail-open mode (whether or not the watchlist is unavailable right now)."""
        return self.mode is FailureMode.OPEN

    @property
    def failing_open(self) -> bool:
        """Events are being passed unscreened to the hold topic right now."""
        return self.open_since is not None

    def pass_unscreened(self) -> bool:
        """Failing open and not yet time to try the watchlist again: pass the batch on without a lookup."""
        return self.open_since is not None and self.clock() < self._open_retry_at

    def unavailable(self, exc: LookupUnavailable, *, fail_closed: bool = False) -> None:
        """The watchlist (or the schema registry) could not be consulted: fail closed or, if chosen, open.
        `fail_closed` forces the former (at start-up nothing can be passed on: no group is joined yet)."""
        self.metrics.lookup_errors.labels(exc.reason).inc()
        if self.fails_open and not fail_closed:
            self._fail_open(exc)
        else:
            self._fail_closed(exc)

    def outage_over(self) -> None:
        """What failed is back, but no lookup has answered yet: not failing closed any more, still not ready."""
        if self.closed_since is not None:
            self.metrics.fail_closed_seconds.inc(self.clock() - self.closed_since)
            self.closed_since = None
            self.metrics.fail_closed.set(0)
        self.state.set_not_ready("starting", fail_closed=False)

    def available(self, result: LookupResult) -> None:
        """A lookup succeeded: whatever outage there was is over; ready with this version."""
        now = self.clock()
        if self.open_since is not None:
            log.info(
                "watchlist available again: screening resumes (fail-open bypass ends)",
                extra={"bypassed_seconds": round(now - self.open_since, 3)},
            )
            self.open_since = None
            self.metrics.fail_open_active.set(0)
        if self.closed_since is not None:
            paused_for = now - self.closed_since
            self.metrics.fail_closed_seconds.inc(paused_for)
            log.info("watchlist available again: resuming", extra={"paused_seconds": round(paused_for, 3)})
            self.closed_since = None
            self.metrics.fail_closed.set(0)
        if result.version != self.state.watchlist_version:
            if self.state.watchlist_version is not None:
                self.metrics.watchlist_switches.inc()
            log.info("watchlist version in use", extra={"version": result.version, "addresses": result.size})
            self.metrics.watchlist_info.info({"version": result.version})
        self.state.set_ready(result.version)
        self.metrics.watchlist_keys.set(result.size)

    def probe_if_due(self, check: Callable[[], LookupResult]) -> None:
        """Failing open: try the watchlist when the back-off is due, whether or not records arrive, so the bypass
        ends as soon as it answers (an idle topic would otherwise keep the screener failing open for ever)."""
        if self.open_since is None or self.clock() < self._open_retry_at:
            return
        try:
            result = check()
        except LookupUnavailable as exc:
            self.unavailable(exc)
            return
        self.available(result)

    def _fail_closed(self, exc: LookupUnavailable) -> None:
        if self.closed_since is not None:
            return
        self.closed_since = self.clock()
        self.metrics.fail_closed.set(1)
        self.metrics.fail_closed_pauses.labels(exc.reason).inc()
        self.state.set_not_ready(exc.reason, fail_closed=True)
        log.error(
            "watchlist unavailable: failing closed (consumption paused, no decisions)",
            extra={"reason": exc.reason, "detail": exc.detail},
        )

    def _fail_open(self, exc: LookupUnavailable) -> None:
        now = self.clock()
        if self.open_since is None:
            self.open_since = now
            self._open_backoff.reset()
            self.metrics.fail_open_active.set(1)
            self.state.set_not_ready(exc.reason, fail_closed=False, fail_open=True)
            log.error(
                "watchlist unavailable: FAIL-OPEN mode, passing events unscreened to the hold topic",
                extra={"reason": exc.reason, "detail": exc.detail, "hold_topic": self.hold_topic},
            )
        self.open_reason = exc.reason
        self._open_retry_at = now + self._open_backoff.next()
