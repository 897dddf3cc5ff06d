"""A throw-away PostgreSQL server for the embedded stack, the integration and fault tests and the benchmarks.

This module is responsible for starting a real PostgreSQL (the Debian ``postgresql`` package's binaries) in a
temporary data directory (``initdb``) on a free loopback port, waiting until it accepts connections, creating the
database, and stopping, killing (SIGKILL of the postmaster and every backend) and restarting it on the same port
and data so tests can simulate outages. It never touches a PostgreSQL that is already running on the machine.

PostgreSQL refuses to run as root. Run as root (the CI and these machines), the server runs as the unprivileged
``postgres`` system user that the Debian package creates (``subprocess`` switches user in the child before
exec, no ``su``/``sudo``); the data directory is handed to that user. Otherwise it runs as the calling user.

Authentication is ``trust`` on 127.0.0.1 only (a development server reachable from this machine alone); the
server dies with the process that started it (``PR_SET_PDEATHSIG``, as for redis-server).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from aml_screener.devstack.ports import LOOPBACK, free_port
from aml_screener.devstack.process import parent_death_preexec

__all__ = ["PostgresServer", "PostgresServerError", "PostgresServerNotInstalledError", "find_postgres_bindir"]

_INSTALL_HINT = "apt-get install postgresql"
# Debian keeps the server binaries out of PATH, one directory per major version.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
# The unprivileged user PostgreSQL runs as when we are root (created by the Debian package).
_SERVICE_USER = "postgres"


class PostgresServerError(RuntimeError):
    """PostgreSQL could not be initialised or started, did not answer, or was used after close()."""


class PostgresServerNotInstalledError(PostgresServerError):
    """No PostgreSQL server binaries on this machine."""


def find_postgres_bindir() -> Path:
    """The directory of ``initdb``/``postgres``: the newest Debian major version, else whatever PATH has."""
    candidates = sorted(
        (path for path in _DEBIAN_ROOT.glob("*/bin") if (path / "initdb").is_file()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    raise PostgresServerNotInstalledError(
        f"PostgreSQL server binaries (initdb, postgres) not found in {_DEBIAN_ROOT}/*/bin or on PATH; install them "
        f"with: {_INSTALL_HINT} (Debian/Ubuntu; needs root or sudo)"
    )


def _cleanup(live: list[subprocess.Popen[bytes]], directory: Path) -> None:
    for proc in live:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    live.clear()
    shutil.rmtree(directory, ignore_errors=True)


class PostgresServer:
    """One PostgreSQL server (postmaster + backends) on ``127.0.0.1:<port>`` with its own data directory.

    ``settings`` are server parameters (``-c name=value``) on top of the defaults below, e.g. a larger
    ``shared_buffers`` for a benchmark. The port and data are kept across :meth:`stop`/:meth:`kill` and
    :meth:`start`, so a test can take the database away mid-stream and bring it back where clients expect it.
    """

    # initdb takes 1-3 s here; a loaded 2-core CI box several times that.
    DEFAULT_STARTUP_TIMEOUT_S = 60.0
    # A fast shutdown (SIGINT) with a checkpoint of a test's data takes well under a second; then SIGKILL.
    STOP_TIMEOUT_S = 30.0
    _PROBE_INTERVAL_S = 0.05
    _PORT_ATTEMPTS = 3
    _LOG_TAIL_LINES = 25
    # Server parameters for a development server: loopback only, no Unix socket outside our directory, and
    # logs in our directory. Durability stays the default (fsync on): the fault tests kill it for real.
    _BASE_SETTINGS: Mapping[str, str] = {
        "listen_addresses": LOOPBACK,
        "max_connections": "100",
        "logging_collector": "off",
        "log_min_messages": "warning",
        "log_checkpoints": "off",
    }

    def __init__(
        self,
        port: int | None = None,
        *,
        database: str = "aml",
        user: str = "aml",
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        bindir: Path | None = None,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database) or not re.fullmatch(r"[a-z_][a-z0-9_]*", user):
            raise ValueError("database and user must be plain lower-case identifiers")
        self._bindir = bindir or find_postgres_bindir()
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port()
        self.database = database
        self.user = user
        self._settings = {**self._BASE_SETTINGS, **(settings or {})}
        self._startup_timeout = startup_timeout
        self._run_as = self._service_user()
        self._dir = Path(tempfile.mkdtemp(prefix="aml-postgres-"))
        if self._run_as is not None:
            os.chown(self._dir, self._run_as.pw_uid, self._run_as.pw_gid)
        self._proc: subprocess.Popen[bytes] | None = None
        self._initialised = False
        self._lock = threading.RLock()
        self._closed = False
        self._live: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _cleanup, self._live, self._dir)

    @staticmethod
    def _service_user() -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            raise PostgresServerError(
                f"PostgreSQL refuses to run as root and there is no {_SERVICE_USER!r} user to run it as; install the "
                f"Debian package ({_INSTALL_HINT}), which creates it, or run as an unprivileged user"
            ) from None

    # -- properties ---------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def dsn(self) -> str:
        """libpq connection URI of the database (trust authentication: no password)."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """libpq connection URI of another database of this server (e.g. one a test created)."""
        return f"postgresql://{self.user}@{LOOPBACK}:{self._port}/{database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def data_directory(self) -> Path:
        return self._dir / "data"

    @property
    def log_path(self) -> Path:
        return self._dir / "postgres.log"

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def _uid(self) -> int | None:
        return self._run_as.pw_uid if self._run_as is not None else None

    @property
    def _gid(self) -> int | None:
        return self._run_as.pw_gid if self._run_as is not None else None

    @property
    def _groups(self) -> list[int] | None:
        return [] if self._run_as is not None else None  # drop root's supplementary groups too

    def _initdb(self) -> None:
        command = [
            str(self._bindir / "initdb"),
            "-D", str(self.data_directory),
            "-U", self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throw-away cluster: skip the final fsync of the fresh files
        ]  # fmt: skip
        result = subprocess.run(
            command,
            capture_output=True,
            cwd=self._dir,
            check=False,
            timeout=self._startup_timeout,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise PostgresServerError(f"initdb failed with code {result.returncode}:\n{output[-3000:]}")
        self._initialised = True

    def start(self) -> Self:
        """Initialise the data directory (first start only), start the server and wait until the database
        accepts connections (created on first start)."""
        with self._lock:
            if self._closed:
                raise PostgresServerError("PostgresServer is closed")
            if self.running:
                return self
            if not self._initialised:
                self._initdb()
            attempts = 1 if self._port_fixed else self._PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                try:
                    self._spawn_and_wait()
                except PostgresServerError as exc:
                    if attempt == attempts or "Address already in use" not in str(exc):
                        raise
                    self._port = free_port()
                else:
                    self._port_fixed = True
                    self._ensure_database()
                    return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _argv(self) -> list[str]:
        argv = [str(self._bindir / "postgres"), "-D", str(self.data_directory), "-p", str(self._port)]
        settings = {**self._settings, "unix_socket_directories": str(self._dir)}
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _spawn_and_wait(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                preexec_fn=parent_death_preexec(signal.SIGKILL),  # noqa: PLW1509 - see process.parent_death_preexec
                close_fds=True,
                # Own session and process group: kill() takes the postmaster and every backend at once, and a
                # terminal Ctrl-C does not reach the server before the parent's orderly shutdown.
                start_new_session=True,
                user=self._uid,
                group=self._gid,
                extra_groups=self._groups,
            )
        self._live[:] = [self._proc]
        try:
            self._wait_until_ready(self._proc)
        except BaseException:
            self._reap(self._proc, graceful=False)
            self._proc = None
            raise

    def _wait_until_ready(self, proc: subprocess.Popen[bytes]) -> None:
        import psycopg  # noqa: PLC0415 - a dependency of the history service; imported where servers are started

        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise PostgresServerError(f"postgres exited with code {code} on port {self._port}{self._log_tail()}")
            try:
                with psycopg.connect(self.dsn_for("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                pass
            if time.monotonic() >= deadline:
                raise PostgresServerError(
                    f"postgres on port {self._port} did not accept connections within "
                    f"{self._startup_timeout:.0f} s{self._log_tail()}"
                )
            time.sleep(self._PROBE_INTERVAL_S)

    def _ensure_database(self) -> None:
        import psycopg  # noqa: PLC0415 - see _wait_until_ready

        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')  # a checked plain identifier (see __init__)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-self._LOG_TAIL_LINES :]
        except OSError:
            return ""
        return f"\nlast lines of {self.log_path}:\n" + "\n".join(lines) if lines else ""

    def _reap(self, proc: subprocess.Popen[bytes], *, graceful: bool) -> None:
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back open transactions, checkpoint, exit
                try:
                    proc.wait(timeout=self.STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
                else:
                    return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # Backends notice their postmaster's death and exit; a new postmaster refuses the data directory while
        # they still hold its shared memory, so wait for the whole process group to be gone.
        deadline = time.monotonic() + self.STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(self._PROBE_INTERVAL_S)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after STOP_TIMEOUT_S. Keeps port and data for start()."""
        with self._lock:
            if self._proc is not None:
                self._reap(self._proc, graceful=True)
                self._proc = None

    def kill(self) -> None:
        """SIGKILL of the postmaster and every backend, as in a crash: open transactions are lost, committed ones
        come back by WAL replay on the next start."""
        with self._lock:
            if self._proc is not None:
                self._reap(self._proc, graceful=False)
                self._proc = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.stop()
            self._finalizer()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"PostgresServer(port={self._port}, {state})"
