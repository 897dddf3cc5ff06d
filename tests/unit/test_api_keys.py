"""API keys: stored as hashes only, checked in constant time against the entry of their id, re-read live."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aml_screener.api.cli import add_api_commands
from aml_screener.api.keys import KeyRing, KeysFileError, KeysWatcher, new_key, parse_keys, read_keys, write_keys
from aml_screener.cli import main


def test_a_key_is_accepted_only_whole_and_only_while_stored() -> None:
    key, stored = new_key()
    ring = KeyRing({stored.id: stored})
    assert ring.authenticate(key) == stored.id
    assert ring.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert ring.authenticate(key + "x") is None
    assert ring.authenticate("") is None and ring.authenticate(None) is None
    other, _ = new_key()
    assert ring.authenticate(other) is None  # unknown id
    assert KeyRing({}).authenticate(key) is None


def test_the_file_holds_hashes_and_bad_entries_are_named(tmp_path: Path) -> None:
    key, stored = new_key()
    path = tmp_path / "keys.json"
    write_keys(path, {stored.id: stored})
    assert key not in path.read_text() and stored.sha256 in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_keys(path) == {stored.id: stored}
    for content, problem in [
        (b"[]", "expected an object"),
        (b"{", "not JSON"),
        (json.dumps({"keys": [{"id": "XYZ", "sha256": stored.sha256}]}).encode(), r"keys\[0\]: 'id'"),
        (json.dumps({"keys": [{"id": stored.id, "sha256": "abc"}]}).encode(), "'sha256'"),
        (json.dumps({"keys": [{"id": stored.id, "sha256": stored.sha256}] * 2}).encode(), "appears twice"),
    ]:
        with pytest.raises(KeysFileError, match=problem):
            parse_keys(content, source="keys.json")


def test_the_watcher_swaps_a_valid_change_and_keeps_the_keys_on_a_broken_one(tmp_path: Path) -> None:
    first, stored = new_key()
    path = tmp_path / "keys.json"
    write_keys(path, {stored.id: stored})
    reports: list[tuple[str, int]] = []
    watcher = KeysWatcher(path, interval_seconds=60, on_reload=lambda result, count: reports.append((result, count)))
    assert watcher.ring.authenticate(first) == stored.id
    assert watcher.check() is None  # unchanged
    second, other = new_key()
    write_keys(path, {other.id: other})
    assert watcher.check() == "reloaded"
    assert watcher.ring.authenticate(first) is None and watcher.ring.authenticate(second) == other.id
    path.write_text("{broken")
    assert watcher.check() == "refused"
    assert watcher.ring.authenticate(second) == other.id
    path.unlink()
    assert watcher.check() == "refused"  # a new problem: reported
    assert watcher.check() is None  # the same problem again: reported once
    write_keys(path, {other.id: other})
    assert watcher.check() == "reloaded"
    assert reports == [("loaded", 1), ("reloaded", 1), ("refused", 1), ("refused", 1), ("reloaded", 1)]
    path.unlink()
    with pytest.raises(KeysFileError, match="cannot read"):
        KeysWatcher(path, interval_seconds=60)


def test_keys_commands_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    assert main(["api", "keys", "create", "--name", "withdrawal-form", "--file", str(path)]) == 0
    key = capsys.readouterr().out.strip()
    key_id = key.split("_")[1]
    assert KeyRing(read_keys(path)).authenticate(key) == key_id
    assert main(["api", "keys", "list", "--file", str(path)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{"id": key_id, "name": "withdrawal-form", "created_at": listed[0]["created_at"]}]
    assert key not in json.dumps(listed)
    assert main(["api", "keys", "revoke", key_id, "--file", str(path)]) == 0
    assert read_keys(path) == {}
    assert main(["api", "keys", "revoke", key_id, "--file", str(path)]) == 3
    assert callable(add_api_commands)


def test_the_api_refuses_to_start_without_a_keys_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AML_API_KEYS_FILE", raising=False)
    assert main(["api"]) == 2
