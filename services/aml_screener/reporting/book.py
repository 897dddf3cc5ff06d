"""The reporter's view of the obligations topic: every obligation by id, as its latest value says (pure, no I/O).

The compacted topic is the record (its latest value per key wins, as compaction keeps it); this book is what one
process has read of it, plus what it has written and Kafka acknowledged but it has not read back yet ("pending"),
so a flagged event seen twice in quick succession is not recorded twice. What is due, due soon or overdue is
computed from it at a given moment, for the metrics (at each scrape) and the commands.

Thread-safe: the consumer loop applies records while the HTTP thread computes the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from aml_screener.reporting.deadlines import business_days_left
from aml_screener.reporting.obligations import Obligation, ObligationKind


@dataclass(frozen=True)
class Summary:
    """The open obligations at one moment, by kind."""

    open: dict[ObligationKind, int]
    due_soon: dict[ObligationKind, int]  # open, not overdue, `warn_business_days` or fewer business days left
    overdue: dict[ObligationKind, int]  # open past their deadline
    next_due: datetime | None  # the earliest deadline of an open obligation (overdue ones included)


def _per_kind() -> dict[ObligationKind, int]:
    return dict.fromkeys(ObligationKind, 0)


@dataclass
class ObligationBook:
    _by_id: dict[str, Obligation] = field(default_factory=dict)
    _pending: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, obligation_id: str, obligation: Obligation | None) -> None:
        """A record read from the topic: the latest value of `obligation_id` (None: a tombstone, deleted)."""
        with self._lock:
            self._pending.discard(obligation_id)
            if obligation is None:
                self._by_id.pop(obligation_id, None)
            else:
                self._by_id[obligation_id] = obligation

    def written(self, obligation_ids: Iterable[str]) -> None:
        """Kafka acknowledged these new obligations; they count as known until they are read back."""
        with self._lock:
            self._pending.update(i for i in obligation_ids if i not in self._by_id)

    def knows(self, obligation_id: str) -> bool:
        """Recorded already (open or filed), or written and acknowledged: never to be written again."""
        with self._lock:
            return obligation_id in self._by_id or obligation_id in self._pending

    def get(self, obligation_id: str) -> Obligation | None:
        with self._lock:
            return self._by_id.get(obligation_id)

    def obligations(self) -> list[Obligation]:
        """Every obligation, earliest deadline first."""
        with self._lock:
            found = list(self._by_id.values())
        return sorted(found, key=lambda item: (item.due_at, item.obligation_id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def summary(self, now: datetime, warn_business_days: int) -> Summary:
        open_, soon, overdue = _per_kind(), _per_kind(), _per_kind()
        next_due: datetime | None = None
        for obligation in self.obligations():
            if not obligation.is_open:
                continue
            open_[obligation.kind] += 1
            if now > obligation.due_at:
                overdue[obligation.kind] += 1
            elif business_days_left(obligation.due_at, now) <= warn_business_days:
                soon[obligation.kind] += 1
            if next_due is None or obligation.due_at < next_due:
                next_due = obligation.due_at
        return Summary(open_, soon, overdue, next_due)
