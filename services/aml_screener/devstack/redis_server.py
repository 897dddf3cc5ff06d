"""A throw-away ``redis-server`` process for the demo, the integration tests and the benchmarks.

This module is responsible for starting a real Redis (the Debian ``redis-server`` binary) on a free loopback
port with persistence off and its own temporary directory, waiting until it answers, and stopping, killing and
restarting it on the same port so tests can simulate outages. It never touches a Redis that is already running
on the machine (for example on 6379). With :class:`RedisTls` it serves TLS only (``--port 0``, ``--tls-port``),
as a production Redis should; ACL users and passwords come through ``extra_args``.

The server dies with the process that started it: on Linux the child gets ``PR_SET_PDEATHSIG`` = SIGKILL, so
even a SIGKILLed test run leaves no redis-server behind. That signal fires when the *thread* that started the
server exits, so start servers from a thread that lives as long as they should (normally the main thread).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import redis

from aml_screener.devstack.ports import LOOPBACK, free_port
from aml_screener.devstack.process import parent_death_preexec

__all__ = ["RedisServer", "RedisServerError", "RedisServerNotInstalledError", "RedisTls", "find_redis_server"]

_INSTALL_HINT = "apt-get install redis-server"
# Debian installs the binary in /usr/bin; PATH may be minimal under make or CI runners.
_FALLBACK_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")


@dataclass(frozen=True, slots=True)
class RedisTls:
    """TLS material of a TLS-only server. ``ca_file`` verifies the server for this object's own clients (and,
    with ``auth_clients`` ``optional``/``yes``, client certificates). The server's certificate must name
    127.0.0.1 (subjectAltName IP); its key pair is also what the readiness probe and :meth:`RedisServer.client`
    present as client certificate, so give it the clientAuth usage too when clients must authenticate."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: str = "no"  # redis' --tls-auth-clients: no, optional or yes

    def args(self, port: int) -> list[str]:
        return [
            "--port", "0",  # no plain-text listener at all
            "--tls-port", str(port),
            "--tls-cert-file", str(Path(self.cert_file).resolve()),
            "--tls-key-file", str(Path(self.key_file).resolve()),
            "--tls-ca-cert-file", str(Path(self.ca_file).resolve()),
            "--tls-auth-clients", self.auth_clients,
        ]  # fmt: skip

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class RedisServerError(RuntimeError):
    """redis-server could not be started, did not answer, or was used after close()."""


class RedisServerNotInstalledError(RedisServerError):
    """No redis-server binary on this machine."""


def find_redis_server() -> str:
    """Path of the ``redis-server`` binary; :class:`RedisServerNotInstalledError` says what to install."""
    found = shutil.which("redis-server")
    if found:
        return found
    for directory in _FALLBACK_DIRS:
        candidate = Path(directory) / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisServerNotInstalledError(
        f"redis-server binary not found on PATH or in {', '.join(_FALLBACK_DIRS)}; install it with: "
        f"{_INSTALL_HINT} (Debian/Ubuntu; needs root or sudo)"
    )


def _cleanup(live: list[subprocess.Popen[bytes]], directory: Path) -> None:
    for proc in live:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
                proc.wait()
    live.clear()
    shutil.rmtree(directory, ignore_errors=True)


class RedisServer:
    """One ``redis-server`` child process on ``127.0.0.1:<port>``.

    ``extra_args`` are appended to the command line after the defaults, so they can override them and add
    ACL users (``--user NAME RULE...``), ``--requirepass`` and so on (readiness is checked with ``INFO server``
    on :attr:`port`, over TLS with ``tls``; an ``-NOAUTH``/``-NOPERM`` answer counts as up). ``username`` and
    ``password`` are only what this object's own helpers (:meth:`client`, :meth:`pause_clients`) log in with.
    With ``tls`` the server listens on :attr:`port` with TLS only and :attr:`url` is ``rediss://``.

    The port is chosen once (free port, unless given) and kept for every :meth:`start`, so a test can stop the
    server mid-stream and bring it back where clients expect it.
    """

    # A cold redis-server answers PING in ~5-20 ms here; 10 s covers a loaded CI box without hiding a hang.
    DEFAULT_STARTUP_TIMEOUT_S = 10.0
    # Shutdown with nothing to save is immediate; after 5 s we stop waiting and SIGKILL.
    STOP_TIMEOUT_S = 5.0
    # Between readiness probes: short enough not to add visible latency, long enough not to spin.
    _PROBE_INTERVAL_S = 0.01
    # One PING probe: loopback answers in microseconds; 0.5 s tolerates a stalled scheduler.
    _PROBE_TIMEOUT_S = 0.5
    # Auto-chosen ports can be taken between free_port() and the bind; three fresh ports is plenty.
    _PORT_ATTEMPTS = 3
    # Lines of redis.log quoted in start-up errors.
    _LOG_TAIL_LINES = 25

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        username: str | None = None,
        password: str | None = None,
        tls: RedisTls | None = None,
    ) -> None:
        self._binary = binary or find_redis_server()
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port()
        self._extra_args = list(extra_args)
        self._startup_timeout = startup_timeout
        self._username = username
        self._password = password
        self._tls = tls
        self._dir = Path(tempfile.mkdtemp(prefix="aml-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._closed = False
        # Safety net for a forgotten close(): kill the server and delete the directory when this object is
        # garbage-collected or the interpreter exits. _live holds the current process (shared, mutable).
        self._live: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _cleanup, self._live, self._dir)

    # -- properties ---------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (no credentials; see :meth:`url_for`)."""
        return self.url_for()

    def url_for(self, *, db: int = 0, username: str | None = None, password: str | None = None) -> str:
        """A redis:// (rediss:// with TLS) URL for this server with optional credentials (percent-encoded)."""
        auth = ""
        if username is not None or password is not None:
            auth = f"{quote(username or '', safe='')}:{quote(password or '', safe='')}@"
        scheme = "rediss" if self._tls is not None else "redis"
        return f"{scheme}://{auth}{LOOPBACK}:{self._port}/{db}"

    @property
    def pid(self) -> int | None:
        """PID of the running server, None when stopped."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path:
        """The server's working directory (``--dir``) and log location; removed by :meth:`close`."""
        return self._dir

    @property
    def log_path(self) -> Path:
        return self._dir / "redis.log"

    @property
    def console_path(self) -> Path:
        """stdout/stderr of the latest start (command-line and config errors end up here)."""
        return self._dir / "console.log"

    # -- lifecycle ----------------------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        return [
            self._binary,
            "--port", str(self._port),
            "--bind", LOOPBACK,
            "--protected-mode", "yes",
            "--daemonize", "no",
            # Persistence off: a restart must come back empty, and nothing is written to disk.
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self.log_path),
            *(self._tls.args(self._port) if self._tls is not None else ()),
            *self._extra_args,
        ]  # fmt: skip

    def start(self) -> Self:
        """Start the server (no-op if running) and wait until it answers PING."""
        with self._lock:
            if self._closed:
                raise RedisServerError("RedisServer is closed")
            if self.running:
                return self
            attempts = 1 if self._port_fixed else self._PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                try:
                    self._spawn_and_wait()
                except RedisServerError as exc:
                    if attempt == attempts or "Address already in use" not in str(exc):
                        raise
                    self._port = free_port()  # lost the race for an auto-chosen port
                else:
                    # Later starts reuse this port: clients of a restarted server reconnect to the same place.
                    self._port_fixed = True
                    return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        if self._port_taken():
            # Never talk to somebody else's server (for example the machine's own Redis on 6379).
            raise RedisServerError(f"{LOOPBACK}:{self._port}: Address already in use by another process")
        self.log_path.unlink(missing_ok=True)  # so an error quotes this attempt's log only
        # The server logs to --logfile; what it prints before opening that file (bad config) lands here.
        with self.console_path.open("wb") as console:
            self._proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                preexec_fn=parent_death_preexec(signal.SIGKILL),  # noqa: PLW1509  (see process.parent_death_preexec)
                close_fds=True,
                # Own session: a terminal Ctrl-C must not stop Redis before the parent's graceful shutdown.
                start_new_session=True,
            )
        self._live[:] = [self._proc]
        try:
            self._wait_until_ready(self._proc)
        except BaseException:
            self._reap(self._proc, graceful=False)
            self._proc = None
            raise

    def _wait_until_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise RedisServerError(
                    f"redis-server exited with code {code} during start-up on port {self._port}{self._log_tail()}"
                )
            if self._answers_ping(proc.pid):
                return
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    f"redis-server on port {self._port} did not answer PING within "
                    f"{self._startup_timeout:.1f} s{self._log_tail()}"
                )
            time.sleep(self._PROBE_INTERVAL_S)

    def _port_taken(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self._port), timeout=self._PROBE_TIMEOUT_S):
                return True
        except OSError:
            return False

    def _answers_ping(self, pid: int) -> bool:
        """True once *our* server answers: ``INFO server`` names our pid, or an auth error comes back
        (the server is up, just locked; the port was free before we started, so it is ours)."""
        try:
            with self._probe_connection() as sock:
                sock.sendall(b"INFO server\r\n")
                reply = b""
                # INFO server is ~1.5 kB; stop at the process_id line or at an error line.
                while b"process_id:" not in reply and not reply.startswith(b"-") and len(reply) < 65536:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                    if b"process_id:" in reply and b"\r\n" in reply.split(b"process_id:", 1)[1]:
                        break
        except OSError:
            return False
        if reply.startswith((b"-NOAUTH", b"-NOPERM", b"-WRONGPASS")):
            return True
        if b"process_id:" not in reply:
            return False
        served_by = reply.split(b"process_id:", 1)[1].split(b"\r\n", 1)[0]
        if served_by.strip() != str(pid).encode():
            raise RedisServerError(f"port {self._port} is served by another redis-server (pid {served_by!r})")
        return True

    def _probe_connection(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self._port), timeout=self._PROBE_TIMEOUT_S)
        if self._tls is None:
            return sock
        try:
            return self._tls.context().wrap_socket(sock, server_hostname=LOOPBACK)
        except BaseException:
            sock.close()
            raise

    def _log_tail(self) -> str:
        parts = []
        for path in (self.console_path, self.log_path):
            try:
                lines = path.read_text(errors="replace").splitlines()[-self._LOG_TAIL_LINES :]
            except OSError:
                continue
            if lines:
                parts.append(f"\nlast lines of {path}:\n" + "\n".join(lines))
        return "".join(parts) or f"\n(nothing logged in {self._dir})"

    def _reap(self, proc: subprocess.Popen[bytes], *, graceful: bool) -> None:
        if proc.poll() is None:
            if graceful:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    pass
                else:
                    return
            proc.kill()
        proc.wait()

    def stop(self) -> None:
        """SIGTERM, wait for a clean shutdown (SIGKILL after STOP_TIMEOUT_S). Keeps the port for start()."""
        with self._lock:
            if self._proc is not None:
                self._reap(self._proc, graceful=True)
                self._proc = None

    def kill(self) -> None:
        """SIGKILL, as in a crash or OOM kill: clients see connections reset mid-command."""
        with self._lock:
            if self._proc is not None:
                self._reap(self._proc, graceful=False)
                self._proc = None

    def restart(self) -> Self:
        """stop() then start() on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.stop()
            self._finalizer()  # removes the directory; detached afterwards

    # -- helpers ------------------------------------------------------------------------------------------

    def client(self, **kwargs: object) -> redis.Redis:
        """A redis-py client for this server, logged in with ``username``/``password`` if given."""
        if self._tls is not None:
            kwargs = {
                "ssl": True,
                "ssl_ca_certs": str(self._tls.ca_file),
                "ssl_certfile": str(self._tls.cert_file),
                "ssl_keyfile": str(self._tls.key_file),
                **kwargs,
            }
        return redis.Redis(
            host=LOOPBACK,
            port=self._port,
            username=self._username,
            password=self._password,
            **kwargs,  # type: ignore[arg-type]
        )

    def pause_clients(self, ms: int, *, writes_only: bool = False) -> None:
        """``CLIENT PAUSE ms [ALL|WRITE]``: the server stops serving clients for ``ms`` milliseconds while
        keeping their connections, i.e. a slow Redis rather than a dead one."""
        if ms < 0:
            raise ValueError(f"pause must be >= 0 ms, got {ms}")
        with self.client() as admin:
            admin.client_pause(ms, all=not writes_only)

    def unpause_clients(self) -> None:
        with self.client() as admin:
            admin.client_unpause()

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
        return f"RedisServer(port={self._port}, {state})"
