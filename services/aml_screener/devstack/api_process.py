"""`aml-screener api` as a child process, with a key of its own: for the tests and the benchmark.

It runs the real entry point configured only through AML_* variables (the ports are chosen free on loopback), and
talks to it over HTTP like any client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aml_screener.api.keys import StoredKey, new_key, read_keys, write_keys
from aml_screener.api.openapi import API_KEY_HEADER
from aml_screener.devstack.ports import free_port
from aml_screener.devstack.process import child_process_kwargs

# A client's bound on one request in tests: far above any answer (milliseconds), below pytest's timeout.
_REQUEST_TIMEOUT_SECONDS = 10.0


class ApiProcess:
    def __init__(self, redis_url: str, *, env: Mapping[str, str] | None = None, directory: Path | None = None) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="aml-api-"))
        self.keys_file = self.directory / "keys.json"
        self.key = self.add_key("tests")
        self.port = free_port()
        self.http_port = free_port()
        self.log = self.directory / "api.log"
        self.env = dict(
            os.environ,
            AML_REDIS_URL=redis_url,
            AML_API_HOST="127.0.0.1",
            AML_API_PORT=str(self.port),
            AML_HTTP_HOST="127.0.0.1",
            AML_HTTP_PORT=str(self.http_port),
            AML_API_KEYS_FILE=str(self.keys_file),
            AML_LOG_FORMAT="json",
            **(env or {}),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def add_key(self, name: str) -> str:
        """A new key in the keys file (the running API takes it within AML_API_KEYS_RELOAD_SECONDS)."""
        keys: dict[str, StoredKey] = read_keys(self.keys_file) if self.keys_file.exists() else {}
        key, stored = new_key()
        keys[stored.id] = replace(stored, name=name)
        write_keys(self.keys_file, keys)
        return key

    def start(self) -> Self:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aml_screener.cli", "api"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                **child_process_kwargs(signal.SIGKILL),
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def probe_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_listening(self, timeout: float = 60.0) -> Self:
        """Until the API answers HTTP (ready or not)."""
        return self._wait(lambda: self.probe("/healthz")[0] == 200 and self._answers(), timeout, "the API to listen")

    def wait_ready(self, timeout: float = 60.0) -> Self:
        return self._wait(lambda: self.probe("/readyz")[0] == 200 and self._answers(), timeout, "the API to be ready")

    def _answers(self) -> bool:
        with urllib.request.urlopen(self.url + "/v1/openapi.json", timeout=2) as response:  # noqa: S310 - an http://127.0.0.1 URL made here
            return bool(response.status == 200)

    def _wait(self, predicate: Any, timeout: float, what: str) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"aml-screener api exited ({self.proc.returncode}) waiting for {what}:\n{self.tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                if predicate():
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{self.tail()}")

    def probe(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.probe_url + path, timeout=2) as response:  # noqa: S310 - an http://127.0.0.1 URL made here
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.probe_url + "/metrics", timeout=2) as response:  # noqa: S310 - an http://127.0.0.1 URL made here
            return str(response.read().decode())

    def post(
        self,
        path: str,
        body: Any,
        *,
        key: str | None = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST JSON (or ``raw`` bytes) with this process's key (or ``key``; "" sends none)."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        chosen = self.key if key is None else key
        if chosen:
            sent[API_KEY_HEADER] = chosen
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=sent, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=_REQUEST_TIMEOUT_SECONDS) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
