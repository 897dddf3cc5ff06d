"""API keys of the pre-screen API: how they look, how they are stored (hashed), checked and re-read.

A key is ``amlk_<id>_<secret>``: ``id`` is 12 hex digits, public (logs and metrics may name it), ``secret`` is 32
random bytes (URL-safe base64, 256 bits). The keys file holds only the SHA-256 of each whole key, never the key:

    {"keys": [{"id": "3fa91c0b7d2e", "name": "withdrawal-form", "sha256": "<64 hex>", "created_at": "..."}]}

SHA-256 and not a slow password hash (bcrypt, scrypt) on purpose: a slow hash defends guessable passwords, and a
key of 256 random bits cannot be guessed; a slow hash would instead cost milliseconds on every request, more than
the whole screening. The presented key's hash is compared in constant time with the stored one for its id.

`aml-screener api keys create --name NAME` writes a new entry (and prints the key once), `list` shows the entries,
`revoke ID` removes one. The API re-reads the file every AML_API_KEYS_RELOAD_SECONDS (content hash, like the
policy file): a revoked key stops working within that time, without a restart; a file that became invalid is
refused and the keys read before stay in force.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aml_screener.infra.periodic import Periodic

log = logging.getLogger(__name__)

KEY_PREFIX = "amlk"
_ID_HEX_DIGITS = 12
_SECRET_BYTES = 32
_KEY_FORM = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{{_ID_HEX_DIGITS}}})_([A-Za-z0-9_-]{{43}})$")
_HASH_FORM = re.compile(r"^[0-9a-f]{64}$")


class KeysFileError(Exception):
    """The keys file cannot be read or is not a valid keys file; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    name: str
    sha256: str
    created_at: str


def new_key() -> tuple[str, StoredKey]:
    """A new key and the entry that stores it (its hash): the key is shown once and kept nowhere."""
    key_id = secrets.token_hex(_ID_HEX_DIGITS // 2)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return key, StoredKey(key_id, "", hash_key(key), created)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The keys accepted now, by id."""

    def __init__(self, keys: Mapping[str, StoredKey]) -> None:
        self._keys = dict(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, presented: str | None) -> str | None:
        """The id of the key presented when it is one of ours, else None. Costs one SHA-256 of ~60 bytes."""
        if not presented:
            return None
        form = _KEY_FORM.match(presented)
        if form is None:
            return None
        stored = self._keys.get(form.group(1))
        if stored is None:
            return None
        return stored.id if hmac.compare_digest(hash_key(presented), stored.sha256) else None


def parse_keys(data: bytes, *, source: str) -> dict[str, StoredKey]:
    """The entries of a keys file; KeysFileError naming ``source`` and the entry when it is not one."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeysFileError(f"{source}: not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeysFileError(f'{source}: expected an object {{"keys": [...]}}')
    keys: dict[str, StoredKey] = {}
    for number, entry in enumerate(entries, start=1):
        where = f"{source}: keys[{number - 1}]"
        if not isinstance(entry, dict):
            raise KeysFileError(f"{where}: expected an object with id, name, sha256")
        key_id, digest = entry.get("id"), entry.get("sha256")
        if not isinstance(key_id, str) or not re.fullmatch(f"[0-9a-f]{{{_ID_HEX_DIGITS}}}", key_id):
            raise KeysFileError(f"{where}: 'id' must be {_ID_HEX_DIGITS} lowercase hex digits")
        if not isinstance(digest, str) or not _HASH_FORM.match(digest):
            raise KeysFileError(f"{where} ({key_id}): 'sha256' must be 64 lowercase hex digits (the key's hash)")
        if key_id in keys:
            raise KeysFileError(f"{where}: id {key_id} appears twice")
        keys[key_id] = StoredKey(key_id, str(entry.get("name") or ""), digest, str(entry.get("created_at") or ""))
    return keys


def read_keys(path: Path) -> dict[str, StoredKey]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read the API keys file: {exc.strerror or exc}") from None
    return parse_keys(data, source=str(path))


def write_keys(path: Path, keys: Mapping[str, StoredKey]) -> None:
    """Replace the file atomically (a reader sees the old content or the new one, whole), readable by its owner
    only (it holds hashes, not keys, but nobody else needs it)."""
    document = {
        "keys": [
            {"id": key.id, "name": key.name, "sha256": key.sha256, "created_at": key.created_at}
            for key in keys.values()
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class KeysWatcher:
    """The key ring in force (:attr:`ring`), re-read from the file every ``interval_seconds`` in a daemon thread.

    Constructing it reads the file (KeysFileError when it cannot: the API does not start). A change is seen by the
    SHA-256 of the file's bytes (modification times survive `cp -p`); an unreadable or invalid new content is
    refused with one error line and ``on_reload("refused")``, and the previous ring stays.
    """

    def __init__(
        self, path: Path, *, interval_seconds: float, on_reload: Callable[[str, int], None] = lambda _r, _n: None
    ) -> None:
        self.path = path
        self.interval_seconds = interval_seconds
        self.on_reload = on_reload
        data = self._read()
        self.ring = KeyRing(parse_keys(data, source=str(path)))
        self._seen = hashlib.sha256(data).hexdigest()
        self._refused: str | None = None  # the problem last reported, so a lasting one is reported once
        self._rounds = Periodic("api-keys-watch", interval_seconds, self.check)
        on_reload("loaded", len(self.ring))
        log.info("API keys loaded", extra={"keys": len(self.ring)})

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise KeysFileError(f"{self.path}: cannot read the API keys file: {exc.strerror or exc}") from None

    def start(self) -> KeysWatcher:
        self._rounds.start()
        return self

    def stop(self) -> None:
        self._rounds.stop()

    def check(self) -> str | None:
        """Read the file once; swap in a changed valid ring. Returns "reloaded", "refused" or None (no change)."""
        try:
            data = self._read()
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._seen:
                return None
            self._seen = digest
            ring = KeyRing(parse_keys(data, source=str(self.path)))
        except KeysFileError as exc:
            if str(exc) == self._refused:
                return None  # reported already (a file that stays missing is logged and counted once)
            self._refused = str(exc)
            log.error("API keys file refused: the keys read before stay in force", extra={"problem": str(exc)})  # noqa: TRY400
            self.on_reload("refused", len(self.ring))
            return "refused"
        self._refused = None
        self.ring = ring  # one reference assignment: a request sees the old ring or the new one
        self.on_reload("reloaded", len(ring))
        log.info("API keys reloaded", extra={"keys": len(ring)})
        return "reloaded"
