"""Keeps the screener's action policy current: loads AML_POLICY_FILE at start-up and re-reads it while running.

Start-up: the file must be readable and valid, or the screener does not start (`PolicyError`; the caller exits 2
with its message, as for invalid settings). Unset: the built-in default policy, never re-read.

Running: a background thread reads the file every AML_POLICY_RELOAD_SECONDS and compares the SHA-256 of its bytes
with the last content seen. The modification time is not trusted to tell a change: `cp -p`, `tar` and `rsync -t`
keep it, and timestamps are coarse; a policy is a few KB, so reading it is cheap. A changed, valid file whose rules
differ becomes :attr:`PolicyWatcher.current` in one reference assignment (the pipeline reads `current` once per
batch, so a batch is decided under one policy); an invalid or unreadable one is refused: the previous policy stays,
one error log line names the problem, `aml_screener_policy_reloads_total{result}` counts it and
`aml_screener_policy_file_refused` stays 1 until the file is good again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from enum import StrEnum
from pathlib import Path

from aml_screener.infra.settings import Settings
from aml_screener.screener.metrics import Metrics
from aml_screener.screening.policy import DEFAULT_POLICY, Policy, PolicyError, parse_policy

log = logging.getLogger(__name__)

# How long stop() waits for the thread: one read and parse of a small file, never a poll interval.
_JOIN_SECONDS = 5.0


class ReloadResult(StrEnum):
    """Label values of aml_screener_policy_reloads_total."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    INVALID = "invalid"
    UNREADABLE = "unreadable"


def load_policy(path: Path) -> Policy:
    """The policy in ``path``; PolicyError (naming the file, the rule and the field) when unreadable or invalid."""
    return _parse(path, _read(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from None


def _parse(path: Path, data: bytes) -> Policy:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text: {exc}") from None
    return parse_policy(text, source=str(path))


class PolicyWatcher:
    """The policy in use (:attr:`current`) and the thread that keeps it in step with the file.

    Constructing it loads the file (raises PolicyError); :meth:`start` starts polling, :meth:`stop` ends it.
    :meth:`check` is one poll (the thread calls it; tests call it directly).
    """

    def __init__(self, path: Path | None, *, interval_seconds: float, metrics: Metrics) -> None:
        self.path = path
        self.interval_seconds = interval_seconds
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: str | None = None  # SHA-256 of the bytes last read (valid or not); None after a failed read
        self._refused: str | None = None  # the problem last reported, so a lasting one is logged once
        for result in ReloadResult:
            metrics.policy_reloads.labels(result.value)  # every series exists from the start (rate() needs it)
        if path is None:
            self.current: Policy = DEFAULT_POLICY
        else:
            data = _read(path)
            self.current = _parse(path, data)
            self._seen = hashlib.sha256(data).hexdigest()
        metrics.policy_info.info({"version": self.current.version})
        metrics.policy_file_refused.set(0)
        log.info(
            "action policy loaded",
            extra={"policy_version": self.current.version, "source": self.current.source},
        )

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics) -> PolicyWatcher:
        path = Path(settings.policy_file) if settings.policy_file else None
        return cls(path, interval_seconds=settings.policy_reload_seconds, metrics=metrics)

    def start(self) -> PolicyWatcher:
        """Poll the file in a daemon thread (nothing to poll without a file)."""
        if self.path is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_SECONDS)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.check()
            except Exception:  # a bug here must not end reloading for the life of the process
                log.exception("policy watcher: unexpected error; the current policy stays")

    def check(self) -> ReloadResult | None:
        """Read the file once; swap in a changed valid policy. None: nothing new since the last check."""
        if self.path is None:
            return None
        try:
            data = _read(self.path)
        except PolicyError as exc:
            self._seen = None  # whatever comes back is read and parsed again
            return self._refuse(ReloadResult.UNREADABLE, str(exc))
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._seen:
            return None
        self._seen = digest
        try:
            policy = _parse(self.path, data)
        except PolicyError as exc:
            self._refused = None  # new content: reported even when its problem reads like the last one's
            return self._refuse(ReloadResult.INVALID, str(exc))
        self._refused = None
        self.metrics.policy_file_refused.set(0)
        previous = self.current
        if policy.version == previous.version:
            self.metrics.policy_reloads.labels(ReloadResult.UNCHANGED.value).inc()
            log.info("policy file changed, its rules did not", extra={"policy_version": policy.version})
            return ReloadResult.UNCHANGED
        self.current = policy  # one reference assignment: a batch sees the old policy or the new one, whole
        self.metrics.policy_info.info({"version": policy.version})
        self.metrics.policy_reloads.labels(ReloadResult.APPLIED.value).inc()
        log.info(
            "action policy reloaded",
            extra={"policy_version": policy.version, "previous_version": previous.version, "rules": len(policy.rules)},
        )
        return ReloadResult.APPLIED

    def _refuse(self, result: ReloadResult, problem: str) -> ReloadResult | None:
        self.metrics.policy_file_refused.set(1)
        if problem == self._refused:
            return None  # reported already (a file that stays missing is logged and counted once)
        self._refused = problem
        self.metrics.policy_reloads.labels(result.value).inc()
        log.error(
            "policy file refused: the previous policy stays",
            extra={"problem": problem, "policy_version": self.current.version},
        )
        return result
