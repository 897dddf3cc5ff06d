"""A daemon thread that does one small job every few seconds until stopped (file watchers, probes).

Used by the policy file watcher, the API keys file watcher and the pre-screen API's watchlist probe: one home for
the loop, its stop and the rule that an unexpected error in one round is logged and does not end the rounds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

# How long stop() waits for the thread: one round of a small job, never an interval.
_JOIN_SECONDS = 5.0


class Periodic:
    def __init__(self, name: str, interval_seconds: float, work: Callable[[], object], *, now: bool = False) -> None:
        """``work`` runs every ``interval_seconds`` (``now``: also at once when started)."""
        self.name = name
        self.interval_seconds = interval_seconds
        self.work = work
        self.now = now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(_JOIN_SECONDS)

    @property
    def alive(self) -> bool:
        """The thread runs (started and not stopped)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        if self.now:
            self._round()
        while not self._stop.wait(self.interval_seconds):
            self._round()

    def _round(self) -> None:
        try:
            self.work()
        except Exception:  # a bug in one round must not end the rounds for the life of the process
            log.exception("unexpected error in a periodic job; it runs again next round", extra={"job": self.name})
