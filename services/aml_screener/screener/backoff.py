"""Doubling back-off between retries, shared by every retry loop of the screener."""

from __future__ import annotations

# First retry after 0.1 s, doubling up to the configured maximum: Redis failovers and broker elections take
# seconds, and a tight loop would only add load to a recovering server.
FIRST_BACKOFF_SECONDS = 0.1


class Backoff:
    """``next()`` gives 0.1 s, 0.2 s, 0.4 s, ... capped at ``maximum``; ``reset()`` starts again."""

    def __init__(self, maximum: float, first: float = FIRST_BACKOFF_SECONDS) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.first
