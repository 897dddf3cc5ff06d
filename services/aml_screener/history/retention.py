"""Retention of the screening history: whole monthly partitions older than the retention period are dropped (a
metadata operation: no row-by-row delete, no table bloat, no vacuum debt), and rows of the default partition older
than it are deleted. `aml-screener history retention` lists what it would drop; `--apply` drops it.

The watchlist's change log and versions are kept (they are small and say what was listed when).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

_PARTITION = re.compile(r"^(screened_addresses|screened_events)_p(\d{4})_(\d{2})$")


@dataclass(frozen=True)
class ExpiredPartition:
    table: str  # partition name, in schema aml_history
    parent: str
    month: date

    @property
    def ends(self) -> date:
        return date(self.month.year + self.month.month // 12, self.month.month % 12 + 1, 1)


def expired_partitions(conn: psycopg.Connection, cutoff: datetime) -> list[ExpiredPartition]:
    """The monthly partitions whose every row is older than ``cutoff`` (their month ended before it)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'aml_history' ORDER BY c.relname"
    ).fetchall()
    expired = []
    for (name,) in rows:
        match = _PARTITION.match(name)
        if match is None:
            continue
        partition = ExpiredPartition(name, match.group(1), date(int(match.group(2)), int(match.group(3)), 1))
        if datetime(partition.ends.year, partition.ends.month, 1, tzinfo=UTC) <= cutoff:
            expired.append(partition)
    return expired


def drop_expired(conn: psycopg.Connection, cutoff: datetime) -> tuple[list[ExpiredPartition], int]:
    """Drop the expired partitions and delete the default partitions' rows older than ``cutoff`` (one
    transaction); return what was dropped and how many default rows were deleted."""
    expired = expired_partitions(conn, cutoff)
    deleted = 0
    with conn.transaction():
        for partition in expired:
            conn.execute(
                sql.SQL("ALTER TABLE aml_history.{} DETACH PARTITION aml_history.{}").format(
                    sql.Identifier(partition.parent), sql.Identifier(partition.table)
                )
            )
            conn.execute(sql.SQL("DROP TABLE aml_history.{}").format(sql.Identifier(partition.table)))
        for default in ("screened_addresses_default", "screened_events_default"):
            cursor = conn.execute(
                sql.SQL("DELETE FROM aml_history.{} WHERE event_time < %s").format(sql.Identifier(default)), (cutoff,)
            )
            deleted += max(0, cursor.rowcount)
    return expired, deleted
