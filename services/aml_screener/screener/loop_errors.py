"""Runs of consecutive consumer-loop errors: the back-off between retries, and the readiness and liveness they cost.

A poll that raises (a group or fetch error, a batch the client cannot parse) or a batch that fails unexpectedly
counts as one error; the loop waits a doubling back-off and goes on. After `threshold` consecutive errors the
screener reports not ready (`<where>_failing`) so the platform notices, and /healthz turns unhealthy once errors
have repeated for longer than its stall bound. A run ends, and both are restored, when a batch is processed, or
when polls have stayed free of errors for longer than the longest back-off: an error that comes back between empty
polls (a batch the client cannot read is fetched again after each) still counts as repeating, and an idle topic
after a broker blip does not stay not-ready for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from aml_screener.screener.backoff import Backoff
from aml_screener.screener.health import ServiceState
from aml_screener.screener.metrics import Metrics

log = logging.getLogger(__name__)

# Where in the loop an error happened: a metric label and the readiness reason ("<where>_failing").
LoopStage = Literal["poll", "batch"]
# After this many consecutive loop errors readiness turns off so the platform notices; the loop keeps retrying.
ERRORS_BEFORE_NOT_READY = 5


class LoopErrors:
    def __init__(
        self,
        *,
        state: ServiceState,
        metrics: Metrics,
        retry_max_seconds: float,
        threshold: int = ERRORS_BEFORE_NOT_READY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.threshold = threshold
        self.clock = clock
        self.consecutive = 0
        self._last_error_at = 0.0
        self._backoff = Backoff(retry_max_seconds)
        # An error that does not come back within the longest back-off (+1 s) is over.
        self._quiet_seconds = retry_max_seconds + 1.0

    def failed(self, where: LoopStage, exc: BaseException, *, with_traceback: bool = False) -> float:
        """Count one error (logged, metered); returns how long to wait before going on."""
        self.consecutive += 1
        self._last_error_at = self.clock()
        self.state.loop_failed()
        self.metrics.loop_errors.labels(where).inc()
        log.warning(
            "consumer loop error; retrying",
            extra={"where": where, "error": f"{type(exc).__name__}: {exc}", "consecutive": self.consecutive},
            exc_info=exc if with_traceback else None,
        )
        if self.consecutive >= self.threshold:
            self.state.set_loop_failing(f"{where}_failing")
        return self._backoff.next()

    def succeeded(self) -> None:
        """A batch was processed: any run of errors is over."""
        if self.consecutive or self.state.loop_failing is not None or self.state.failing_since is not None:
            self.consecutive = 0
            self._backoff.reset()
            self.state.loop_succeeded()
            self.state.set_loop_failing(None)

    def quiet(self) -> None:
        """A poll returned nothing and raised nothing: the run is over once errors stayed away long enough."""
        if self.consecutive and self.clock() - self._last_error_at > self._quiet_seconds:
            self.succeeded()
