"""The Apache Kafka broker's jars, resolved from Maven Central into a git-ignored cache, and the Java to run them.

This module is responsible for one thing: turning :data:`KAFKA_VERSION` into a classpath. It runs
``mvn dependency:copy-dependencies`` on the small ``kafka/pom.xml`` shipped beside it (``org.apache.kafka:kafka_2.13``
plus the SLF4J-to-log4j bridge the broker needs to log), into ``<cache>/kafka-<version>-<key>/lib``, where the key
is a hash of the pom and the version: a version change or a pom edit resolves afresh, anything else reuses the
jars (about 45 MB, 10 s to resolve from a warm ``~/.m2``). A half-finished resolve never counts: the jars are
copied into a temporary folder that is renamed into place only when Maven succeeded.

The cache is ``$AML_DEVSTACK_CACHE`` if set, else ``.cache/`` at the root of a source checkout (git-ignored), else
``~/.cache/aml-screener``. ``scripts/bootstrap.sh`` runs ``python -m aml_screener.devstack.kafka_dist`` so tests
never download in the middle of a run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

__all__ = [
    "KAFKA_VERSION",
    "MIN_JAVA",
    "KafkaDistError",
    "KafkaDistribution",
    "cache_root",
    "find_java",
    "resolve",
]

# The broker the embedded stack, the tests and the benchmarks run; docker/ and helm/ should name the same.
# The newest 4.x that the served Maven Central resolves here (see DESIGN notes).
KAFKA_VERSION: Final = "4.4.0"
# Kafka 4 brokers need Java 17 or newer.
MIN_JAVA: Final = 17

_INSTALL_JAVA = "apt-get install -y openjdk-17-jre-headless"
_INSTALL_MAVEN = "apt-get install -y maven"
# A cold ~/.m2 downloads ~45 MB; 15 minutes only trips on a dead mirror.
_RESOLVE_TIMEOUT_S = 900
_COMPLETE = ".complete"


class KafkaDistError(RuntimeError):
    """Java or Maven is missing, or the broker's jars could not be resolved (the message says what to do)."""


@dataclass(frozen=True, slots=True)
class KafkaDistribution:
    """A resolved broker: its version, the jar folder and the Java binary that runs it."""

    version: str
    lib: Path
    java: str

    @property
    def classpath(self) -> str:
        return str(self.lib / "*")

    @property
    def log4j_config(self) -> Path:
        return _data_file("log4j2.properties")


def _data_file(name: str) -> Path:
    return Path(str(resources.files("aml_screener.devstack").joinpath("kafka", name)))


def cache_root() -> Path:
    """Where resolved jars live (see the module docstring)."""
    override = os.environ.get("AML_DEVSTACK_CACHE")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / ".git").exists():
        return checkout / ".cache"
    return Path.home() / ".cache" / "aml-screener"


def _java_major(java: str) -> int | None:
    try:
        # `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` on stderr; 30 s covers a cold JVM.
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH; it must be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise KafkaDistError(f"java not found (JAVA_HOME or PATH); install Java >= {MIN_JAVA}: {_INSTALL_JAVA}")
    major = _java_major(candidate)
    if major is None or major < MIN_JAVA:
        raise KafkaDistError(
            f"{candidate} is Java {major or 'of unknown version'}; Kafka {KAFKA_VERSION} needs Java >= {MIN_JAVA}: "
            f"{_INSTALL_JAVA} (or point JAVA_HOME at one)"
        )
    return candidate


def _key(version: str) -> str:
    digest = hashlib.sha256(_data_file("pom.xml").read_bytes() + version.encode()).hexdigest()
    return digest[:12]


def resolve(version: str = KAFKA_VERSION, *, cache: Path | None = None, quiet: bool = True) -> KafkaDistribution:
    """The broker's jars for ``version``, from the cache or resolved now with Maven."""
    java = find_java()
    target = (cache or cache_root()) / f"kafka-{version}-{_key(version)}"
    lib = target / "lib"
    if (target / _COMPLETE).is_file():
        return KafkaDistribution(version, lib, java)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaDistError(
            f"Kafka {version} is not in the cache ({target}) and mvn is not installed to resolve it: {_INSTALL_MAVEN}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".kafka-{version}-", dir=target.parent))
    try:
        argv = [
            mvn, "-B", *(["-q"] if quiet else []),
            "-f", str(_data_file("pom.xml")),
            "dependency:copy-dependencies",
            f"-Dkafka.version={version}",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging / 'lib'}",
        ]  # fmt: skip
        # Maven writes target/ beside the pom, which may be read-only (an installed package): run it from staging.
        done = subprocess.run(
            argv, cwd=staging, capture_output=True, text=True, timeout=_RESOLVE_TIMEOUT_S, check=False
        )
        if done.returncode != 0 or not any((staging / "lib").glob(f"kafka_2.13-{version}.jar")):
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise KafkaDistError(f"resolving Kafka {version} with Maven failed (exit {done.returncode}):\n{tail}")
        (staging / _COMPLETE).write_text(version + "\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first: use its copy
            if not (target / _COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return KafkaDistribution(version, lib, java)


def main() -> int:
    """``python -m aml_screener.devstack.kafka_dist``: resolve (or find cached) and print where the jars are."""
    try:
        dist = resolve(quiet="-v" not in sys.argv[1:])
    except KafkaDistError as exc:
        print(f"kafka_dist: {exc}", file=sys.stderr)
        return 1
    print(f"Kafka {dist.version}: {dist.lib} (java {dist.java})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
