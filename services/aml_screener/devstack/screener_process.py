"""`aml-screener run` as a child process: its environment for a given broker/Redis, start, wait until consuming.

Used by the demo, the benchmark and the integration tests, which all run the real entry point configured only
through AML_* variables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from typing import IO

from aml_screener.devstack.process import child_process_kwargs
from aml_screener.devstack.stack import MOCK_SCREENER_ENV


def screener_env(
    bootstrap_servers: str,
    redis_url: str,
    http_port: int,
    *,
    mock_broker: bool = True,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a screener child: this process's, plus the addresses and, for the embedded mock
    broker, its settings (devstack.stack.MOCK_SCREENER_ENV)."""
    env = dict(
        os.environ,
        AML_KAFKA_BOOTSTRAP_SERVERS=bootstrap_servers,
        AML_REDIS_URL=redis_url,
        AML_HTTP_HOST="127.0.0.1",
        AML_HTTP_PORT=str(http_port),
    )
    if mock_broker:
        env.update(MOCK_SCREENER_ENV)
    env.update(extra or {})
    return env


def start_screener(
    env: Mapping[str, str], output: IO[bytes] | int | None = None, *, death_signal: int = signal.SIGTERM
) -> subprocess.Popen[bytes]:
    """Start `aml-screener run`; it gets `death_signal` if this process dies (SIGTERM: it still drains)."""
    return subprocess.Popen(
        [sys.executable, "-m", "aml_screener.cli", "run"],
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        **child_process_kwargs(death_signal),
    )


class ScreenerNotReady(RuntimeError):
    """The child exited or did not become ready and take partitions in time."""


def wait_until_consuming(http_port: int, child: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    """Until /readyz is 200 *and* lists assigned partitions (the group has formed), so that measurements do not
    include the group join."""
    url = f"http://127.0.0.1:{http_port}/readyz"
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise ScreenerNotReady(f"the screener exited with {child.returncode}")
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(url, timeout=1) as response,
        ):
            if response.status == 200 and json.loads(response.read()).get("assigned_partitions"):
                return
        time.sleep(0.1)
    raise ScreenerNotReady(f"the screener did not become ready with partitions within {timeout_seconds:.0f}s")
