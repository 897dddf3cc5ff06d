"""Schema migrations of the history database: numbered SQL files in history/migrations/, applied in order.

Responsible for: finding the migrations (``NNNN_name.sql``), applying the ones a database lacks, each in its own
transaction, recording them with a SHA-256 of their text (``aml_history.schema_migrations``), refusing to run
when an applied migration's file has changed since (a published migration is never edited; a new one is added),
and creating the monthly partitions around now. Concurrent migrators (two indexer pods starting together)
serialise on a PostgreSQL advisory lock.

Hand-written rather than a migration framework: what is needed is "apply these SQL files once, in order", and the
files contain PL/pgSQL bodies that a framework splitting statements itself (yoyo-migrations parses with sqlparse)
may cut wrongly; here each file goes to the server as one script.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

# Any constant: the key of the session-level advisory lock that serialises migrators.
_LOCK_KEY = 0x616D6C5F68697374  # "aml_hist"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Monthly partitions created around now by `migrate`: the previous months (a backlog read from Kafka lands in
# them) and the next ones (the indexer keeps creating months ahead, hourly).
PARTITION_MONTHS_BACK = 2
PARTITION_MONTHS_AHEAD = 3


class MigrationError(RuntimeError):
    """The database's schema cannot be brought up to date safely (e.g. an applied migration was edited)."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    return Path(str(resources.files("aml_screener.history") / "migrations"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.iterdir()):
        match = _NAME.match(path.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    numbers = [migration.number for migration in found]
    if numbers != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations in {directory} must be numbered 0001, 0002, ... without gaps: {numbers}")
    return found


def applied_migrations(conn: psycopg.Connection) -> dict[int, str]:
    """Number -> checksum of the migrations applied (empty for a fresh database)."""
    exists = conn.execute("SELECT to_regclass('aml_history.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return dict(conn.execute("SELECT number, checksum FROM aml_history.schema_migrations").fetchall())


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply the missing migrations and create the partitions around now; return what was applied. ``conn`` must
    be in autocommit mode (each migration gets its own transaction)."""
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    migrations = load_migrations(directory)
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        done = applied_migrations(conn)
        for migration in migrations:
            if migration.number in done:
                if done[migration.number] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.number:04d}_{migration.name}.sql was changed after it was applied "
                        "(published migrations are never edited: add a new one)"
                    )
                continue
        unknown = sorted(set(done) - {migration.number for migration in migrations})
        if unknown:
            raise MigrationError(
                f"the database has migrations this release does not know ({unknown}): it was migrated by a newer "
                "release; run that release"
            )
        applied = []
        for migration in migrations:
            if migration.number in done:
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())  # one script, several statements (simple query protocol)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS aml_history.schema_migrations (number integer PRIMARY KEY, "
                    "name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                conn.execute(
                    "INSERT INTO aml_history.schema_migrations (number, name, checksum) VALUES (%s, %s, %s)",
                    (migration.number, migration.name, migration.checksum),
                )
            log.info("migration applied", extra={"migration": f"{migration.number:04d}_{migration.name}"})
            applied.append(migration)
        ensure_partitions(conn, PARTITION_MONTHS_BACK, PARTITION_MONTHS_AHEAD)
        return applied
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def ensure_partitions(conn: psycopg.Connection, months_back: int, months_ahead: int) -> int:
    """Create the missing monthly partitions of both history tables around now; the number created."""
    row = conn.execute("SELECT aml_history.ensure_partitions(%s, %s)", (months_back, months_ahead)).fetchone()
    if not conn.autocommit:
        conn.commit()
    return int(row[0]) if row else 0


def check_current(conn: psycopg.Connection) -> None:
    """Raise MigrationError unless every migration of this release is applied (services refuse to start on a
    database that `aml-screener history migrate` has not brought up to date)."""
    done = applied_migrations(conn)
    missing = [m for m in load_migrations() if m.number not in done]
    if missing:
        names = ", ".join(f"{m.number:04d}_{m.name}" for m in missing)
        raise MigrationError(f"the history database lacks migrations {names}: run `aml-screener history migrate`")
